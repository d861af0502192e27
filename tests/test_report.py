"""Ranking, plots, HTML report and run configuration (no training needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lfeval.config import RunConfig
from lfeval.errors import InvalidArgument, UnknownName
from lfeval.metrics import Curve
from lfeval.report import Section, normalise_scores, plots, rank_explainers, write_report
from lfeval.report.html import table_html


def test_rank_explainers_known_answer():
    scores = pd.DataFrame({"faith": [0.1, 0.5, 0.3], "lipschitz": [3.0, 1.0, 2.0]}, index=["a", "b", "c"])
    norm = normalise_scores(scores, {"faith": "higher", "lipschitz": "lower"})
    np.testing.assert_allclose(norm["faith"], [0.0, 1.0, 0.5])
    np.testing.assert_allclose(norm["lipschitz"], [0.0, 1.0, 0.5])
    ranks = rank_explainers(scores, {"faith": "higher", "lipschitz": "lower"})
    assert list(ranks.index) == ["b", "c", "a"]  # best first; rank 1 = best
    assert ranks.loc["b", "faith"] == ranks.loc["b", "lipschitz"] == 1.0
    assert ranks.loc["b", "mean_rank"] == 1.0 and ranks.loc["a", "mean_rank"] == 3.0


def test_rank_ties_and_constant_columns():
    scores = pd.DataFrame({"m": [1.0, 1.0, 0.0], "const": [2.0, 2.0, 2.0]}, index=["a", "b", "c"])
    ranks = rank_explainers(scores, {"m": "higher", "const": "lower"})
    assert ranks.loc["a", "m"] == ranks.loc["b", "m"] == 1.5  # tied best share ranks 1 and 2
    assert ranks.loc["c", "m"] == 3.0
    assert set(ranks["const"]) == {2.0}


def test_rank_needs_directions():
    with pytest.raises(InvalidArgument, match="direction"):
        rank_explainers(pd.DataFrame({"m": [1.0]}, index=["a"]), {})
    with pytest.raises(InvalidArgument, match="'higher' or 'lower'"):
        rank_explainers(pd.DataFrame({"m": [1.0]}, index=["a"]), {"m": "up"})


def test_radar_chart_draws_rank_one_outermost_and_labels_it():
    ranks = pd.DataFrame({"a": [1.0, 3.0, 2.0], "b": [1.0, 2.5, 2.5], "c": [2.0, 1.0, 3.0],
                          "mean_rank": [1.3, 2.2, 2.5]}, index=["IG", "Saliency", "Random"])
    fig = plots.radar_chart(ranks)
    ax = fig.axes[0]
    radii = {line.get_label(): line.get_ydata() for line in ax.lines}
    np.testing.assert_allclose(radii["IG"], [3, 3, 2, 3])  # rank r of 3 at radius 4 - r, closed polygon
    np.testing.assert_allclose(radii["Saliency"], [1, 1.5, 3, 1])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["rank 3", "rank 2", "rank 1"]  # inner to outer
    assert "rank 1 = best, outermost" in ax.get_title()


def test_table_html_right_aligns_numbers_with_three_significant_digits():
    df = pd.DataFrame({"score": [0.5, 0.012345, 1234.56], "rank": [1.0, 2.0, 3.0], "kind": ["a", "b", "c"],
                       "n": [3, 40, 500]}, index=pd.Index(["IG", "Saliency", "Random"], name="method"))
    out = table_html(df)
    assert "<th>method</th><th>score</th><th>rank</th><th>kind</th><th>n</th>" in out
    assert ("<tr><th>IG</th><td class='num'>0.500</td><td class='num'>1</td><td>a</td><td class='num'>3</td></tr>"
            in out)
    assert "<td class='num'>0.0123</td>" in out and "<td class='num'>1235</td>" in out
    meta = pd.DataFrame({"MC": [0.61234, 0.7, 0.5]},
                        index=pd.MultiIndex.from_tuples([("RS", "Model"), ("RS", "Input"), ("PF", "Model")],
                                                        names=["metric", "test"]))
    assert ("<tr><th>RS</th><th>Model</th><td class='num'>0.612</td></tr><tr><th></th><th>Input</th>"
            "<td class='num'>0.700</td></tr><tr><th>PF</th><th>Model</th>") in table_html(meta)


def test_report_embeds_and_references_every_plot(tmp_path):
    rng = np.random.default_rng(0)
    figs = {
        "curves.png": plots.metric_curves({"IG": Curve([10, 50, 100], {"shift": rng.random((5, 3))}),
                                           "Random": Curve([10, 50, 100], {"shift": rng.random((5, 3))})}),
        "radar.png": plots.radar_chart(pd.DataFrame({"a": [1.0, 2.0], "b": [2.0, 1.0]}, index=["IG", "Random"])),
        "meta.png": plots.meta_area(pd.DataFrame({"IAC_NR": [0.5], "IAC_AR": [0.4], "IEC_NR": [0.9], "IEC_AR": [0.7],
                                                  "MC": [0.625]}, index=["RepresentationShift"])),
        "heat.png": plots.pretext_heatmaps({"features": pd.DataFrame(np.eye(2), index=["r", "d"], columns=["r", "d"])}),
        "maps.png": plots.attribution_maps(rng.random((3, 1, 8, 8)), {"IG": rng.random((3, 1, 8, 8))}, n=2),
        "bars.png": plots.attribution_maps(rng.random((3, 1, 30)), {"IG": rng.random((3, 1, 30))}, n=2,
                                           modality="tabular"),
        "series.png": plots.attribution_maps(rng.random((3, 40, 1)), {"IG": rng.random((3, 40, 1))}, n=2,
                                             modality="time_series"),
        "rates.png": plots.metric_curves({"cosine": Curve([1, 5, 10], {"top": rng.random((4, 3)),
                                                                       "bottom": rng.random((4, 3))})}, ylim=(0, 1)),
    }
    (tmp_path / "plots").mkdir()
    paths = []
    for name, fig in figs.items():
        fig.savefig(tmp_path / "plots" / name)
        paths.append((tmp_path / "plots" / name, name))
    table = pd.DataFrame({"score": [0.5]}, index=["IG"])
    out = write_report(tmp_path / "report.html", "Run", [Section("All", "text", {"scores": table}, paths)])
    html = out.read_text()
    for name in figs:
        assert f'data-file="plots/{name}"' in html
    assert html.count("data:image/png;base64,") == len(figs)
    assert "<h4>scores</h4><div class='table-box'><table>" in html  # every table scrolls inside its own box


def test_config_names_closest_valid_key(tmp_path):
    with pytest.raises(UnknownName, match="'latent_dim'"):
        RunConfig.from_dict({"latnet_dim": 4})
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[run]\nname = "x"\nexample_methods = ["cosin"]\n')
    with pytest.raises(UnknownName, match="'cosine'"):
        RunConfig.from_toml(cfg_file)
    cfg_file.write_text('name = "x"\nlatent_dim = 4\n')
    cfg = RunConfig.from_toml(cfg_file, seed=3)
    assert (cfg.name, cfg.latent_dim, cfg.seed) == ("x", 4, 3)
    with pytest.raises(InvalidArgument, match="latent_dim"):
        RunConfig(latent_dim=0)
