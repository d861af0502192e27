"""Your own encoders and data in ``lfeval run`` and the API: factory (+ safetensors weights), TorchScript and
torch.export encoders next to lfeval-trained ones, npz / image-folder / CSV data, losses and checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

import lfeval
from lfeval.cli import main
from lfeval.errors import InvalidArgument, InvalidInput, LabelsRequired
from lfeval.models.user_encoders import load_encoder

FACTORIES = Path(__file__).parent / "extensions" / "user_models.py"


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits):
    """An npz data set (digits), a factory encoder's weights and checkpoints, a TorchScript and an exported
    encoder, all written the way a user would."""
    root = tmp_path_factory.mktemp("user")
    np.savez(root / "digits.npz", x_train=digits.x_train[:600].numpy(), x_test=digits.x_test[:100].numpy(),
             y_train=digits.y_train[:600].numpy(), y_test=digits.y_test[:100].numpy())
    import importlib.util

    spec = importlib.util.spec_from_file_location("user_models_fixture", FACTORIES)
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    cnn = models.small_cnn()
    opt = torch.optim.Adam(cnn.parameters(), lr=1e-2)  # a few steps of a user's own training: checkpoints
    for step in range(2):
        loss = cnn(digits.x_train[:128]).pow(2).mean() - cnn(digits.x_train[:128]).std(0).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        save_file(cnn.state_dict(), str(root / f"ck{step}.safetensors"))
    save_file(cnn.state_dict(), str(root / "cnn.safetensors"))
    mlp = models.flat_mlp().eval()
    torch.jit.script(mlp).save(str(root / "mlp.pt"))
    example = torch.rand(2, 1, 8, 8)
    exported = torch.export.export(mlp, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(exported, str(root / "mlp.pt2"))
    return {"root": root, "cnn": cnn.eval(), "mlp": mlp, "models": models}


def test_user_encoders_load_with_their_contract(files, digits):
    ds = lfeval.data.load("npz:" + str(files["root"] / "digits.npz"))
    root = files["root"]
    cnn = load_encoder("cnn", {"factory": f"{FACTORIES}:small_cnn", "weights": str(root / "cnn.safetensors"),
                               "loss": "alignment", "checkpoints": [str(root / "ck0.safetensors"),
                                                                    str(root / "ck1.safetensors")]}, ds)
    x = ds.x_test[:5]
    torch.testing.assert_close(cnn(x), files["cnn"](x))  # the saved weights, not the factory's seed
    assert cnn.modality == "image" and cnn.input_shape == (1, 8, 8) and len(cnn.checkpoints) == 2
    scripted = load_encoder("ts", {"torchscript": str(root / "mlp.pt")}, ds)
    exported = load_encoder("ex", {"exported": str(root / "mlp.pt2")}, ds)
    torch.testing.assert_close(scripted(x), files["mlp"](x))
    torch.testing.assert_close(exported(x), files["mlp"](x))
    assert not exported.training and scripted.loss is None and exported.pretext_model is None
    norm = load_encoder("n", {"factory": f"{FACTORIES}:small_cnn", "normalize": {"mean": [0.5], "std": [0.25]}}, ds)
    torch.testing.assert_close(norm(x), files["models"].small_cnn().eval()((x - 0.5) / 0.25))
    # TracIn through the user's loss and checkpoints equals the user's own loop over examples
    tr = lfeval.examples.importance(cnn, ds.x_train[:6], x[:2], "tracin", display_progressbar=False)
    net = files["models"].small_cnn()
    view = torch.cat([cnn.loss.extra(ds.x_train[:6]), cnn.loss.extra(x[:2])])  # one fixed view per chunk
    expected = torch.zeros(2, 6)
    for ck in cnn.checkpoints:
        net.load_state_dict(ck["state_dict"])
        grads = []
        for xi, vi in zip(torch.cat([ds.x_train[:6], x[:2]]), view):
            net.zero_grad()
            cnn.loss(net, xi[None], None, vi[None]).sum().backward()
            grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
        g = torch.stack(grads)
        expected += g[6:] @ g[:6].T
    torch.testing.assert_close(tr, expected, rtol=1e-4, atol=1e-4)


def test_run_with_factory_torchscript_and_pretext_encoders_on_npz(files, tmp_path, encoder_cache, capsys):
    """One run mixes an lfeval-trained encoder with a factory (weights, loss, checkpoints) and a TorchScript
    encoder on npz data: every CSV and the report; IG beats Random on RepresentationShift for each encoder;
    TracIn runs where a loss and checkpoints exist and is skipped, with the reason, where they do not."""
    root = files["root"]
    config = tmp_path / "mine.toml"
    config.write_text(f"""
[run]
data = "npz:{(root / 'digits.npz').as_posix()}"
pretexts = ["reconstruction"]
epochs = 5
cache_dir = "{encoder_cache.as_posix()}"
explainers = ["IntegratedGradients", "Random"]
example_methods = ["cosine", "tracin"]
metrics = ["RepresentationShift", "FaithfulnessCorrelation", "PretextCorrelation", "SimilarityRate"]
meta_metrics = ["RepresentationShift"]
meta_pretext = "cnn"
n_explain = 24
n_train_examples = 200
meta_iterations = 1
meta_perturbations = 1
meta_samples = 16

