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
from lfeval.report.ranking import control_wins, mean_rank_metrics


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


def _scores_random_wins_consistency():
    # Random wins "consistency" (a model-independent map is perfectly consistent); faith and lip favour IG
    return pd.DataFrame({"faith": [0.9, 0.5, 0.1], "consistency": [0.3, 0.6, 1.0], "lip": [2.0, 1.0, 3.0]},
                        index=["IG", "Saliency", "Random"])


DIRS = {"faith": "higher", "consistency": "higher", "lip": "lower"}


def test_control_won_metric_is_left_out_of_the_mean_rank():
    scores = _scores_random_wins_consistency()
    flags = control_wins(scores, DIRS, controls=["Random"])
    assert flags.to_dict() == {"faith": False, "consistency": True, "lip": False}
    ranks = rank_explainers(scores, DIRS, controls=["Random"])
    # per-metric ranks are kept, control-won metric included
    assert ranks.loc["Random", "consistency"] == 1.0 and ranks.loc["IG", "consistency"] == 3.0
    # known answer: faith ranks IG 1, Saliency 2, Random 3; lip ranks Saliency 1, IG 2, Random 3
    assert ranks["mean_rank"].to_dict() == {"IG": 1.5, "Saliency": 1.5, "Random": 3.0}
    np.testing.assert_array_equal(ranks["mean_rank"], ranks[["faith", "lip"]].mean(axis=1))
    # counted, consistency would lift Random to a 2.33 mean rank, level with the real methods
    plain = rank_explainers(scores, DIRS)
    assert plain.loc["Random", "mean_rank"] == pytest.approx(7 / 3)
    assert plain.loc["IG", "mean_rank"] == 2.0


def test_ranking_is_unchanged_where_no_control_wins():
    scores = _scores_random_wins_consistency().drop(columns="consistency")
    assert not control_wins(scores, DIRS, controls=["Random"]).any()
    pd.testing.assert_frame_equal(rank_explainers(scores, DIRS, controls=["Random"]), rank_explainers(scores, DIRS))
    # no control among the methods, or nothing but controls: nothing to compare, nothing flagged
    full = _scores_random_wins_consistency()
    assert not control_wins(full, DIRS, controls=[]).any()
    assert not control_wins(full, DIRS, controls=["Baseline"]).any()
    assert not control_wins(full.loc[["Random"]], DIRS, controls=["Random"]).any()


def test_a_control_tying_the_best_method_counts_as_winning():
    scores = pd.DataFrame({"m": [1.0, 0.5, 1.0], "const": [2.0, 2.0, 2.0], "f": [0.9, 0.5, 0.1]},
                          index=["IG", "Saliency", "Random"])
    flags = control_wins(scores, {"m": "higher", "const": "lower", "f": "higher"}, controls=["Random"])
    assert flags.to_dict() == {"m": True, "const": True, "f": False}  # tie with the best; a constant metric
    ranks = rank_explainers(scores, {"m": "higher", "const": "lower", "f": "higher"}, controls=["Random"])
    np.testing.assert_array_equal(ranks.loc[["IG", "Saliency", "Random"], "mean_rank"], [1.0, 2.0, 3.0])
    # a control just below the best real method (beyond float noise) does not win
    scores.loc["Random", "m"] = 1.0 - 1e-6
    assert not control_wins(scores[["m"]], {"m": "higher"}, controls=["Random"])["m"]


def test_every_metric_won_by_the_control_falls_back_to_all_metrics():
    scores = pd.DataFrame({"a": [0.1, 0.5, 0.9], "b": [0.2, 0.3, 0.8]}, index=["IG", "Saliency", "Random"])
    dirs = {"a": "higher", "b": "higher"}
    flags = control_wins(scores, dirs, controls=["Random"])
    assert flags.all() and mean_rank_metrics(flags) == ["a", "b"]
    pd.testing.assert_frame_equal(rank_explainers(scores, dirs, controls=["Random"]), rank_explainers(scores, dirs))


def test_random_is_marked_as_a_control_in_the_registry():
    from lfeval.explain.base import explainer_names, get_explainer

    assert "Saliency" in explainer_names()  # registers the built-in methods
    assert get_explainer("Random").control is True
    assert getattr(get_explainer("Saliency"), "control", False) is False


def test_radar_chart_labels_control_won_metrics():
    ranks = rank_explainers(_scores_random_wins_consistency(), DIRS, controls=["Random"])
    fig = plots.radar_chart(ranks, control_wins=["consistency"])
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["faith", "consistency\n(control wins)", "lip"]


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
