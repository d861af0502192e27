"""Label-free feature attributions: known answers, completeness, batch invariance, Quantus fit, errors."""

from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch
from torch import nn

import lfeval
from lfeval.errors import InvalidArgument, InvalidInput, ModelStateError, UnknownName
from lfeval.explain.features import METHODS


class Linear(nn.Module):
    """f(x) = W x on flattened inputs (N, 1, D)."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return x.flatten(1) @ self.w.T


@pytest.fixture
def linear():
    torch.manual_seed(0)
    w = torch.randn(3, 6)
    x = torch.rand(5, 1, 6)
    return Linear(w).eval(), w, x


def test_saliency_and_ig_of_a_linear_encoder(linear):
    enc, w, x = linear
    grad = (x.flatten(1) @ w.T @ w).view_as(x)  # d/dx' <Wx, Wx'> = W^T W x
    np.testing.assert_allclose(lfeval.explain(enc, x, method="Saliency"), grad.abs().numpy(), atol=1e-5)
    ig = lfeval.explain(enc, x.numpy(), method="IntegratedGradients", baseline=0.0)
    np.testing.assert_allclose(ig, (x * grad).numpy(), atol=1e-5)
    # with one zero baseline and no noise, GradientShap's gradient is constant: the same answer
    gs = lfeval.explain(enc, x, method="GradientShap", n_samples=7, stdevs=0.0, baseline=0.0)
    ixg = lfeval.explain(enc, x, method="InputXGradient")
    np.testing.assert_allclose(gs, (x * grad).numpy(), atol=1e-5)
    np.testing.assert_allclose(ixg, (x * grad).numpy(), atol=1e-5)


def test_ig_completeness_on_a_trained_encoder(ae, digits):
    x = digits.x_test[:16]
    a = lfeval.explain(ae, x, method="IntegratedGradients", n_steps=300)
    with torch.no_grad():
        z = ae(x)
        g_x = (z * z).sum(1)
        g_b = (ae(torch.zeros_like(x)) * z).sum(1)  # the digits baseline is black
    np.testing.assert_allclose(a.reshape(16, -1).sum(1), (g_x - g_b).numpy(), rtol=0.01)


def test_default_baseline_comes_from_the_data_set(ae, digits):
    assert torch.equal(ae.baseline, digits.baseline)
    x = digits.x_test[:4]
    np.testing.assert_array_equal(lfeval.explain(ae, x, method="IntegratedGradients"),
                                  lfeval.explain(ae, x, method="IntegratedGradients", baseline=0.0))
    grey = lfeval.explain(ae, x, method="IntegratedGradients", baseline=0.5, n_steps=200)
    with torch.no_grad():
        z = ae(x)
        expected = (z * z).sum(1) - (ae(torch.full_like(x, 0.5)) * z).sum(1)
    np.testing.assert_allclose(grey.reshape(4, -1).sum(1), expected.numpy(), rtol=0.01)


@pytest.mark.parametrize("method", [m for m in METHODS if not m.startswith("CEM")])
def test_batch_invariance(encoders, digits, method):
    enc = encoders["denoising"]
    x = digits.x_test[:5]
    kw = {"n_samples": 8} if method in ("GradientShap", "SmoothGrad", "ShapleyValueSampling") else {}
    kw.update({"RELAX": {"n_masks": 64}, "COCOA": {"x_train": digits.x_train[:100], "n_clusters": 4}}.get(method, {}))
    batch = lfeval.explain(enc, x, method=method, seed=3, **kw)
    alone = np.concatenate([lfeval.explain(enc, x[i:i + 1], method=method, seed=3, **kw) for i in range(5)])
    assert batch.shape == x.shape and batch.dtype == np.float32
    # perturbation methods subtract g values of order 1e2 computed in float32 by differently sized GEMMs
    atol = 1e-4 if method in ("Occlusion", "FeatureAblation", "ShapleyValueSampling") else 1e-5
    np.testing.assert_allclose(batch, alone, rtol=1e-4, atol=atol)
    shuffled = lfeval.explain(enc, x.flip(0), method=method, seed=3, **kw)
    np.testing.assert_allclose(shuffled[::-1], batch, rtol=1e-4, atol=atol)


def test_random_control_is_seeded_uniform_and_content_keyed(digits, ae):
    x = digits.x_test[:50]
    a, b = lfeval.explain(ae, x, method="Random", seed=1), lfeval.explain(ae, x, method="Random", seed=1)
    c = lfeval.explain(ae, x, method="Random", seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert -1 <= a.min() < -0.9 and 0.9 < a.max() <= 1 and abs(a.mean()) < 0.05
    assert abs(np.corrcoef(a[0].ravel(), a[1].ravel())[0, 1]) < 0.4  # different inputs, different maps


def test_explain_units_adds_up_to_the_auxiliary_function(ae, digits):
    x = digits.x_test[:6]
    units = lfeval.explain_units(ae, x, method="InputXGradient")
    assert units.shape == (6, 8, 1, 8, 8)
    with torch.no_grad():
        z = ae(x).numpy()
    combined = (units * z[:, :, None, None, None]).sum(1)  # g_x = sum_j f_j(x) f_j(x')
    np.testing.assert_allclose(combined, lfeval.explain(ae, x, method="InputXGradient"), rtol=1e-4, atol=1e-5)


def test_quantus_calls_it_as_explain_func(ae, digits):
    x = digits.x_test[:8].numpy()
    scores = quantus.Sparseness(disable_warnings=True)(
        model=ae, x_batch=x, y_batch=None, a_batch=None, explain_func=lfeval.explain,
        explain_func_kwargs={"method": "Saliency"}, device="cpu",
    )
    expected = quantus.Sparseness(disable_warnings=True)(
        model=ae, x_batch=x, y_batch=None, a_batch=lfeval.explain(ae, x, method="Saliency"))
    np.testing.assert_allclose(scores, expected)


def test_bad_input_raises_clear_errors(ae, digits):
    x = digits.x_test[:4]
    with pytest.raises(UnknownName, match="'Saliency'"):
        lfeval.explain(ae, x, method="Salincy")
    with pytest.raises(InvalidInput, match="empty"):
        lfeval.explain(ae, x[:0], method="Saliency")
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InvalidInput, match="NaN"):
        lfeval.explain(ae, bad, method="Saliency")
    with pytest.raises(InvalidArgument, match="baseline"):
        lfeval.explain(ae, x, method="IntegratedGradients", baseline=torch.zeros(3, 3))
    ae.train()
    try:
        with pytest.raises(ModelStateError, match="eval"):
            lfeval.explain(ae, x, method="Saliency")
    finally:
        ae.eval()
