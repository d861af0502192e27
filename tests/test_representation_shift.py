"""RepresentationShift: hand-computed answers, the paper's procedure, sanity orderings, Quantus fit, errors."""

from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch
from torch import nn

import lfeval
from lfeval.errors import InvalidArgument, InvalidInput, ModelStateError
from lfeval.metrics import RepresentationShift


class Identity(nn.Module):
    def forward(self, x):
        return x.flatten(1)


class Subset(nn.Module):
    """A synthetic encoder f(x) = x_S that reads only the features in S = ``keep``.

    Masking a set A to 0 shifts it by sum_{i in A & S} x_i^2, so ranking S by x_i^2 is optimal.
    """

    def __init__(self, keep: torch.Tensor):
        super().__init__()
        self.keep = keep

    def forward(self, x):
        return x.flatten(1)[:, self.keep]


def test_hand_computed_curve_and_auc():
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]], dtype=np.float32)
    a = np.array([[[4.0, 3.0, 2.0, 1.0]]], dtype=np.float32)  # feature 0 ranked first
    m = RepresentationShift(fractions=(0.25, 0.5, 1.0), baseline=0.0)
    score = m(model=Identity().eval(), x_batch=x, a_batch=a)
    np.testing.assert_allclose(m.curves, [[1.0, 5.0, 30.0]])  # 1, 1+4, 1+4+9+16
    np.testing.assert_allclose(score, [(0.25 * 3.0 + 0.5 * 17.5) / 0.75], rtol=1e-6)
    norm = RepresentationShift(fractions=(0.25, 0.5, 1.0), baseline=0.0, distance="normalised_l2")
    norm(model=Identity().eval(), x_batch=x, a_batch=a)
    np.testing.assert_allclose(norm.curves, [[1 / 30, 5 / 30, 1.0]], rtol=1e-6)
    cos = RepresentationShift(fractions=(0.25, 1.0), baseline=0.0, distance="cosine")
    cos(model=Identity().eval(), x_batch=x, a_batch=a)
    np.testing.assert_allclose(cos.curves[0, 0], 1 - 29 / np.sqrt(30 * 29), rtol=1e-5)
    assert np.isnan(cos.curves[0, 1]) or cos.curves[0, 1] == pytest.approx(1.0)  # the zero vector


def _paper_procedure(enc, x, a, fractions, baseline=0.0):
    """lfxai's consistency_feature_importance: per sample, per fraction, mask the top pixels in a loop."""
    x, a = torch.as_tensor(x), torch.as_tensor(a).abs().sum(1)  # |a| summed over channels
    n_pix = a[0].numel()
    curves = np.zeros((len(x), len(fractions)))
    for k, frac in enumerate(fractions):
        masked = x.clone()
        for i in range(len(x)):
            top = torch.argsort(a[i].flatten(), descending=True, stable=True)[: max(1, int(round(frac * n_pix)))]
            mask = torch.zeros(n_pix, dtype=torch.bool)
            mask[top] = True
            masked[i][:, mask.view(a[i].shape)] = baseline
        with torch.no_grad():
            curves[:, k] = (enc(x) - enc(masked)).pow(2).sum(1).numpy()
    return curves


