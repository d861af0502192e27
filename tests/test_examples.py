"""Example importance: known answers, agreement with explicit loops, the paper's digits result, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import lfeval
from lfeval.errors import InvalidArgument, InvalidInput, UnknownName
from lfeval.explain.examples import InfluenceFunctions, SimplEx, TracIn
from lfeval.metrics import SimilarityRate
from lfeval.models import MLPEncoder, PretextModel, make_task


class Flat(nn.Module):
    def forward(self, x):
        return x.flatten(1)


def test_cosine_and_dknn_on_hand_made_latents():
    enc = Flat().eval()
    x_train = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]])
    x_test = torch.tensor([[[2.0, 0.0]]])
    cos = lfeval.examples.importance(enc, x_train, x_test, "cosine")
    torch.testing.assert_close(cos, torch.tensor([[1.0, 0.0, float(1 / np.sqrt(2))]]))
    dknn = lfeval.examples.importance(enc, x_train, x_test, "dknn")
    torch.testing.assert_close(dknn, torch.tensor([[1.0, 1 / 5, 1 / 2]]))
    knn = lfeval.examples.importance(enc, x_train, x_test, "dknn", kind="knn", k=2)
    torch.testing.assert_close(knn, torch.tensor([[1.0, 0.0, 1.0]]))


def _tiny(pretext="reconstruction", seed=0):
    torch.manual_seed(seed)
    enc = MLPEncoder((1, 4), 2, hidden=(3,))
    model = PretextModel(enc, make_task(pretext, "tabular"), n_classes=3).eval()
    x = torch.rand(7, 1, 4, generator=torch.Generator().manual_seed(seed + 1))
    return lfeval.Encoder(enc, modality="tabular", input_shape=(1, 4), pretext_model=model).eval(), model, x


def _grad_loop(model, enc, x, y):
    """Explicit per-example gradients with autograd, one example at a time."""
    rows = []
    for i in range(len(x)):
        model.zero_grad()
        model.task.example_loss(model, x[i:i + 1], y[i:i + 1], None).sum().backward()
        rows.append(torch.cat([p.grad.flatten().clone() for p in enc.parameters()]))
    return torch.stack(rows)


@pytest.mark.parametrize("pretext", ["reconstruction", "classification"])
def test_tracin_equals_an_explicit_loop(pretext):
    enc, model, x = _tiny(pretext)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    x_tr, x_te, y_tr, y_te = x[:5], x[5:], y[:5], y[5:]
    checkpoints = []
    for k, lr in enumerate((0.1, 0.05)):
        torch.manual_seed(10 + k)
        for p in model.parameters():
            p.data += 0.1 * torch.randn_like(p)
        checkpoints.append({"state_dict": {n: v.clone() for n, v in model.state_dict().items()}, "lr": lr})
    expected = torch.zeros(2, 5)
    for ck in checkpoints:
        model.load_state_dict(ck["state_dict"])
        expected += ck["lr"] * _grad_loop(model, enc, x_te, y_te) @ _grad_loop(model, enc, x_tr, y_tr).T
    got = lfeval.examples.importance(enc, x_tr, x_te, "tracin", checkpoints=checkpoints, y_train=y_tr, y_test=y_te,
                                     display_progressbar=False)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _explicit_influence(model, enc, x_tr, x_te, damping, last_only=False):
    params = list(enc.parameters())[-2:] if last_only else list(enc.parameters())
    shapes = [p.shape for p in params]
    flat0 = torch.cat([p.detach().flatten() for p in params])
    y0 = torch.zeros(len(x_tr), dtype=torch.long)

    def mean_loss(flat):
        new, offset = {}, 0
        names = [n for n, p in model.named_parameters() if any(p is q for q in params)]
        for n, s in zip(names, shapes):
            new[n] = flat[offset:offset + s.numel()].view(s)
            offset += s.numel()
        out = torch.func.functional_call(model, new, (x_tr,))
        return model.task.example_loss(lambda inp: out, x_tr, y0, None).mean()

    hess = torch.autograd.functional.hessian(mean_loss, flat0) + damping * torch.eye(len(flat0))
    inv = torch.linalg.inv(hess)
    g_tr = _grad_loop(model, enc, x_tr, y0)[:, -len(flat0):]
    g_te = _grad_loop(model, enc, x_te, torch.zeros(len(x_te), dtype=torch.long))[:, -len(flat0):]
    return g_te @ inv @ g_tr.T  # = -I_up,loss(z_train, z_test): higher = more helpful


@pytest.mark.parametrize("budget", [None, 256], ids=["whole", "blocks-of-2"])
@pytest.mark.parametrize("params, last_only", [("all", False), ("last", True)])
def test_exact_influence_equals_an_explicit_hessian_inverse(params, last_only, budget, monkeypatch):
    """With a pass budget of 256 input values, the Hessian of the mean loss is summed over blocks of 2 of the 5
    training examples (4 features x 32 basis columns per example)."""
    if budget is not None:
        monkeypatch.setenv("LFEVAL_PASS_BUDGET", str(budget))
    enc, model, x = _tiny()
    influence = InfluenceFunctions(enc, params=params, damping=1e-3, display_progressbar=False)
    got = influence.attribute(x[:5], x[5:])
    # "last" is the encoder's last linear layer: the latent shortcut, no blocks
    assert influence.hessian_blocks == (None if last_only else 1 if budget is None else 3)
    expected = _explicit_influence(model, enc, x[:5], x[5:], 1e-3, last_only)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_a_loss_that_couples_its_batch_keeps_the_whole_training_set_in_one_hessian(monkeypatch):
    """Blocks would change a loss whose examples depend on each other (here each one's error is scaled by the
    batch's mean error): the Hessian is then taken over the whole set, as without a pass budget."""
    enc, model, x = _tiny()

    def coupled(forward, x, y, extra):
        err = ((forward(x) - x) ** 2).flatten(1).mean(1)
        return err * (1 + err.mean())

    def influence():
        method = InfluenceFunctions(enc, params="all", loss=coupled, display_progressbar=False)
        return method.attribute(x[:5], x[5:]), method.hessian_blocks

    whole, blocks = influence()
    monkeypatch.setenv("LFEVAL_PASS_BUDGET", "256")  # blocks of 2 for a per-example loss
    budgeted, budgeted_blocks = influence()
    assert blocks == budgeted_blocks == 1
    torch.testing.assert_close(budgeted, whole, atol=1e-6, rtol=1e-5)


def test_lissa_approaches_the_exact_solve():
    enc, model, x = _tiny()
    # LiSSA's fixed point is (H + scale * damping * I)^-1 v: compare with that damping
    exact = lfeval.examples.importance(enc, x[:5], x[5:], "influence", params="all", damping=0.05,
                                       display_progressbar=False)
    lissa = lfeval.examples.importance(enc, x[:5], x[5:], "influence", params="all", solver="lissa", damping=0.01,
                                       scale=5.0, depth=400, lissa_batch=5, display_progressbar=False)
    corr = np.corrcoef(exact.flatten().numpy(), lissa.flatten().numpy())[0, 1]
    assert corr > 0.99


def test_simplex_weights_are_convex_and_beat_uniform(ae, digits):
    x_tr, x_te = digits.x_train[:300], digits.x_test[:50]
    m = SimplEx(ae, n_steps=300, display_progressbar=False)
    w = m.attribute(x_tr, x_te)
    assert w.shape == (50, 300) and float(w.min()) >= 0
    torch.testing.assert_close(w.sum(1), torch.ones(50))
    with torch.no_grad():
        h_tr, h_te = ae(x_tr), ae(x_te)
    err = (w @ h_tr - h_te).pow(2).sum(1)
    uniform = (h_tr.mean(0, keepdim=True) - h_te).pow(2).sum(1)
    assert float(err.mean()) < 0.1 * float(uniform.mean())
    assert m.loss_history[-1] < m.loss_history[0]


def test_papers_example_consistency_on_digits(ae, digits):
    """§4.1: the top-10 examples share the test label, the bottom-10 do not (1000 train x whole test)."""
    x_tr, y_tr = digits.x_train[:1000], digits.y_train[:1000]
    for method in ("cosine", "dknn"):
        a = lfeval.examples.importance(ae, x_tr, digits.x_test, method).numpy()
        metric = SimilarityRate(y_tr, M=[10])
        top = np.mean(metric(model=ae, x_batch=digits.x_test.numpy(), y_batch=digits.y_test.numpy(), a_batch=a))
        assert top >= 0.8, method
        assert metric.rates["bottom"].mean() <= 0.1, method


@pytest.mark.parametrize("method", ["tracin", "influence", "simplex"])
def test_loss_based_and_simplex_beat_chance_on_digits(encoders, digits, method):
    enc = encoders["reconstruction"]
    x_tr, y_tr = digits.x_train[:500], digits.y_train[:500]
    a = lfeval.examples.importance(enc, x_tr, digits.x_test[:200], method, display_progressbar=False,
                                   **({"n_steps": 300} if method == "simplex" else {})).numpy()
    metric = SimilarityRate(y_tr, M=[10])
    top = np.mean(metric(model=enc, x_batch=digits.x_test[:200].numpy(), y_batch=digits.y_test[:200].numpy(),
                         a_batch=a))
    assert top > 0.2  # chance is 0.1 (ten balanced classes)


def test_bad_input(ae, digits):
    x_tr, x_te = digits.x_train[:20], digits.x_test[:5]
    with pytest.raises(InvalidInput, match="encoder takes"):
        lfeval.examples.importance(ae, x_tr, torch.rand(5, 1, 4, 4), "cosine")
    with pytest.raises(InvalidInput, match="empty"):
        lfeval.examples.importance(ae, x_tr[:0], x_te, "dknn")
    with pytest.raises(UnknownName, match="'dknn'"):
        lfeval.examples.importance(ae, x_tr, x_te, "dkn")
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    with pytest.raises(InvalidArgument, match="pretext_model"):
        lfeval.examples.importance(plain, x_tr, x_te, "tracin")
    enc, model, x = _tiny()
    with pytest.raises(InvalidArgument, match="checkpoints=K"):
        TracIn(enc)
    clf, _, xc = _tiny("classification")
    with pytest.raises(InvalidArgument, match="y_train"):
        InfluenceFunctions(clf, params="all", display_progressbar=False).attribute(xc[:4], xc[4:])


def test_influence_on_an_lstm_encoder_equals_an_explicit_hessian_inverse():
    """torch's CPU LSTM has no forward-mode AD: the Hessians are built reverse-over-reverse. ItalyPowerDemand's
    24-step series keep the explicit reference (a Python loop of double backward passes) to seconds."""
    ds = lfeval.data.load("ucr:ItalyPowerDemand")
    enc = lfeval.models.train_encoder(ds, latent_dim=3, epochs=1, min_steps=0, seed=0, display_progressbar=False)
    x = ds.x_train[:9]
    got = lfeval.examples.importance(enc, x[:5], x[5:], "influence", params="last", damping=1e-3,
                                     display_progressbar=False)
    expected = _explicit_influence(enc.pretext_model, enc, x[:5], x[5:], 1e-3, last_only=True)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pretext, n, limit_mb", [("reconstruction", 320, 150), ("contrastive", 1280, 50)])
def test_influence_memory_does_not_grow_with_the_training_set(pretext, n, limit_mb):
    """Peak memory (a fresh process's ru_maxrss) after influence on 64 and then n MNIST training digits.

    - reconstruction: the latent Hessians are built 16 digits at a time, and each chunk's double-backward graph
      (the decoder's activations, ~1.5 MB per digit) must be freed with it. Kept, it made all 60,000 MNIST
      training digits need ~90 GB: a 24 GiB machine was killed at 60,000 x 200. The leak added 0.4 GB here.
    - contrastive (no latent shortcut): the Hessian of the mean loss is summed over blocks of 16 digits (a pass
      budget of 16 x 32 basis columns x 784 pixels). Taken over the whole set at once, it added ~0.09 MB per
      digit (0.08 GB here, ~5.5 GB for all of MNIST, more for larger inputs)."""
    import os
    import subprocess
    import sys

    code = f"""
import resource, lfeval
from lfeval.explain.examples import importance
ds = lfeval.data.load("mnist", limit_train={n}, limit_test=2)
enc = lfeval.models.train_encoder(ds, "{pretext}", latent_dim=4, epochs=1, min_steps=0, seed=0,
                                  display_progressbar=False)
peaks = []
for k in (64, {n}):
    importance(enc, ds.x_train[:k], ds.x_test, "influence", chunk_size=16, display_progressbar=False)
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
print(peaks[1] - peaks[0])
"""
    env = {**os.environ, "LFEVAL_PASS_BUDGET": str(16 * 32 * 784)}
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    grown_mb = int(out.stdout.split()[-1]) / 1024  # ru_maxrss is in KiB on Linux
    assert grown_mb < limit_mb, f"peak memory grew {grown_mb:.1f} MB from 64 to {n} training digits"