[encoders.cnn]
factory = "{FACTORIES.as_posix()}:small_cnn"
kwargs = {{ latent = 8 }}
weights = "{(root / 'cnn.safetensors').as_posix()}"
loss = "{FACTORIES.as_posix()}:l2_loss"
checkpoints = ["{(root / 'ck0.safetensors').as_posix()}", "{(root / 'ck1.safetensors').as_posix()}"]

[encoders.scripted]
torchscript = "{(root / 'mlp.pt').as_posix()}"
""")
    assert main(["run", "--config", str(config), "--out", str(tmp_path), "--name", "mine", "--quiet"]) == 0, \
        capsys.readouterr().err
    d = tmp_path / "mine"
    for name in ("scores.csv", "ranks.csv", "meta.csv", "pretext.csv", "encoders.csv", "report.html"):
        assert (d / name).is_file(), name
    scores = pd.read_csv(d / "scores.csv")
    assert set(scores["pretext"]) == {"reconstruction", "cnn", "scripted"}
    assert np.isfinite(scores["score"]).all()
    rs = scores[scores["metric"] == "RepresentationShift"].set_index(["pretext", "method"])["score"]
    for name in ("reconstruction", "cnn", "scripted"):
        assert rs[(name, "IntegratedGradients")] > rs[(name, "Random")], name
    examples = scores[scores["kind"] == "examples"].groupby("pretext")["method"].agg(set)
    assert examples["cnn"] == {"cosine", "tracin"} and examples["scripted"] == {"cosine"}
    encoders = pd.read_csv(d / "encoders.csv", index_col=0)
    assert encoders.loc["cnn", "origin"] == "factory" and encoders.loc["scripted", "origin"] == "torchscript"
    assert "tracin" in encoders.loc["scripted", "skipped_examples"]
    pretext = pd.read_csv(d / "pretext.csv")
    assert {"cnn", "scripted"} <= set(pretext["task_a"]) | set(pretext["task_b"])  # the encoder-agreement table
    assert "Encoder agreement" in (d / "report.html").read_text()


def test_user_data_formats_and_their_errors(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            folder = tmp_path / "imgs" / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    ds = lfeval.data.load("folder:" + str(tmp_path / "imgs"), size=8)
    assert ds.x_train.shape == (6, 3, 8, 8) and ds.classes == ["cat", "dog"] and ds.y_test.tolist() == [0] * 3 + [1] * 3
    grey = lfeval.data.load("folder:" + str(tmp_path / "imgs"), size=[8, 6], grayscale=True)
    assert grey.x_test.shape == (6, 1, 8, 6)
    table = pd.DataFrame({"age": rng.random(40) * 80, "dose": rng.random(40), "group": ["a", "b"] * 20})
    table.to_csv(tmp_path / "t.csv", index=False)
    csv = lfeval.data.load("csv:" + str(tmp_path / "t.csv"), label="group")
    assert csv.feature_names == ["age", "dose"] and csv.x_train.shape[1:] == (1, 2) and csv.classes == ["a", "b"]
    assert float(csv.x_train.max()) == 1.0 and float(csv.x_train.min()) == 0.0
    np.savez(tmp_path / "wide.npz", x_train=rng.normal(size=(10, 3, 8)) * 5, x_test=rng.normal(size=(4, 3, 8)))
    with pytest.raises(InvalidInput, match="scale='minmax'"):
        lfeval.data.load("npz:" + str(tmp_path / "wide.npz"))
    scaled = lfeval.data.load("npz:" + str(tmp_path / "wide.npz"), scale="minmax")
    assert scaled.modality == "time_series" and not scaled.has_labels and float(scaled.x_train.max()) == 1.0
    np.savez(tmp_path / "half.npz", x_train=rng.random((10, 5)), x_test=rng.random((4, 5)), y_train=np.zeros(10))
    with pytest.raises(InvalidInput, match="one split only"):
        lfeval.data.load("npz:" + str(tmp_path / "half.npz"))
    np.savez(tmp_path / "nolabels.npz", x_train=rng.random((30, 1, 8, 8)), x_test=rng.random((10, 1, 8, 8)))
    from lfeval.config import RunConfig
    from lfeval.pipeline.stages import RunData

    with pytest.raises(LabelsRequired, match="SimilarityRate"):
        RunData(RunConfig(data="npz:" + str(tmp_path / "nolabels.npz"), pretexts=["reconstruction", "denoising"],
                          epochs=1))
    with pytest.raises(InvalidArgument, match="exactly one of factory"):
        RunConfig(encoders={"x": {"factory": f"{FACTORIES}:small_cnn", "torchscript": "a.pt"}})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine (the CPU path is tested above)")
def test_cuda_results_equal_cpu(ae, digits):
    """On a GPU the computation stays on the device and equals the CPU's within 1e-4 of the largest value
    (DESIGN's tolerance, TF32 off; an absolute 1e-4 fails once attributions are large)."""
    x = digits.x_test[:32].numpy()
    gpu = ae.copy().to("cuda")
    for method in ("IntegratedGradients", "GradientShap"):
        cpu = lfeval.explain(ae, x, method=method)
        np.testing.assert_allclose(lfeval.explain(gpu, x, method=method), cpu, rtol=0, atol=1e-4 * np.abs(cpu).max())
    a = lfeval.explain(ae, x, method="Saliency")
    rs = lfeval.metrics.RepresentationShift()
    np.testing.assert_allclose(rs(gpu, x, a_batch=a), rs(ae, x, a_batch=a), rtol=1e-4)