def test_agrees_with_the_papers_procedure(ae, digits):
    x = digits.x_test[:40].numpy()
    a = lfeval.explain(ae, x, method="GradientShap")
    m = RepresentationShift()
    m(model=ae, x_batch=x, a_batch=a)
    ref = _paper_procedure(ae, x, a, m.fractions)
    np.testing.assert_allclose(m.curves, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_oracle_first_random_last_on_a_known_subset():
    torch.manual_seed(0)
    keep = torch.zeros(64, dtype=torch.bool)
    keep[torch.randperm(64)[:10]] = True
    enc = Subset(keep).eval()
    x = torch.rand(100, 1, 8, 8).numpy()
    oracle = keep.view(1, 1, 8, 8).float().numpy() * (1 + x**2)
    methods = {"oracle": oracle, "Saliency": lfeval.explain(enc, x, method="Saliency"),
               "Random": lfeval.explain(enc, x, method="Random")}
    m = RepresentationShift(baseline=0.0)
    scores = {k: float(np.mean(m(model=enc, x_batch=x, a_batch=a))) for k, a in methods.items()}
    assert scores["oracle"] >= max(scores.values()) - 1e-6
    assert scores["Random"] == min(scores.values()) and scores["Random"] < 0.8 * scores["oracle"]
    rel = RepresentationShift(baseline=0.0, relative=True, n_random=4)
    assert np.mean(rel(model=enc, x_batch=x, a_batch=oracle)) > 0
    assert abs(np.mean(rel(model=enc, x_batch=x, a_batch=methods["Random"]))) < 0.25 * scores["oracle"]


def test_label_free_ig_beats_random_on_trained_digits(encoders, digits):
    x = digits.x_test[:200].numpy()
    for pretext, enc in encoders.items():
        m = RepresentationShift()
        ig = np.asarray(m(model=enc, x_batch=x, a_batch=lfeval.explain(enc, x, method="IntegratedGradients")))
        rnd = np.asarray(m(model=enc, x_batch=x, a_batch=lfeval.explain(enc, x, method="Random")))
        # measured: 1.9-2.4x and >= 97% of samples for the autoencoders and the classifier; 1.3x, 85% for SimCLR
        ratio, paired = (1.2, 0.75) if pretext == "contrastive" else (1.5, 0.9)
        assert ig.mean() > ratio * rnd.mean(), pretext
        assert (ig > rnd).mean() > paired, pretext


def test_baselines_value_tensor_callable(ae, digits):
    x = digits.x_test[:10].numpy()
    a = lfeval.explain(ae, x, method="Saliency")
    same = RepresentationShift(baseline=lambda batch: batch)  # replacing by itself moves nothing
    np.testing.assert_allclose(same(model=ae, x_batch=x, a_batch=a), 0.0, atol=1e-6)
    by_value = RepresentationShift(baseline=0.3)(model=ae, x_batch=x, a_batch=a)
    by_tensor = RepresentationShift(baseline=torch.full((1, 8, 8), 0.3))(model=ae, x_batch=x, a_batch=a)
    np.testing.assert_allclose(by_value, by_tensor, rtol=1e-6)
    default = RepresentationShift()(model=ae, x_batch=x, a_batch=a)  # the digits baseline: zeros
    np.testing.assert_allclose(default, RepresentationShift(baseline=0.0)(model=ae, x_batch=x, a_batch=a))


def test_channels_summed_or_ranked_separately():
    x = np.ones((1, 3, 2, 2), dtype=np.float32)
    a = np.zeros_like(x)
    a[0, 0, 0, 0] = 5.0  # one channel of one pixel
    summed = RepresentationShift(fractions=(0.25, 1.0), baseline=0.0)
    summed(model=Identity().eval(), x_batch=x, a_batch=a)
    assert summed.curves[0, 0] == 3.0  # the whole pixel (3 channels) is masked
    per_channel = RepresentationShift(fractions=(1 / 12, 1.0), baseline=0.0, per_channel=True)
    per_channel(model=Identity().eval(), x_batch=x, a_batch=a)
    assert per_channel.curves[0, 0] == 1.0
    reduced = RepresentationShift(fractions=(0.25, 1.0), baseline=0.0)
    reduced(model=Identity().eval(), x_batch=x, a_batch=a.sum(1, keepdims=True))  # (N, 1, H, W) attributions
    assert reduced.curves[0, 0] == 3.0


def test_inside_quantus_evaluate_with_stock_metrics(ae, digits):
    x = digits.x_test[:32].numpy()
    ig = lfeval.explain(ae, x, method="IntegratedGradients")
    metrics = {"RepresentationShift": RepresentationShift(), "Sparseness": quantus.Sparseness(disable_warnings=True)}
    results = quantus.evaluate(metrics=metrics, xai_methods={"IG": ig, "Saliency": lfeval.explain}, model=ae,
                               x_batch=x, y_batch=None, agg_func=np.mean, explain_func_kwargs={})
    direct = np.mean(RepresentationShift()(model=ae, x_batch=x, a_batch=ig))
    assert results["IG"]["RepresentationShift"] == pytest.approx(direct, rel=1e-6)
    assert np.isfinite(results["Saliency"]["RepresentationShift"]) and np.isfinite(results["IG"]["Sparseness"])


def test_bad_input(ae, digits):
    x = digits.x_test[:4].numpy()
    a = lfeval.explain(ae, x, method="Saliency")
    m = RepresentationShift()
    with pytest.raises(InvalidInput, match="a_batch"):
        m(model=ae, x_batch=x, a_batch=a[:, :, :4])
    bad = a.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InvalidInput, match="NaN"):
        m(model=ae, x_batch=x, a_batch=bad)
    with pytest.raises(InvalidInput, match="empty"):
        m(model=ae, x_batch=x[:0], a_batch=a[:0])
    with pytest.warns(UserWarning, match="ignores `y_batch`"):
        m(model=ae, x_batch=x, y_batch=np.zeros(4), a_batch=a)
    with pytest.raises(InvalidArgument, match="fractions"):
        RepresentationShift(fractions=(0.5, 0.2))
    with pytest.raises(InvalidArgument, match="distance"):
        RepresentationShift(distance="l1")
    ae.train()
    try:
        with pytest.raises(ModelStateError, match="train mode"):
            m(model=ae, x_batch=x, a_batch=a)
    finally:
        ae.eval()
