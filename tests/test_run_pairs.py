"""Pair explanations in ``lfeval run`` (issue 30): config ``pairs`` ("nearest" or a file of index pairs), the
resumable ``pairs-<encoder>`` stages, ``pairs.csv``/``pair_ranks.csv`` and the report's "Pair explanations"
section; a run without ``pairs`` is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lfeval.config import PAIR_KEYS, RunConfig, load_pair_indices, pair_metric_names
from lfeval.errors import InvalidArgument
from lfeval.pipeline import run
from lfeval.pipeline.job import plan, stage_names
from lfeval.pipeline.store import StageStore

ROOT = Path(__file__).resolve().parent.parent
#: the pair meta-evaluations here use a handful of samples, which MetaQuantus' Wilcoxon tests warn about
pytestmark = pytest.mark.filterwarnings("ignore:.*the Wilcoxon test needs:UserWarning")
PRETEXTS = ["reconstruction", "classification"]


def _config(tmp: Path, cache: Path, name: str, **extra) -> RunConfig:
    """A small digits run: two cached encoders (the session fixtures' settings), few explainers and metrics."""
    values = dict(name=name, out_dir=str(tmp / "runs"), pretexts=PRETEXTS, epochs=100, latent_dim=8, checkpoints=3,
                  cache_dir=str(cache), explainers=["Saliency", "IntegratedGradients", "Random"],
                  example_methods=[], metrics=["RepresentationShift"], meta_metrics=[], n_explain=16,
                  n_train_examples=200, pretext_seeds=[0], quiet=True,
                  explainer_params={"IntegratedGradients": {"n_steps": 16}})
    return RunConfig.from_dict({**values, **extra})


def _run(config: RunConfig) -> tuple:
    lines = []
    report = run(config, log=lines.append)
    return report, lines


#: the meta-evaluation of a pair metric in the run of :func:`nearest`
PAIR_META = dict(meta_metrics=["SimilarityShift"], meta_iterations=2, meta_perturbations=2, meta_samples=16)


@pytest.fixture(scope="module")
def nearest(tmp_path_factory, encoders, encoder_cache):
    """One run with pairs = "nearest", SimilarityShift meta-evaluated."""
    tmp = tmp_path_factory.mktemp("pairs")
    config = _config(tmp, encoder_cache, "nearest", pairs="nearest", pair_maps=3, **PAIR_META)
    report, lines = _run(config)
    return config, report, lines


def test_nearest_pairs_run_end_to_end(nearest):
    config, report, _ = nearest
    folder = config.run_dir
    table = pd.read_csv(folder / "pairs.csv")
    assert list(table.columns) == ["pretext", "method", "metric", "mean", "std", "ci95", "n", "direction"]
    assert set(table["pretext"]) == set(PRETEXTS)
    assert set(table["method"]) == {"Saliency", "IntegratedGradients", "Random", "IntegratedJacobians"}
    assert set(pair_metric_names()) <= set(table["metric"])
    shift = table[table["metric"] == "SimilarityShift"].set_index(["pretext", "method"])["mean"]
    for p in PRETEXTS:  # IG beats the Random control on the similarity-shift deletion curve, for every encoder
        assert shift[(p, "IntegratedGradients")] > shift[(p, "Random")], p
    scored = table[table["method"] != "IntegratedJacobians"]
    assert (scored["n"] == 16).all() and np.isfinite(scored["mean"]).all()
    errors = table[table["metric"] == "relative_completeness_error"].set_index("pretext")
    assert (errors["n"] == 3).all() and (errors["mean"] < 0.05).all()  # 32 Gauss-Legendre points on digits
    ranks = pd.read_csv(folder / "pair_ranks.csv")
    overall = ranks[(ranks["pretext"] == "all") & (ranks["metric"] == "mean_rank")].set_index("method")["rank"]
    assert overall["IntegratedGradients"] < overall["Random"]
    assert ranks.loc[ranks["method"] == "Random", "control"].all()
    # the stage: partners are training examples, nearest in each encoder's latent space, never the input itself
    store = StageStore(folder)
    stage = store.load("pairs-reconstruction")
    assert stage["b_split"] == "train" and list(stage["a_index"]) == list(range(16))
    assert stage["attributions"]["IntegratedGradients"].shape == (16, 1, 8, 8)
    assert stage["interactions"]["matrix"].shape == (3, 64, 64)
    assert stage["interactions"]["row_sums"].shape == (3, 64)
    assert np.isfinite(stage["similarity"]).all() and (stage["similarity"] <= 1 + 1e-6).all()
    assert not np.array_equal(stage["b_index"], store.load("pairs-classification")["b_index"])  # per encoder


def test_a_pair_metric_is_meta_evaluated_in_the_run(nearest):
    """``meta_metrics`` takes a pair metric with ``pairs``: MetaQuantus' model and input tests over the pair
    explainers, on the meta encoder's first ``meta_samples`` pairs (each a with its partner b)."""
    config, report, _ = nearest
    meta = pd.read_csv(config.run_dir / "meta.csv")
    rows = meta[meta["metric"] == "SimilarityShift"]
    assert sorted(rows["test"]) == ["Input", "Model"] and set(rows["pretext"]) == {"reconstruction"}
    for column in ("IAC_NR", "IAC_AR", "IEC_NR", "IEC_AR", "MC"):
        assert np.isfinite(rows[column]).all(), column
    assert ((rows["MC"] >= 0) & (rows["MC"] <= 1)).all()
    store = StageStore(config.run_dir)
    stage, pairs = store.load("meta-SimilarityShift"), store.load("pairs-reconstruction")
    assert stage["b_split"] == "train" and stage["a_index"].tolist() == list(range(16))
    assert stage["b_index"].tolist() == pairs["b_index"][:16].tolist()  # the pair stage's partners
    page = Path(report).read_text()
    assert "<h2>Meta-evaluation (MetaQuantus)</h2>" in page and "plots/meta_input.png" in page
    assert "for pair explanations (MC" in page  # its own kind in "metrics to trust"


def test_report_has_the_pair_section(nearest):
    config, report, _ = nearest
    page = Path(report).read_text()
    assert "<h2>Pair explanations</h2>" in page and "pair explainers, overall rank" in page
    assert "interaction completeness error" in page and "the drawn pairs" in page
    assert "<h2>SimilarityShift: curves</h2>" in page and "<h2>SimilarityShiftInsertion: curves</h2>" in page
    for p in PRETEXTS:
        assert (config.run_dir / "plots" / f"pairs_{p}.png").is_file()
        assert f"plots/pairs_{p}.png" in page
    assert (config.run_dir / "plots" / "curves_SimilarityShift.png").is_file()


def test_resume_recomputes_only_the_deleted_pair_stage(nearest):
    config, report, _ = nearest
    stages = config.run_dir / "stages"
    before = {p.name: p.stat().st_mtime_ns for p in stages.iterdir() if not p.name.startswith("pairs-classification")}
    table = (config.run_dir / "pairs.csv").read_bytes()
    for f in stages.glob("pairs-classification.*"):
        f.unlink()
    _, lines = _run(config)
    assert any("'pairs-classification'" in line and "done" in line for line in lines), lines
    assert lines[-1].startswith("[lfeval] 1 stage(s) computed"), lines[-1]
    after = {p.name: p.stat().st_mtime_ns for p in stages.iterdir() if p.name in before}
    assert {k: v for k, v in after.items() if k != "manifest.json"} == \
        {k: v for k, v in before.items() if k != "manifest.json"}
    assert (config.run_dir / "pairs.csv").read_bytes() == table  # recomputed to the same numbers


def test_lfeval_report_draws_the_pair_section_again(nearest):
    from lfeval.pipeline import report

    config, path, _ = nearest
    (config.run_dir / "plots" / "pairs_reconstruction.png").unlink()
    again = report(config.run_dir)
    assert "<h2>Pair explanations</h2>" in Path(again).read_text()
    assert (config.run_dir / "plots" / "pairs_reconstruction.png").is_file()


def test_a_file_of_index_pairs_runs_and_is_validated(tmp_path, encoders, encoder_cache):
    good = tmp_path / "pairs.csv"
    good.write_text("a,b\n0,5\n3,7\n10,2\n4,4\n")
    config = _config(tmp_path, encoder_cache, "file", pretexts=["reconstruction"], pairs=str(good),
                     pair_explainers=["IntegratedGradients", "Random"], pair_metrics=["SimilarityShift"],
                     pair_maps=2, pair_similarity="dot")
    _run(config)
    table = pd.read_csv(config.run_dir / "pairs.csv")
    assert set(table["metric"]) == {"SimilarityShift", "completeness_error", "relative_completeness_error"}
    assert (table.loc[table["metric"] == "SimilarityShift", "n"] == 4).all()
    stage = StageStore(config.run_dir).load("pairs-reconstruction")
    assert stage["b_split"] == "test" and stage["a_index"].tolist() == [0, 3, 10, 4]
    assert stage["b_index"].tolist() == [5, 7, 2, 4]
    # the same run from a .npy file of the same pairs
    npy = tmp_path / "pairs.npy"
    np.save(npy, np.array([[0, 5], [3, 7], [10, 2], [4, 4]]))
    assert load_pair_indices(npy).tolist() == load_pair_indices(good).tolist()
    # a changed file under the same path: the pair stage is recomputed for the new pairs, the rest kept
    good.write_text("a,b\n1,2\n")
    _, lines = _run(config)
    assert any("other index pairs" in line for line in lines) and lines[-1].startswith("[lfeval] 1 stage(s)")
    assert StageStore(config.run_dir).load("pairs-reconstruction")["a_index"].tolist() == [1]

    def refused(content, match, suffix=".csv"):
        path = tmp_path / f"bad{suffix}"
        if isinstance(content, np.ndarray):
            np.save(path, content)
        else:
            path.write_text(content)
        with pytest.raises(InvalidArgument, match=match):
            _config(tmp_path, encoder_cache, "bad", pairs=str(path))

    refused("a,b\n", "holds no pairs")
    refused("", "empty")
    refused("x,y\n1,2\n", "two columns named a and b")
    refused("a,b\n1,2.5\n", "integer indices")
    refused("a,b\n1,-2\n", "negative")
    refused(np.zeros((3, 3), dtype=np.int64), r"shape \(P, 2\)", ".npy")
    refused(np.zeros((2, 2)) + 0.5, "integer", ".npy")
    with pytest.raises(InvalidArgument, match="does not exist"):
        _config(tmp_path, encoder_cache, "bad", pairs=str(tmp_path / "missing.csv"))
    with pytest.raises(InvalidArgument, match="'nearest' or the path"):
        _config(tmp_path, encoder_cache, "bad", pairs="nearby")
    out_of_range = tmp_path / "range.csv"
    out_of_range.write_text("a,b\n0,1\n2,540\n")  # digits' test split holds 540 inputs
    with pytest.raises(InvalidArgument, match="row 1 has index 540.*540 inputs"):
        run(_config(tmp_path, encoder_cache, "range", pairs=str(out_of_range)), log=lambda *_: None)
    assert not (tmp_path / "runs" / "range").exists()  # refused at the data load, before the folder is written


def test_a_changed_pairs_file_recomputes_the_pair_meta_evaluation(tmp_path, encoders, encoder_cache):
    """A pair metric's meta-evaluation runs on the first ``meta_samples`` pairs of a ``pairs`` file: a changed file
    recomputes it when those pairs changed, and keeps it when only later pairs did."""
    path = tmp_path / "pairs.csv"
    path.write_text("a,b\n0,5\n3,7\n10,2\n4,4\n")
    config = _config(tmp_path, encoder_cache, "file-meta", pretexts=["reconstruction"], explainers=["Saliency"],
                     pairs=str(path), pair_explainers=["IntegratedGradients", "Random"],
                     pair_metrics=["PairCompleteness"], pair_maps=0, meta_metrics=["PairCompleteness"],
                     meta_iterations=1, meta_perturbations=2, meta_samples=3)
    _run(config)
    stage = StageStore(config.run_dir).load("meta-PairCompleteness")
    assert stage["b_split"] == "test" and stage["a_index"].tolist() == [0, 3, 10]
    assert stage["b_index"].tolist() == [5, 7, 2]
    assert set(pd.read_csv(config.run_dir / "meta.csv")["metric"]) == {"PairCompleteness"}
    path.write_text("a,b\n1,2\n6,8\n9,3\n12,0\n")
    _, lines = _run(config)
    assert any("'meta-PairCompleteness'" in line and "other index pairs" in line for line in lines), lines
    assert lines[-1].startswith("[lfeval] 2 stage(s) computed"), lines[-1]  # the pair stage and the meta stage
    assert StageStore(config.run_dir).load("meta-PairCompleteness")["a_index"].tolist() == [1, 6, 9]
    path.write_text("a,b\n1,2\n6,8\n9,3\n5,5\n")  # the first meta_samples pairs as before
    _, lines = _run(config)
    assert lines[-1].startswith("[lfeval] 1 stage(s) computed"), lines[-1]  # the pair stage only


def test_pair_settings_are_checked_and_off_by_default(tmp_path, encoder_cache):
    default = RunConfig()
    assert default.pairs is None and not default.explainers_of_pairs and not default.metrics_of_pairs
    assert not any(name.startswith("pairs-") for name in stage_names(default))
    assert not set(PAIR_KEYS) & set(default.to_dict())  # config.json as before pairs existed
    baseline = Path("/tmp/baseline/default/config.json")
    if baseline.is_file():
        assert list(json.loads(baseline.read_text())) == list(default.to_dict())
    with pytest.raises(InvalidArgument, match="pair_metrics"):
        _config(tmp_path, encoder_cache, "x", metrics=["RepresentationShift", "SimilarityShift"])
    with pytest.raises(InvalidArgument, match="`meta_metrics`.*pair explanations are off"):
        _config(tmp_path, encoder_cache, "x", meta_metrics=["PairCompleteness"])
    with pytest.raises(InvalidArgument, match="at least two in `pair_explainers`"):
        _config(tmp_path, encoder_cache, "x", meta_metrics=["PairCompleteness"], pairs="nearest",
                pair_explainers=["IntegratedGradients"])
    one = tmp_path / "one.csv"
    one.write_text("a,b\n0,1\n")
    with pytest.raises(InvalidArgument, match="holds 1 pair.*at least 2 pairs"):
        _config(tmp_path, encoder_cache, "x", meta_metrics=["PairCompleteness"], pairs=str(one))
    _config(tmp_path, encoder_cache, "x", pairs=str(one))  # without a meta-evaluation one pair is enough
    meta = _config(tmp_path, encoder_cache, "x", meta_metrics=["PairCompleteness", "RepresentationShift"],
                   pairs="nearest")
    assert [s for s in stage_names(meta) if s.startswith("meta-")] == ["meta-PairCompleteness",
                                                                        "meta-RepresentationShift"]
    with pytest.raises(InvalidArgument, match="`pair_explainers`.*off"):
        _config(tmp_path, encoder_cache, "x", pair_explainers=["IntegratedGradients"])
    with pytest.raises(InvalidArgument, match="does not take a reference"):
        _config(tmp_path, encoder_cache, "x", pairs="nearest", pair_explainers=["COCOA"])
    with pytest.raises(InvalidArgument, match="does not score pair"):
        _config(tmp_path, encoder_cache, "x", pairs="nearest", pair_metrics=["RepresentationShift"])
    with pytest.raises(InvalidArgument, match="pair_similarity"):
        _config(tmp_path, encoder_cache, "x", pairs="nearest", pair_similarity="euclid")
    on = _config(tmp_path, encoder_cache, "x", pairs="nearest", explainers=["Saliency", "COCOA"],
                 explainer_params={})
    assert on.explainers_of_pairs == ["Saliency", "Random"]  # reference-taking explainers and the control
    assert [s for s in stage_names(on) if s.startswith("pairs-")] == ["pairs-reconstruction", "pairs-classification"]
    assert set(PAIR_KEYS) <= set(on.to_dict())
    assert RunConfig.from_dict({k: v for k, v in on.to_dict().items()}).to_dict() == on.to_dict()
    assert [name for name, *_ in plan(on)].index("pairs-reconstruction") > \
        [name for name, *_ in plan(on)].index("scores-classification")


def test_example_config_is_valid():
    config = RunConfig.from_toml(ROOT / "examples" / "pairs_digits.toml")
    assert config.pairs == "nearest" and "DistanceExplainer" in config.explainers_of_pairs
    assert "Random" in config.explainers_of_pairs


def test_text_pairs_show_highlighted_token_pairs(tmp_path):
    """MiniLM on Rotten Tomatoes snippets with pairs = "nearest": the report lists token-pair interactions
    (3 sentences of 16 tokens: about 6 s on 2 CPU cores)."""
    pytest.importorskip("transformers")
    config = RunConfig.from_dict(dict(
        name="text-pairs", out_dir=str(tmp_path / "runs"), data="text:rotten_tomatoes",
        data_options={"max_length": 16, "n_texts": 60}, pretexts=[], explainers=["IntegratedGradients", "Random"],
        example_methods=[], metrics=["Sparseness"], meta_metrics=[], n_explain=3, n_train_examples=20,
        explainer_params={"IntegratedGradients": {"n_steps": 8}}, encoders={"minilm": {
            "factory": "lfeval.text:minilm_encoder"}}, quiet=True, pairs="nearest", pair_maps=2, pair_steps=8,
        pair_metrics=["SimilarityShift"]))
    report, _ = _run(config)
    table = pd.read_csv(config.run_dir / "pairs.csv").set_index(["method", "metric"])["mean"]
    assert np.isfinite(table).all()
    page = Path(report).read_text()
    assert "Strongest token-pair interactions, minilm encoder" in page and " ↔ " in page
    assert (config.run_dir / "plots" / "pairs_minilm.png").is_file()
    assert table[("IntegratedGradients", "SimilarityShift")] > table[("Random", "SimilarityShift")]


def test_docstring_example_of_the_pair_section():
    """The report's pair section on synthetic data (no run): the token list names a ↔ b pairs."""
    from lfeval.modalities import get_modality
    from lfeval.report.pairs import PairMaps, token_pairs

    text = get_modality("text")
    x = np.array([[[101, 7, 8, 102], [1, 1, 1, 1]]], dtype=np.float32)
    top = pd.DataFrame({"pair": [0, 0], "a_unit": [1, 0], "b_unit": [2, 3], "value": [0.5, 0.0]})
    maps = PairMaps(a=x, b=x, a_index=np.array([0]), b_index=np.array([1]), b_split="train",
                    similarity=np.array([0.9]), attributions={}, top=top)
    assert token_pairs(maps, text) == [["7 ↔ 8: 0.5"]]


def test_the_pairs_flag_reaches_the_config(tmp_path, monkeypatch, capsys):
    """``lfeval run --pairs nearest`` sets the config's ``pairs`` (checked like the file's); a missing pair file
    exits 2 with the lfeval error."""
    from lfeval.cli import main

    seen = {}

    def fake_run(config, fresh=False, log=print):
        seen.update(pairs=config.pairs)
        return tmp_path / "report.html"

    monkeypatch.setattr("lfeval.pipeline.job.run", fake_run)
    assert main(["run", "--out", str(tmp_path), "--quiet", "--pairs", "nearest"]) == 0
    assert seen == {"pairs": "nearest"}
    assert main(["run", "--out", str(tmp_path), "--quiet", "--pairs", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err


def test_the_pair_stages_on_ray_equal_the_serial_run(nearest):
    """``backend = "ray"`` (a local Ray, started and stopped by the run) on the config of :func:`nearest`: the pair
    stages and the pair metric's meta-evaluation run as Ray tasks and write byte-identical ``pairs.csv``,
    ``pair_ranks.csv`` and ``meta.csv``, every stage file equal to the serial run's. Bytes, not a tolerance: each
    stage seeds its own draws, a worker computes on the CPU with the same kernels and one intra-op thread as the
    serial run here (digits-sized work), and stages are stored bit-exactly (:mod:`lfeval.pipeline.codec`)."""
    pytest.importorskip("ray")
    config, _, _ = nearest
    on_ray = RunConfig.from_dict({**config.to_dict(), "name": "nearest-ray", "backend": "ray"})
    _, lines = _run(on_ray)
    assert lines[-1].startswith("[lfeval] 9 stage(s) computed"), lines[-1]
    for table in ("pairs.csv", "pair_ranks.csv", "meta.csv", "scores.csv"):
        assert (on_ray.run_dir / table).read_bytes() == (config.run_dir / table).read_bytes(), table

    def files(run_dir: Path) -> dict:
        manifest = json.loads((run_dir / "stages" / "manifest.json").read_text())
        return {stage: entry["files"] for stage, entry in manifest["stages"].items()}

    stored = files(on_ray.run_dir)
    assert {"pairs-reconstruction", "pairs-classification", "meta-SimilarityShift"} <= set(stored)
    assert stored == files(config.run_dir)


def test_nearest_partner_is_never_an_identical_input(tmp_path, encoders, encoder_cache):
    """``pairs = "nearest"`` skips training examples equal to the explained input (its own copy would be its
    nearest neighbour, at cosine 1): explained inputs taken from the training examples get another partner, and
    one whose every candidate is identical is an lfeval error."""
    from lfeval.errors import InvalidInput
    from lfeval.pipeline import stages

    rd = stages.RunData(_config(tmp_path, encoder_cache, "copies", pairs="nearest"))
    rd.x = rd.x_train[:8].clone()  # every explained input is also training example i
    pairs = stages.pair_partners(rd, "reconstruction")
    assert (pairs["b_index"] != np.arange(8)).all()
    a, b = rd.x.reshape(8, -1), rd.x_train[pairs["b_index"]].reshape(8, -1)
    assert not (a == b).all(1).any()
    rd.x_train = rd.x[:1].expand(5, *rd.x.shape[1:]).clone()
    rd._resident = {}
    with pytest.raises(InvalidInput, match="no nearest neighbour"):
        stages.pair_partners(rd, "reconstruction")
