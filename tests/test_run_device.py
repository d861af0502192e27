"""``lfeval run`` on any device and dtype: a float64 user encoder (the CPU proxy of device faults) scores as its
float32 twin, `--device` / `--precision` errors, the per-stage device record, the Ray device rule, and (with a
GPU) CUDA equal to the CPU."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lfeval.cli import main
from lfeval.config import RunConfig
from lfeval.errors import InvalidArgument
from lfeval.execution import cell_device, gpus_for, portable
from lfeval.execution.cells import _GIVEN_GPU
from lfeval.pipeline import StageStore, run

FACTORIES = '''
import torch
from torch import nn


def cnn(dtype="float32", latent=8):
    """A user's small CNN for 1x8x8 digits, in the dtype asked for."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, latent))
    return net.to(getattr(torch, dtype))
'''
METRICS = ["RepresentationShift", "PixelFlipping", "FaithfulnessCorrelation", "Sparseness", "Complexity",
           "PretextCorrelation", "SimilarityRate", "SimilarityContrast"]


def _config(root, name: str, dtype: str = "float32", device: str = "cpu", **changes) -> RunConfig:
    """The small job: digits, one pretext encoder (the session's cached weights) and one user encoder."""
    values = dict(name=name, out_dir=str(root / "runs"), cache_dir=str(root / "cache"), pretexts=["reconstruction"],
                  latent_dim=8, epochs=100, checkpoints=3, explainers=["Saliency", "IntegratedGradients"],
                  explainer_params={"IntegratedGradients": {"n_steps": 8}}, example_methods=["cosine"],
                  metrics=METRICS, meta_metrics=[], n_explain=16, n_train_examples=120, pretext_seeds=[0],
                  quiet=True, device=device,
                  encoders={"mine": {"factory": f"{(root / 'device_factories.py').as_posix()}:cnn",
                                     "kwargs": {"dtype": dtype}}})
    return RunConfig(**{**values, **changes})


def _scores(run_dir) -> pd.Series:
    return pd.read_csv(run_dir / "scores.csv").set_index(["pretext", "kind", "method", "metric"])["score"]


@pytest.fixture(scope="module")
def root(tmp_path_factory, encoder_cache):
    root = tmp_path_factory.mktemp("device")
    (root / "device_factories.py").write_text(FACTORIES)
    (root / "cache").symlink_to(encoder_cache.resolve(), target_is_directory=True)  # the session's weights
    return root


@pytest.fixture(scope="module")
def cpu32(root):
    """The small job with the float32 user encoder on the CPU."""
    config = _config(root, "cpu32")
    run(config, log=lambda *a: None)
    return config.run_dir


def test_float64_encoder_scores_as_float32(root, cpu32):
    """Every stage of the job works with a float64 user encoder, and its scores are the float32 twin's within
    float32 tolerance; the stored stages stay float32 CPU arrays, and record where they were computed."""
    config = _config(root, "cpu64", dtype="float64")
    run(config, log=lambda *a: None)
    a, b = _scores(cpu32), _scores(config.run_dir)
    assert a.index.equals(b.index) and np.isfinite(b).all()
    assert {"mine", "reconstruction"} == set(b.index.get_level_values("pretext"))
    np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=1e-4, atol=1e-6)
    store = StageStore(config.run_dir)
    for stage in ("attributions-mine", "examples-mine"):
        arrays = store.load(stage)
        assert all(v.dtype == np.float32 for v in arrays.values()), stage
    manifest = json.loads((config.run_dir / "stages" / "manifest.json").read_text())
    assert {e["computed_on"]["device"] for e in manifest["stages"].values()} == {"cpu"}
    assert json.loads((config.run_dir / "config.json").read_text())["precision"] == "highest"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_exits_2_naming_the_device(tmp_path, capsys):
    assert main(["run", "--device", "cuda", "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "`device` 'cuda' requested" in err and "no usable CUDA GPU" in err, err


def test_device_precision_and_threads_flags_reach_the_config_resolved(tmp_path, monkeypatch):
    """The flags go through the config's one resolution: the run gets the checked, normalised values."""
    seen = {}

    def fake_run(config, fresh=False, log=print):
        seen.update(device=config.device, precision=config.precision, threads=config.threads)
        return tmp_path / "report.html"

    monkeypatch.setattr("lfeval.pipeline.job.run", fake_run)
    assert main(["run", "--out", str(tmp_path), "--quiet", "--device", "cpu", "--precision", "tf32",
                 "--threads", "2"]) == 0
    assert seen == {"device": "cpu", "precision": "tf32", "threads": 2}
    assert main(["run", "--out", str(tmp_path), "--quiet", "--threads", "0"]) == 2


def test_cuda_graph_flag_needs_a_cuda_device_and_is_not_a_changed_setting(tmp_path, monkeypatch, capsys):
    """--cuda-graph reaches the config, which refuses it off CUDA before anything runs; a stored run's settings
    treat it as the device (the weight cache's key leaves both out), so a resume may turn it on or off."""
    from lfeval.pipeline.store import _COSMETIC

    monkeypatch.setattr("lfeval.pipeline.job.run", lambda *a, **k: pytest.fail("the run started"))
    assert main(["run", "--out", str(tmp_path), "--quiet", "--cuda-graph"]) == 2
    assert "`cuda_graph` = true records the training steps as CUDA graphs" in capsys.readouterr().err
    assert {"device", "cuda_graph"} <= set(_COSMETIC)


def test_resume_on_another_device_is_logged_or_refused(tmp_path):
    """A stage records its device and precision; reopening on another kind of device keeps it with a note under
    precision 'highest', and refuses under 'tf32'/'bf16'."""
    for precision, refused in (("highest", False), ("tf32", True)):
        folder = tmp_path / precision
        StageStore(folder, computed_on={"device": "cuda:1", "precision": precision}, log=lambda *a: None).save(
            "s", {"a": np.ones(2, np.float32)})
        notes = []
        StageStore(folder, computed_on={"device": "cuda:0", "precision": precision}, log=notes.append)
        assert notes == []  # the same kind of device
        cpu = {"device": "cpu", "precision": precision}
        if refused:
            with pytest.raises(InvalidArgument, match="1 on cuda:1.*precision 'tf32'.*--fresh"):
                StageStore(folder, computed_on=cpu, log=notes.append)
        else:
            store = StageStore(folder, computed_on=cpu, log=notes.append)
            assert len(notes) == 1 and "1 on cuda:1" in notes[0] and "kept" in notes[0]
            assert store.try_load("s")[0]


def test_one_gpu_rule_for_cells():
    """A cell on CUDA asks for one GPU and computes on the one Ray gave it; objects travel on the CPU."""
    assert gpus_for("cuda:1") == gpus_for("cuda") == 1 and gpus_for("cpu") == gpus_for(torch.device("mps")) == 0
    assert cell_device("cuda:1") == torch.device("cuda:1") and cell_device("cpu") == torch.device("cpu")
    token = _GIVEN_GPU.set(torch.device("cuda", 0))
    try:
        assert cell_device("cuda:1") == torch.device("cuda:0") and cell_device("cpu") == torch.device("cpu")
    finally:
        _GIVEN_GPU.reset(token)
    net = torch.nn.Linear(2, 2).double()
    assert portable(net) is net and portable(3) == 3


def test_worker_copy_computes_as_the_driver(root):
    """What a Ray worker gets (RunData.portable, pickled) and does (_in_worker: its device, the run's precision)
    gives the driver's attributions of a float64 encoder."""
    import pickle

    from lfeval.pipeline import job, stages

    rd = stages.RunData(_config(root, "worker", dtype="float64", precision="tf32"))
    sent = pickle.loads(pickle.dumps(rd.portable()))
    assert sent.device == torch.device("cpu") and sent.encoder("mine").dtype == torch.float64
    got = job._in_worker(stages.feature_attributions, sent, "mine")
    expected = stages.feature_attributions(rd, "mine")
    assert got.keys() == expected.keys()
    for method, a in expected.items():
        assert got[method].dtype == np.float32
        np.testing.assert_array_equal(got[method], a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine (the CPU path is tested above)")
def test_cuda_run_equals_cpu_run(root, cpu32):
    """The same job with device='cuda' (the pretext encoder's cached weights, the user encoder's seeded ones):
    every stage on the GPU, scores equal to the CPU's within 1e-4 relative."""
    config = _config(root, "cuda32", device="cuda")
    run(config, log=lambda *a: None)
    np.testing.assert_allclose(_scores(config.run_dir).to_numpy(), _scores(cpu32).to_numpy(), rtol=1e-4, atol=1e-6)
    manifest = json.loads((config.run_dir / "stages" / "manifest.json").read_text())
    assert {e["computed_on"]["device"] for e in manifest["stages"].values()} == {"cuda"}
    arrays = StageStore(config.run_dir).load("attributions-mine")
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in arrays.values())
