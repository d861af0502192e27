"""Encoders and pretext training on real digits: quality, determinism, cache, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lfeval
from lfeval.data.base import Dataset
from lfeval.errors import InvalidArgument, InvalidInput, UnknownName
from lfeval.models import build_decoder, build_encoder, probe_accuracy, reconstruction_mse, train_encoder


@pytest.mark.parametrize("pretext", ["reconstruction", "denoising", "inpainting", "contrastive"])
def test_unsupervised_probe_accuracy(encoders, digits, pretext):
    assert probe_accuracy(encoders[pretext], digits) >= 0.85


def test_contrastive_latents_all_alive_and_linearly_readable(encoders, digits):
    """The projection head reads the whole latent (SimCLR's Linear-ReLU-Linear): with a ReLU in front of it, a
    coordinate negative on every input got no gradient and died (1-3 of 8 on digits), and a logistic probe on the
    raw latents fell to 0.835 (seed 0)."""
    from sklearn.linear_model import LogisticRegression

    enc = encoders["contrastive"]
    assert not isinstance(enc.pretext_model.head[0], torch.nn.ReLU)
    with torch.no_grad():
        z_train, z_test = enc(digits.x_train), enc(digits.x_test)
    assert ((z_train > 0).any(0) & (z_train.std(0) > 0.05)).all()  # no unit negative everywhere, none flat
    probe = LogisticRegression(max_iter=5000).fit(z_train.numpy(), digits.y_train.numpy())
    assert probe.score(z_test.numpy(), digits.y_test.numpy()) >= 0.85


def test_classification_probe_accuracy(encoders, digits):
    assert probe_accuracy(encoders["classification"], digits) >= 0.93


def test_autoencoder_beats_mean_image(encoders, digits):
    mse, mean_mse = reconstruction_mse(encoders["reconstruction"], digits)
    assert mse <= 0.4 * mean_mse


def test_trained_encoder_contract(encoders, digits):
    for pretext, enc in encoders.items():
        assert enc.pretext == pretext
        assert not any(m.training for m in enc.modules())
        assert not any(m.training for m in enc.pretext_model.modules())
        z = enc(digits.x_test[:5])
        assert z.shape == (5, 8)
        assert len(enc.checkpoints) == 3
        epochs = [c["epoch"] for c in enc.checkpoints]
        assert epochs == sorted(epochs) and epochs[-1] == enc.history["best_epoch"]
        # the contract: the data set's modality and baseline, and the network is a submodule of its full
        # model, not the reverse
        assert isinstance(enc, lfeval.Encoder) and enc.modality == digits.modality and enc.input_shape == (1, 8, 8)
        assert enc.baseline is digits.baseline and enc.loss == enc.pretext_model.task.example_loss
        assert enc.pretext_model.encoder is enc.module
        assert "pretext_model" not in dict(enc.named_modules())
        assert set(dict(enc.named_parameters())) == {f"module.{n}" for n, _ in enc.module.named_parameters()}
        per_example = enc.pretext_model.example_loss(digits.x_test[:4], digits.y_test[:4])
        assert per_example.shape == (4,) and torch.isfinite(per_example).all()


def _weights(enc):
    return torch.cat([p.detach().flatten() for p in enc.pretext_model.parameters()])


@pytest.mark.parametrize("pretext", ["denoising", "contrastive"])
def test_same_seed_same_weights(digits, pretext):
    kw = dict(pretext=pretext, latent_dim=4, epochs=3, display_progressbar=False)
    a, b = train_encoder(digits, seed=3, **kw), train_encoder(digits, seed=3, **kw)
    c = train_encoder(digits, seed=4, **kw)
    assert torch.equal(_weights(a), _weights(b))
    assert not torch.equal(_weights(a), _weights(c))


def test_cache_reuses_weights(digits, tmp_path):
    kw = dict(pretext="inpainting", latent_dim=4, epochs=2, seed=1, checkpoints=2, cache_dir=tmp_path,
              display_progressbar=False)
    first = train_encoder(digits, **kw)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1
    second = train_encoder(digits, **kw)
    assert torch.equal(_weights(first), _weights(second))
    assert len(second.checkpoints) == 2 and second.history == first.history
    train_encoder(digits, **{**kw, "latent_dim": 5})  # another configuration, another file
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_two_writers_racing_to_one_cache_file_both_succeed(digits, tmp_path, monkeypatch):
    """Two runs sharing a weight cache may train the same encoder at once. Here the second one writes and renames
    its whole file while the first is between its write and its rename (the interleaving forced by a patched
    ``torch.save``). With one temporary name per file (``<name>.tmp``), the first writer's rename found its
    temporary file gone and the run failed; with one per write, both succeed and the cache holds a whole file."""
    kw = dict(pretext="reconstruction", latent_dim=4, epochs=1, seed=2, cache_dir=tmp_path,
              display_progressbar=False)
    real_save, racing = torch.save, []

    def save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        if not racing and str(f).endswith(".tmp"):
            racing.append(None)
            racing[0] = train_encoder(digits, **kw)  # the other writer, start to finish, in between

    monkeypatch.setattr(torch, "save", save)
    first = train_encoder(digits, **kw)
    assert len(racing) == 1 and torch.equal(_weights(first), _weights(racing[0]))  # same seed, same weights
    assert [p.suffix for p in tmp_path.iterdir()] == [".pt"]  # no temporary file left behind
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.equal(_weights(train_encoder(digits, **kw)), _weights(first))  # the stored file loads


@pytest.mark.parametrize(
    "modality, shape",
    [("image", (1, 8, 8)), ("image", (1, 28, 28)), ("image", (3, 32, 32)), ("tabular", (1, 30)),
     ("time_series", (1, 140)), ("time_series", (3, 50))],
)
def test_architectures_round_trip(modality, shape):
    torch.manual_seed(0)
    enc = build_encoder(modality, shape, 6)
    dec = build_decoder(enc)
    x = torch.rand(4, *shape)
    z = enc(x)
    assert z.shape == (4, 6)
    out = dec(z)
    out = out.detach()
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1


def test_tabular_encoder_trains(tmp_path):
    ds = lfeval.data.load("breast_cancer", seed=0)
    enc = train_encoder(ds, pretext="reconstruction", latent_dim=4, epochs=60, seed=0, display_progressbar=False)
    assert enc(ds.x_test[:3]).shape == (3, 4)
    assert probe_accuracy(enc, ds) >= 0.9


def test_time_series_encoder_trains():
    t = torch.linspace(0, 6.28, 40)
    gen = torch.Generator().manual_seed(0)
    freq = torch.randint(1, 3, (120,), generator=gen)
    x = (0.5 + 0.4 * torch.sin(freq[:, None] * t[None] + torch.rand(120, 1, generator=gen))).unsqueeze(1)
    ds = Dataset("waves", x[:90], freq[:90] - 1, x[90:], freq[90:] - 1, torch.zeros(1, 40), "time_series")
    enc = train_encoder(ds, pretext="reconstruction", latent_dim=3, epochs=5, seed=0, display_progressbar=False)
    assert enc(ds.x_test).shape == (30, 3)
    assert enc.history["val_loss"][-1] < enc.history["val_loss"][0]


def test_bad_arguments_raise_clear_errors(digits):
    with pytest.raises(UnknownName, match="pretext.*'denoising'"):
        train_encoder(digits, pretext="denoise")
    with pytest.raises(InvalidArgument, match="latent_dim"):
        train_encoder(digits, latent_dim=0)
    bad = Dataset("bad", digits.x_train.clone(), digits.y_train, digits.x_test, digits.y_test, digits.baseline, "image")
    bad.x_train[3, 0, 2, 2] = float("nan")
    with pytest.raises(InvalidInput, match="NaN"):
        train_encoder(bad, epochs=1)
    with pytest.raises(UnknownName, match="digits"):
        lfeval.data.load("digit")


def test_numpy_pin_keeps_quantus_normalisation_correct():
    """numpy >= 2.4 breaks quantus 0.6.0's normalise_by_negative (Quantus #371); the pin avoids it."""
    from quantus.functions.normalise_func import normalise_by_negative

    assert tuple(int(v) for v in np.__version__.split(".")[:2]) < (2, 4)
    a = np.array([[[[-2.0, 1.0], [4.0, -1.0]]]])
    expected = np.array([[[[-1.0, 0.25], [1.0, -0.5]]]])
    np.testing.assert_allclose(normalise_by_negative(a, normalise_axes=(1, 2, 3)), expected)
