"""RepresentationShift: hand-computed answers, the paper's procedure, sanity orderings, Quantus fit, errors."""

from __future__ import annotations

import itertools

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


def _lfxai_generate_masks(attr: np.ndarray, mask_size: int) -> torch.Tensor:
    """A transcription of lfxai 0.1.1's ``lfxai.utils.feature_attribution.generate_masks`` (the paper's code):
    |attr| summed over channels, the ``torch.topk`` pixels of each example zeroed in a Python loop."""
    dataset_size, n_chanels, H, W = attr.shape
    attr = torch.from_numpy(np.sum(np.abs(attr), axis=1, keepdims=True))
    masks = torch.ones(attr.shape).view(dataset_size, -1)
    top_pixels = torch.topk(attr.view(dataset_size, -1), mask_size)[1]
    for feature_id, example_id in itertools.product(range(mask_size), range(dataset_size)):
        masks[example_id, top_pixels[example_id, feature_id]] = 0
    return masks.view(dataset_size, 1, H, W)


def _lfxai_consistency(encoder, images: torch.Tensor, attr: np.ndarray, batch_size: int = 200) -> np.ndarray:
    """A transcription of the mask loop of lfxai's ``experiments/mnist.py::consistency_feature_importance``,
    integer truncation included: ``mask_size = int(pert_percentage * W**2 / 100)``, images multiplied by the mask
    (baseline 0), squared L2 shift (kept per example here; lfxai then averages each test batch)."""
    W = images.shape[-1]
    curves = []
    for pert_percentage in [5, 10, 20, 50, 80, 100]:
        mask_size = int(pert_percentage * W**2 / 100)
        masks = _lfxai_generate_masks(attr, mask_size)
        shifts = []
        for start in range(0, len(images), batch_size):
            mask, batch = masks[start:start + batch_size], images[start:start + batch_size]
            with torch.no_grad():
                original_reps = encoder(batch)
                pert_reps = encoder(mask * batch)
            shifts.append(torch.sum((original_reps - pert_reps) ** 2, dim=-1))
        curves.append(torch.cat(shifts))
    return torch.stack(curves, 1).numpy()


def test_mask_counts_follow_the_papers_truncation():
    from lfeval.metrics.functional import mask_counts

    paper = (0.05, 0.1, 0.2, 0.5, 0.8, 1.0)
    for side in (8, 28):  # lfxai: int(pert_percentage * W**2 / 100)
        expected = [int(pct * side**2 / 100) for pct in (5, 10, 20, 50, 80, 100)]
        assert mask_counts(paper, side**2).tolist() == expected
    assert mask_counts(paper, 64).tolist() == [3, 6, 12, 32, 51, 64]
    assert mask_counts(paper, 784).tolist() == [39, 78, 156, 392, 627, 784]
    assert mask_counts(paper, 784, rule="round").tolist() == [39, 78, 157, 392, 627, 784]
    assert mask_counts([0.29, 0.57], 100).tolist() == [29, 57]  # int(0.29 * 100) is 28 in floating point
    assert mask_counts([0.01], 16).tolist() == [0] and mask_counts([0.01], 16, rule="round").tolist() == [1]
    with pytest.raises(InvalidArgument, match="mask_count"):
        RepresentationShift(mask_count="ceil")


