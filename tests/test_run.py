"""``lfeval run`` end to end on a small config: files, tables, resume, rerun, kill, report rendering, errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lfeval.cli import main

PRETEXTS = ["reconstruction", "denoising", "classification"]
EXPLAINERS = ["Saliency", "IntegratedGradients", "Random"]
EXAMPLES = ["cosine", "dknn", "tracin"]
FEATURE_METRICS = ["RepresentationShift", "PretextCorrelation", "PixelFlipping", "FaithfulnessCorrelation",
                   "Sparseness", "Complexity", "MaxSensitivity", "RelativeRepresentationStability"]
EXAMPLE_METRICS = ["PretextCorrelation", "SimilarityRate", "SimilarityContrast"]
CSVS = ["scores.csv", "ranks.csv", "meta.csv", "pretext.csv", "encoders.csv"]
# epochs/latent size/checkpoints as the session's encoder fixtures, so the run reuses their cached weights
CONFIG = """
[run]
pretexts = {pretexts}
epochs = 100
latent_dim = 8
checkpoints = 3
cache_dir = "{cache}"
explainers = {explainers}
example_methods = {examples}
metrics = {metrics}
meta_metrics = ["RepresentationShift", "PixelFlipping", "SimilarityRate"]
n_explain = 40
n_train_examples = 300
pretext_seeds = [0]
meta_iterations = 1
meta_perturbations = 2
meta_samples = 40

