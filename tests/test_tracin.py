"""Factorised TracIn (lfeval.explain.ghost) equals the dense per-example-gradient TracIn: digits conv
encoders and tabular MLP encoders of all five pretext losses, every layer form, a model with normalisation
layers, in-place ReLU, a Conv1d, a shared layer and an LSTM (the dense fallback); memory by width; projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import lfeval
from lfeval.explain.examples import TracIn
from lfeval.models import PRETEXTS


def _close(got, expected):
    """1e-5 relative to the scores' scale (float32 sums of P products differ in the last bits)."""
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * scale)


def _both(enc, x_tr, x_te, **kw):
    kw = {"display_progressbar": False, **kw}
    dense = TracIn(enc, algorithm="dense", **{k: v for k, v in kw.items() if k not in ("ghost", "max_memory")})
    return TracIn(enc, **kw).attribute(x_tr, x_te), dense.attribute(x_tr, x_te)


def _labels(pretext, y_tr, y_te):
    return {"y_train": y_tr, "y_test": y_te} if pretext == "classification" else {}


@pytest.mark.parametrize("pretext", PRETEXTS)
def test_factorised_equals_dense_on_the_digits_conv_encoders(encoders, digits, pretext):
    x_tr, x_te = digits.x_train[:48], digits.x_test[:20]
    got, dense = _both(encoders[pretext], x_tr, x_te, **_labels(pretext, digits.y_train[:48], digits.y_test[:20]))
    _close(got, dense)


def test_every_form_and_memory_blocks_give_the_same_scores(ae, digits):
    """All layers as ghosts (the convolutions too), all as per-example gradients, and a memory bound small
    enough to split the test set into blocks: all equal the dense scores."""
    x_tr, x_te = digits.x_train[:30], digits.x_test[:12]
    dense = TracIn(ae, algorithm="dense", display_progressbar=False).attribute(x_tr, x_te)
    kept = {}
    for kw in ({}, {"ghost": True}, {"ghost": False}, {"max_memory": 40_000}):
        m = TracIn(ae, display_progressbar=False, **kw)
        _close(m.attribute(x_tr, x_te), dense)
        kept[str(kw)] = m.feature_bytes
    assert kept["{'max_memory': 40000}"] <= kept["{}"] / 12  # one test example's features at a time


def test_no_per_example_gradient_of_all_parameters(ae, digits):
    """The features kept per test example are a fraction of P (the dense method keeps P per example)."""
    m = TracIn(ae, display_progressbar=False)
    m.attribute(digits.x_train[:20], digits.x_test[:10])
    n_params = sum(p.numel() for p in ae.parameters())
    assert m.feature_bytes / 10 / 4 < n_params / 10 and m.dense_keys == []


@pytest.fixture(scope="module")
def mlp_encoders():
    ds = lfeval.data.load("breast_cancer", seed=0)
    encs = {p: lfeval.models.train_encoder(ds, pretext=p, latent_dim=4, epochs=2, seed=0, checkpoints=2,
                                           display_progressbar=False) for p in PRETEXTS}
    return ds, encs


@pytest.mark.parametrize("pretext", PRETEXTS)
def test_factorised_equals_dense_on_mlp_encoders(mlp_encoders, pretext):
    ds, encs = mlp_encoders
    got, dense = _both(encs[pretext], ds.x_train[:40], ds.x_test[:15],
                       **_labels(pretext, ds.y_train[:40], ds.y_test[:15]))
    _close(got, dense)