def test_agrees_with_lfxai_mask_procedure(ae, digits):
    x = digits.x_test[:40]
    for method in ("GradientShap", "Random"):
        a = lfeval.explain(ae, x.numpy(), method=method)
        ref = _lfxai_consistency(ae, x, a)
        m = RepresentationShift()  # defaults: the paper's fractions, floor(p * d), the digits baseline (zeros)
        m(model=ae, x_batch=x.numpy(), a_batch=a)
        np.testing.assert_allclose(m.curves, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
        np.testing.assert_allclose(m.curves.mean(0), ref.mean(0), rtol=1e-5)  # the paper's batch means
        rounded = RepresentationShift(mask_count="round")  # 13 pixels at 20%, not the paper's 12
        rounded(model=ae, x_batch=x.numpy(), a_batch=a)
        np.testing.assert_allclose(rounded.curves[:, [0, 1, 3, 4, 5]], ref[:, [0, 1, 3, 4, 5]], rtol=1e-5,
                                   atol=1e-5 * np.abs(ref).max())
        assert np.abs(rounded.curves[:, 2] - ref[:, 2]).max() > 1e-2 * np.abs(ref).max()


def test_top_masks_equal_stable_ranks():
    from lfeval.metrics.functional import feature_ranks, top_masks

    gen = torch.Generator().manual_seed(0)
    imp = torch.randint(-3, 4, (50, 37), generator=gen).float() * 0.5  # many ties, negatives
    imp[0, :5] = torch.tensor([-0.0, 0.0, 0.0, -0.0, 1.0])
    imp = torch.cat([imp, torch.rand(20, 37, generator=gen) * 1e-30, torch.randn(20, 37, generator=gen) * 1e30])
    counts = torch.tensor([0, 1, 5, 18, 36, 37])
    expected = feature_ranks(imp)[:, None, :] < counts[None, :, None]
    assert torch.equal(top_masks(imp, counts), expected)
    assert torch.equal(top_masks(imp.double(), counts), expected)
    assert torch.equal(top_masks(imp, counts).sum(-1), counts.expand(len(imp), -1))


def test_chunking_does_not_change_the_curves(ae, digits):
    x = digits.x_test[:30].numpy()
    a = lfeval.explain(ae, x, method="Saliency")
    auto = RepresentationShift()
    auto(model=ae, x_batch=x, a_batch=a)
    small = RepresentationShift(chunk_size=5)  # one sample (6 inputs) per pass
    small(model=ae, x_batch=x, a_batch=a, batch_size=8)
    np.testing.assert_allclose(small.curves, auto.curves, rtol=1e-5, atol=1e-6)
    from lfeval.metrics.functional import representation_shift_curve, unit_importance

    x_many = torch.as_tensor(x).repeat(150, 1, 1, 1)  # 4500 samples: several blocks of keys
    imp = unit_importance(ae, torch.as_tensor(a).repeat(150, 1, 1, 1), (1, 8, 8))
    many = representation_shift_curve(ae, x_many, imp, auto.fractions, chunk_size=7 * 97)
    np.testing.assert_allclose(many.numpy(), np.tile(auto.curves, (150, 1)), rtol=1e-5, atol=1e-6)


def test_fractions_below_one_feature():
    x = torch.arange(1.0, 17.0).view(1, 1, 16).numpy()
    a = x.copy()  # the last feature (16) first
    floor = RepresentationShift(fractions=(0.05, 0.5), baseline=0.0)
    with pytest.warns(UserWarning, match=r"floor\(p \* d\) = 0"):
        floor(model=Identity().eval(), x_batch=x, a_batch=a)
    assert floor.curves[0, 0] == 0.0 and floor.curves[0, 1] == sum(v * v for v in range(9, 17))
    rounded = RepresentationShift(fractions=(0.05, 0.5), baseline=0.0, mask_count="round")
    rounded(model=Identity().eval(), x_batch=x, a_batch=a)
    assert rounded.curves[0, 0] == 256.0  # at least one feature


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
    with pytest.raises(InvalidInput, match="all zero"):
        m(model=ae, x_batch=x, a_batch=np.zeros_like(a))
    with pytest.raises(InvalidInput, match="all equal to 1"):
        m(model=ae, x_batch=x, a_batch=np.ones_like(a))
    with pytest.raises(InvalidInput, match="all equal to 0.5"):
        m(model=ae, x_batch=x, a_batch=np.full(a.shape[:1] + a.shape[2:], 0.5, np.float32))
    with pytest.raises(InvalidInput, match="NaN"):  # explanations computed per batch are checked the same way
        m(model=ae, x_batch=x, explain_func=lambda model, inputs, targets: np.full_like(inputs, np.nan))
    with pytest.raises(InvalidInput, match="all zero"):
        m(model=ae, x_batch=x, explain_func=lambda model, inputs, targets: np.zeros_like(inputs))
    with pytest.raises(InvalidInput, match="a_batch"):
        m(model=ae, x_batch=x, explain_func=lambda model, inputs, targets: inputs[:, :, :3])
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


@pytest.mark.parametrize("order", ["deletion", "insertion", "lerf"])
@pytest.mark.parametrize("baseline", [0.0, "per-sample"])
def test_every_order_equals_the_masks_built_one_by_one(ae, digits, order, baseline):
    """The sort-key path (one top-c set per level, inverted for insertion and LeRF, f(baseline) shared) against
    ordered_masks + perturbed_inputs, with ties in the importance and a chunk of a few samples."""
    from lfeval.metrics.functional import (
        mask_counts,
        ordered_masks,
        perturbed_inputs,
        representation_distance,
        representation_shift_curve,
    )

    x = digits.x_test[:25]
    gen = torch.Generator().manual_seed(3)
    imp = torch.randint(0, 5, (25, 64), generator=gen).float()  # many ties
    base = x.flip(0) if baseline == "per-sample" else baseline
    fractions = (0.05, 0.2, 0.5, 1.0)
    curve = representation_shift_curve(ae, x, imp, fractions, base, chunk_size=3 * 5, order=order)
    counts = mask_counts(fractions, 64)
    with torch.no_grad():
        zm = ae(perturbed_inputs(ae, x, ordered_masks(imp, counts, order), base)).view(25, len(counts), -1)
        expected = representation_distance(ae(x).unsqueeze(1), zm)
    torch.testing.assert_close(curve, expected, rtol=1e-5, atol=1e-6)


def test_automatic_chunks_respect_the_pass_budget(monkeypatch):
    from lfeval.metrics.functional import chunk_rows

    assert chunk_rows((1, 8, 8), budget=2 ** 15) == 512
    monkeypatch.setenv("LFEVAL_PASS_BUDGET", str(64 * 10))
    assert chunk_rows((1, 8, 8), budget=2 ** 15) == 10  # LFEVAL_PASS_BUDGET caps the cache-sized passes too