[run.explainer_params.IntegratedGradients]
n_steps = 16
"""


def _run(config: Path, out: Path, name: str, *extra) -> tuple:
    start = time.perf_counter()
    code = main(["run", "--config", str(config), "--out", str(out), "--name", name, "--quiet", *extra])
    return code, time.perf_counter() - start


@pytest.fixture(scope="module")
def small(tmp_path_factory, encoders, encoder_cache):
    """One uninterrupted run of the small config, and the time it took."""
    root = tmp_path_factory.mktemp("lfeval-run")
    config = root / "small.toml"
    config.write_text(CONFIG.format(pretexts=PRETEXTS, explainers=EXPLAINERS, examples=EXAMPLES,
                                    metrics=sorted(set(FEATURE_METRICS + EXAMPLE_METRICS)),
                                    cache=encoder_cache.as_posix()))
    code, seconds = _run(config, root / "runs", "small")
    assert code == 0
    return {"root": root, "config": config, "dir": root / "runs" / "small", "seconds": seconds}


def test_run_writes_every_table_with_finite_values(small):
    d = small["dir"]
    for name in CSVS + ["report.html"]:
        assert (d / name).is_file(), name
    scores = pd.read_csv(d / "scores.csv")
    assert np.isfinite(scores["score"]).all()
    assert set(scores["pretext"]) == set(PRETEXTS)
    for kind, methods, metrics in (("features", EXPLAINERS, FEATURE_METRICS), ("examples", EXAMPLES, EXAMPLE_METRICS)):
        part = scores[scores["kind"] == kind]
        assert set(part["method"]) == set(methods) and set(part["metric"]) == set(metrics)
        assert len(part) == len(PRETEXTS) * len(methods) * len(metrics)  # every (encoder, method, metric) once
    ranks = pd.read_csv(d / "ranks.csv")
    assert np.isfinite(ranks[["normalised", "rank"]]).all().all()
    assert set(ranks["pretext"]) == set(PRETEXTS) | {"all"}
    meta = pd.read_csv(d / "meta.csv")
    assert set(meta["metric"]) == {"RepresentationShift", "PixelFlipping", "SimilarityRate"}
    assert set(meta["test"]) == {"Model", "Input"}
    assert np.isfinite(meta[["IAC_NR", "IAC_AR", "IEC_NR", "IEC_AR", "MC"]]).all().all()
    assert meta["MC"].between(0, 1).all()
    pretext = pd.read_csv(d / "pretext.csv")
    assert set(pretext["kind"]) == {"features", "examples"} and len(pretext) == 2 * 3  # 3 pairs of 3 tasks
    assert pretext["mean"].between(-1, 1).all()


def test_run_numbers_hold_known_orderings(small):
    """Properties of real encoders: faithful attributions beat Random on the label-free faithfulness
    metrics, and the most similar training digits share the label far more often than chance."""
    scores = pd.read_csv(small["dir"] / "scores.csv").set_index(["pretext", "method", "metric"])["score"]
    for p in PRETEXTS:
        for m in ("Saliency", "IntegratedGradients"):
            assert scores[(p, m, "RepresentationShift")] > scores[(p, "Random", "RepresentationShift")]
            assert scores[(p, m, "FaithfulnessCorrelation")] > scores[(p, "Random", "FaithfulnessCorrelation")]
            assert scores[(p, m, "PixelFlipping")] < scores[(p, "Random", "PixelFlipping")]  # lower = faster drop
        assert scores[(p, "cosine", "SimilarityRate")] > 0.6  # chance is about 0.1 on ten digit classes
        assert scores[(p, "dknn", "SimilarityContrast")] > 0.5
    ranks = pd.read_csv(small["dir"] / "ranks.csv")
    overall = ranks[(ranks["pretext"] == "all") & (ranks["metric"] == "RepresentationShift")].set_index("method")
    assert overall.loc["Random", "rank"] == len(EXPLAINERS)  # rank 1 = best: Random is last on faithfulness


def test_report_references_every_plot(small):
    d = small["dir"]
    html = (d / "report.html").read_text()
    plots = sorted(p.name for p in (d / "plots").glob("*.png"))
    expected = {"curves_RepresentationShift.png", "curves_SimilarityRate.png", "radar_features.png",
                "radar_examples.png", "meta_model.png", "meta_input.png", "pretext_heatmaps.png",
                *(f"attributions_{p}.png" for p in PRETEXTS)}
    assert expected <= set(plots)
    for name in plots:
        assert f'data-file="plots/{name}"' in html
    assert html.count("data:image/png;base64,") == len(plots)
    for metric in FEATURE_METRICS + EXAMPLE_METRICS:  # a short explanation of each metric
        assert f"<b>{metric}</b>:" in html


def test_report_summary_names_the_best_explainers_and_trusted_metrics(small):
    """The summary at the top agrees with ranks.csv (lowest mean rank) and meta.csv (highest mean MC)."""
    d = small["dir"]
    html = (d / "report.html").read_text()
    summary = html[html.index("<div class='summary'"):html.index("</div>", html.index("<div class='summary'"))]
    assert html.index("<div class='summary'") < html.index("<h2>Encoders</h2>")
    items = re.findall(r"<li>(.*?)</li>", summary)
    assert len(items) == 4  # features, examples, metrics to trust, the rank convention
    ranks = pd.read_csv(d / "ranks.csv")
    for item, kind in zip(items, ("features", "examples")):
        mean = ranks[(ranks["kind"] == kind) & (ranks["metric"] == "mean_rank")].set_index(["pretext", "method"])
        for pretext in PRETEXTS + ["all"]:
            best = mean.loc[pretext, "rank"].idxmin()
            needle = f"<b>{best}</b> is best overall" if pretext == "all" else f"{pretext} <b>{best}</b>"
            assert needle in item, (needle, item)
    mc = pd.read_csv(d / "meta.csv").groupby("metric")["MC"].mean()
    best_feature = mc[["RepresentationShift", "PixelFlipping"]].idxmax()
    assert f"<b>{best_feature}</b> for feature attributions (MC {mc[best_feature]:.2f}" in items[2]
    assert f"<b>SimilarityRate</b> for example importance (MC {mc['SimilarityRate']:.2f}" in items[2]
    assert items[3].startswith("Ranks: 1 = best")


def test_ranks_leave_out_the_metrics_the_random_control_wins(small):
    """Random (a control: its class sets control = True) scores PretextCorrelation 1 on every encoder, so
    ranks.csv flags that metric and each mean rank is the mean of the other metrics' ranks; the report says so."""
    d = small["dir"]
    ranks = pd.read_csv(d / "ranks.csv")
    assert set(ranks.loc[ranks["control"], "method"]) == {"Random"}
    features = ranks[(ranks["kind"] == "features") & (ranks["metric"] != "mean_rank")]
    for pretext in PRETEXTS + ["all"]:
        part = features[features["pretext"] == pretext]
        won = set(part.loc[part["control_wins"], "metric"])
        assert "PretextCorrelation" in won and "RepresentationShift" not in won, (pretext, won)
        ranked = part[~part["control_wins"]].pivot(index="method", columns="metric", values="rank")
        mean = ranks[(ranks["kind"] == "features") & (ranks["pretext"] == pretext)
                     & (ranks["metric"] == "mean_rank")].set_index("method")["rank"]
        np.testing.assert_allclose(mean.loc[ranked.index], ranked.mean(axis=1))
    assert not ranks.loc[ranks["kind"] == "examples", "control_wins"].any()  # no control among example methods
    html = (d / "report.html").read_text()
    assert "The <b>Random</b> control ties or beats every other method on <b>PretextCorrelation</b>" in html
    assert "metrics a control ties or beats (left out of the mean rank)" in html