class Mixed(nn.Module):
    """(N, 2, 16) -> (N, 3): Conv1d, BatchNorm1d with running statistics, in-place ReLU, GroupNorm, an LSTM,
    LayerNorm and one Linear used twice."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3, padding=1, stride=2)
        self.bn = nn.BatchNorm1d(4)
        self.act = nn.ReLU(inplace=True)
        self.gn = nn.GroupNorm(2, 4)
        self.lstm = nn.LSTM(4, 5, batch_first=True)
        self.ln = nn.LayerNorm(5)
        self.shared = nn.Linear(5, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, x):
        h = self.gn(self.act(self.bn(self.conv(x))))  # (N, 4, 8)
        h, _ = self.lstm(h.transpose(1, 2))  # (N, 8, 5)
        h = self.shared(torch.tanh(self.shared(self.ln(h))))  # a layer applied at 8 positions, twice
        return self.out(h.mean(1))


class Head(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder, self.head = encoder, nn.Linear(3, 32)

    def forward(self, x):
        return self.head(self.encoder(x)).view(-1, 2, 16)


def test_normalisation_conv1d_shared_layers_and_an_lstm_fallback():
    torch.manual_seed(0)
    net = Mixed()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    model = Head(net).eval()
    checkpoints = []
    for lr in (0.1, 0.02):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        checkpoints.append({"state_dict": {k: v.clone() for k, v in model.state_dict().items()}, "lr": lr})

    def loss(forward, x, y, extra):
        return (forward(x) - x).pow(2).flatten(1).mean(1)

    enc = lfeval.Encoder(net.eval(), modality="time_series", input_shape=(2, 16), pretext_model=model, loss=loss,
                         checkpoints=checkpoints).eval()
    x = torch.rand(14, 2, 16, generator=torch.Generator().manual_seed(1))
    for ghost in ("auto", True, False):
        m = TracIn(enc, ghost=ghost, display_progressbar=False)
        _close(m.attribute(x[:9], x[9:]), TracIn(enc, algorithm="dense", display_progressbar=False).attribute(x[:9],
                                                                                                          x[9:]))
    assert sorted(m.dense_keys) == sorted(f"encoder.lstm.{n}" for n, _ in net.lstm.named_parameters())


def test_projection_is_seeded_and_close_to_exact(ae, digits):
    x_tr, x_te = digits.x_train[:200], digits.x_test[:50]
    exact = TracIn(ae, display_progressbar=False).attribute(x_tr, x_te)
    a = TracIn(ae, projection=64, seed=3, display_progressbar=False).attribute(x_tr, x_te)
    b = TracIn(ae, projection=64, seed=3, display_progressbar=False).attribute(x_tr, x_te)
    c = TracIn(ae, projection=64, seed=4, display_progressbar=False).attribute(x_tr, x_te)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c) and not torch.allclose(a, exact, rtol=1e-5)  # a layer is projected
    assert np.corrcoef(a.flatten().numpy(), exact.flatten().numpy())[0, 1] > 0.95
    big = TracIn(ae, projection=10 ** 6, display_progressbar=False).attribute(x_tr, x_te)  # no layer that large
    _close(big, exact)


def test_a_loss_that_couples_examples_is_refused(ae, digits):
    """The factorisation needs per-example losses; a batch-normalised loss is caught, the dense path works."""
    model = ae.pretext_model

    def coupled(forward, x, y, extra):
        err = (forward(x) - x).pow(2).flatten(1).mean(1)
        return err / err.sum()

    with pytest.raises(lfeval.errors.InvalidArgument, match="algorithm='dense'"):
        TracIn(ae, model=model, loss=coupled, display_progressbar=False).attribute(digits.x_train[:6],
                                                                                   digits.x_test[:3])
    TracIn(ae, model=model, loss=coupled, algorithm="dense", display_progressbar=False).attribute(
        digits.x_train[:6], digits.x_test[:3])


def test_contrastive_views_follow_the_dense_batches_under_a_memory_bound(encoders, digits):
    """The contrastive loss's fixed view is drawn per batch: the factorised path draws it over the same
    batches as the dense one, also when memory splits the work into one-example chunks."""
    enc, x_tr, x_te = encoders["contrastive"], digits.x_train[:40], digits.x_test[:9]
    kw = {"chunk_size": 4, "display_progressbar": False}  # the dense path takes 16 training examples at a time
    dense = TracIn(enc, algorithm="dense", **kw).attribute(x_tr, x_te)
    m = TracIn(enc, max_memory=40_000, **kw)
    _close(m.attribute(x_tr, x_te), dense)
    assert m.test_blocks > 1