def test_lfeval_report_redraws_the_same_report_without_recomputing(small, tmp_path, capsys):
    """`lfeval report RUN_DIR` on a copy of the run: the same report.html, byte for byte, no stage or
    encoder touched (the copy's weight cache is empty: any training would fill it)."""
    copy = tmp_path / "copy"
    shutil.copytree(small["dir"], copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "cache_dir": str(tmp_path / "empty-cache")}))
    expected = (copy / "report.html").read_text()
    (copy / "report.html").unlink()
    shutil.rmtree(copy / "plots")
    stages = {p.name: p.stat().st_mtime_ns for p in (copy / "stages").iterdir()}
    assert main(["report", str(copy)]) == 0
    assert capsys.readouterr().out.strip() == str((copy / "report.html").resolve())
    assert (copy / "report.html").read_text() == expected
    assert sorted(p.name for p in (copy / "plots").glob("*.png")) == sorted(
        p.name for p in (small["dir"] / "plots").glob("*.png"))
    assert {p.name: p.stat().st_mtime_ns for p in (copy / "stages").iterdir()} == stages
    assert not (tmp_path / "empty-cache").exists()


def test_lfeval_report_refuses_a_folder_that_is_not_a_finished_run(small, tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    assert main(["report", str(tmp_path / "plain")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lfeval: error: RUN_DIR") and "is not an lfeval run folder" in err, err
    assert not (tmp_path / "plain" / "stages").exists()  # nothing written into a folder that is not a run
    unfinished = tmp_path / "unfinished"
    shutil.copytree(small["dir"], unfinished)
    manifest = unfinished / "stages" / "manifest.json"
    complete = manifest.read_text()
    content = json.loads(complete)
    del content["stages"]["scores-denoising"]
    manifest.write_text(json.dumps(content))
    assert main(["report", str(unfinished)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lfeval: error:") and "unfinished run: stage(s) 'scores-denoising' not stored" in err, err
    manifest.write_text(complete)
    (unfinished / "stages" / "scores-reconstruction.safetensors").unlink()  # listed, but its file is gone
    assert main(["report", str(unfinished)]) == 2
    err = capsys.readouterr().err
    assert "Stage 'scores-reconstruction'" in err and "is missing" in err, err


def test_second_invocation_loads_every_stage_and_gives_identical_tables(small, capsys):
    before = {n: (small["dir"] / n).read_bytes() for n in CSVS}
    stored = {p.name: p.stat().st_mtime_ns for p in (small["dir"] / "stages").iterdir()}
    code, _ = _run(small["config"], small["root"] / "runs", "small")
    assert code == 0
    assert str(small["dir"] / "report.html") in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (small["dir"] / "stages").iterdir()} == stored  # none rewritten
    for n in CSVS:
        assert (small["dir"] / n).read_bytes() == before[n], n


def _stored(stages: Path) -> dict:
    """Stages the manifest lists as finished, with their files' modification times."""
    manifest = stages / "manifest.json"
    names = json.loads(manifest.read_text())["stages"] if manifest.exists() else {}
    return {s: [p.stat().st_mtime_ns for p in sorted(stages.glob(f"{s}.*"))] for s in names}


def _resume_and_compare(small, cmd, out, name, kept: dict):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    loaded = re.search(r"(\d+) stage\(s\) computed, (\d+) loaded", result.stdout)
    assert loaded and int(loaded.group(2)) == len(kept), result.stdout
    stored = _stored(out / name / "stages")
    assert {s: stored[s] for s in kept} == kept  # the stored stages were loaded, not recomputed
    for n in CSVS:
        assert (out / name / n).read_bytes() == (small["dir"] / n).read_bytes(), n
    return result


def test_killed_run_resumes_with_identical_tables(small):
    """Kill a run (SIGKILL) once some stages are stored; the rerun keeps them and ends with the same numbers."""
    out, name = small["root"] / "runs", "killed"
    stages = out / name / "stages"
    cmd = [sys.executable, "-m", "lfeval.cli", "run", "--config", str(small["config"]), "--out", str(out),
           "--name", name, "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while "scores-reconstruction" not in _stored(stages) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = _stored(stages)
    assert "scores-reconstruction" in kept and not (out / name / "report.html").exists()
    _resume_and_compare(small, cmd[:-1], out, name, kept)


def test_kill_during_a_stage_write_never_loads_a_torn_file(small):
    """SIGKILL lands halfway through writing a stage's files (fault injection): that stage is not loaded, the
    others are kept, and the resumed run ends byte-identical to an uninterrupted one."""
    out, name = small["root"] / "runs", "torn"
    stages = out / name / "stages"
    cmd = [sys.executable, "-m", "lfeval.cli", "run", "--config", str(small["config"]), "--out", str(out),
           "--name", name]
    env = {**os.environ, "LFEVAL_FAULT_INJECT": "kill-during-write:scores-denoising"}
    proc = subprocess.run(cmd + ["--quiet"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])
    torn = list(stages.glob("scores-denoising.*.tmp"))
    assert torn and torn[0].stat().st_size > 0  # half a file is on disk
    kept = _stored(stages)
    assert "scores-reconstruction" in kept and "scores-denoising" not in kept
    result = _resume_and_compare(small, cmd, out, name, kept)
    assert "scores-denoising' done" in result.stdout and not list(stages.glob("*.tmp"))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is missing (make test installs it)")
def test_report_renders_in_headless_chromium_within_the_page_width(small, tmp_path):
    """Every image decodes, and at a 1280 px viewport nothing (wide tables included) widens the page."""
    page = tmp_path / "report.html"
    probe = ("<script>window.addEventListener('load', () => { const d = document.documentElement; "
             "document.title = 'WIDTHS:' + Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1)"
             ".join(',') + ';PAGE:' + [d.scrollWidth, d.clientWidth, window.innerWidth].join(',') + ';BOXES:' + "
             "Array.from(document.querySelectorAll('.table-box')).map(b => b.scrollWidth > b.clientWidth ? 1 : 0)"
             ".join(','); });</script>")
    page.write_text((small["dir"] / "report.html").read_text().replace("</body>", probe + "</body>"))
    result = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900",
                             "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                            capture_output=True, text=True, timeout=180)
    match = re.search(r"<title>WIDTHS:([-\d,]*);PAGE:(\d+),(\d+),(\d+);BOXES:([\d,]*)</title>", result.stdout)
    assert match, result.stderr[-2000:]
    widths = [int(w) for w in match.group(1).split(",")]
    assert len(widths) == len(list((small["dir"] / "plots").glob("*.png")))
    assert min(widths) > 0
    scroll_width, client_width, viewport = (int(match.group(i)) for i in (2, 3, 4))
    assert viewport == 1280
    assert scroll_width == client_width, (scroll_width, client_width)  # no horizontal scroll of the page
    assert "1" in match.group(5).split(",")  # the wide score tables do overflow, inside their own box


@pytest.mark.parametrize("toml, message", [
    ('explainers = ["IntegratedGradient"]', "Did you mean 'IntegratedGradients'"),
    ('metrics = ["Sparsenes"]', "Did you mean 'Sparseness'"),
    ('data = "mnistt"', "Did you mean 'mnist'"),
    ("latnet_dim = 4", "Unknown config key 'latnet_dim'. Did you mean 'latent_dim'"),
    ('data = "mnist"\ndata_root = "{root}"', "MNIST"),
])
def test_bad_config_gets_a_clear_error(tmp_path, capsys, toml, message):
    config = tmp_path / "bad.toml"
    config.write_text(toml.format(root=(tmp_path / "empty").as_posix()))
    code = main(["run", "--config", str(config), "--out", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("lfeval: error:") and message in err, err


PLUGIN_CONFIG = """
[run]
plugins = ["{plugin}"]
pretexts = ["reconstruction"]
epochs = 100
latent_dim = 8
checkpoints = 3
cache_dir = "{cache}"
explainers = ["GradientDelta", "Random"]
example_methods = []
metrics = ["Sparseness", "RepresentationShift"]
meta_metrics = []
n_explain = 16
"""


def test_a_plugin_explainer_runs_on_ray_workers(tmp_path, capsys, encoders, encoder_cache):
    """A Ray worker is a fresh process that unpickles the run's data and config without importing the config's
    plugins: it loads them before its cell runs, so a plugin's explainer (tests/extensions/gradient_delta.py) is
    known there instead of failing with "Unknown explanation method 'GradientDelta'"."""
    pytest.importorskip("ray")
    from lfeval.explain.base import EXPLAINERS

    plugin = Path(__file__).parent / "extensions" / "gradient_delta.py"
    config = tmp_path / "plugin.toml"
    config.write_text(PLUGIN_CONFIG.format(plugin=plugin.as_posix(), cache=encoder_cache.as_posix()))
    loaded = "lfeval_plugin_gradient_delta" in sys.modules
    try:
        code = main(["run", "--config", str(config), "--out", str(tmp_path / "runs"), "--name", "plugin", "--quiet",
                     "--backend", "ray"])
        assert code == 0, capsys.readouterr().err
    finally:
        if not loaded:  # leave the registry as the other tests expect it
            EXPLAINERS.pop("GradientDelta", None)
            sys.modules.pop("lfeval_plugin_gradient_delta", None)
    scores = pd.read_csv(tmp_path / "runs" / "plugin" / "scores.csv")
    assert set(scores["method"]) == {"GradientDelta", "Random"} and np.isfinite(scores["score"]).all()
