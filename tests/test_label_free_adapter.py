"""LabelFree: stock Quantus faithfulness metrics scored on encoders through g_x.

Sanity check per metric: on a synthetic encoder f(x) = W x_S that reads only the features in a
patch S (W >= 0), the exact decomposition of g_x(x') = <f(x), f(x')>, a_i = x_i (W^T f(x))_i, must
score better than a random attribution in the metric's (corrected) score direction.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import quantus
import torch

import lfeval
from lfeval.errors import InvalidArgument, NotAdaptable
from lfeval.metrics import ADAPTABLE, LabelFree


class Synthetic(torch.nn.Module):
    """f(x) = W x_S with S a 6x6 patch of a 16x16 image and W >= 0 (d = 4)."""

    def __init__(self, side: int = 16, d: int = 4, seed: int = 0):
        super().__init__()
        mask = torch.zeros(side, side, dtype=torch.bool)
        mask[3:9, 5:11] = True
        self.register_buffer("mask", mask.flatten())
        self.register_buffer("W", torch.rand(d, int(mask.sum()), generator=torch.Generator().manual_seed(seed)))

    def forward(self, x):
        return x.flatten(1)[:, self.mask] @ self.W.T


@pytest.fixture(scope="module")
def synthetic():
    enc = Synthetic().eval()
    x = torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    c = torch.zeros(16, 256)
    c[:, enc.mask] = enc(x) @ enc.W  # W^T f(x): the gradient of g_x, constant in x'
    oracle = (x.flatten(1) * c).reshape(x.shape).numpy()
    random = torch.rand(x.shape, generator=torch.Generator().manual_seed(2)).numpy()
    return enc, x.numpy(), oracle, random


METRICS = {
    "PixelFlipping": lambda: quantus.PixelFlipping(features_in_step=16),
    "FaithfulnessCorrelation": lambda: quantus.FaithfulnessCorrelation(nr_runs=50, subset_size=32),
    "FaithfulnessEstimate": lambda: quantus.FaithfulnessEstimate(features_in_step=16),
    "MonotonicityCorrelation": lambda: quantus.MonotonicityCorrelation(nr_samples=5, features_in_step=16),
    "RegionPerturbation": lambda: quantus.RegionPerturbation(patch_size=4, regions_evaluation=8),
    "Selectivity": lambda: quantus.Selectivity(patch_size=4),
    "SensitivityN": lambda: quantus.SensitivityN(features_in_step=16, n_max_percentage=0.8),
    "IROF": lambda: quantus.IROF(segmentation_method="slic"),
    "ROAD": lambda: quantus.ROAD(percentages=list(range(5, 100, 10))),
    "Infidelity": lambda: quantus.Infidelity(n_perturb_samples=10, perturb_patch_sizes=[4]),
}


def test_every_adaptable_metric_is_sanity_checked():
    assert set(METRICS) == set(ADAPTABLE)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_oracle_beats_random(name, synthetic):
    enc, x, oracle, random = synthetic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = LabelFree(METRICS[name]())
        s_oracle = np.mean(metric(model=enc, x_batch=x, a_batch=oracle))
        s_random = np.mean(metric(model=enc, x_batch=x, a_batch=random))
    assert np.isfinite(s_oracle) and np.isfinite(s_random)
    if metric.score_direction == quantus.helpers.enums.ScoreDirection.HIGHER:
        assert s_oracle > s_random, (s_oracle, s_random)
    else:
        assert s_oracle < s_random, (s_oracle, s_random)


def test_scores_are_g_x_paired_with_each_sample(synthetic):
    enc, x, _, _ = synthetic
    xt = torch.as_tensor(x)
    scores = LabelFree(quantus.FaithfulnessEstimate()).score_model(enc, xt)(xt[:5])
    z = enc(xt)
    np.testing.assert_allclose(scores.detach(), (z[:5] @ z.T).detach(), rtol=1e-5)  # out(x')_j = <f(x_j), f(x')>
    neg = LabelFree(quantus.FaithfulnessEstimate(), "negative_distance").score_model(enc, xt)(xt[:3])
    np.testing.assert_allclose(neg.detach().diagonal(), 0.0, atol=1e-3)


def test_pairing_survives_quantus_batching(synthetic):
    """Quantus splits x and y into batches; the reference of row i must stay f(x_i)."""
    enc, x, oracle, _ = synthetic
    metric = LabelFree(quantus.FaithfulnessEstimate(features_in_step=16, disable_warnings=True))
    whole = metric(model=enc, x_batch=x, a_batch=oracle, batch_size=16)
    pieces = metric(model=enc, x_batch=x, a_batch=oracle, batch_size=3)
    np.testing.assert_allclose(whole, pieces, rtol=1e-6)
    # and equals the metric run on each sample alone
    alone = [metric(model=enc, x_batch=x[i:i + 1], a_batch=oracle[i:i + 1])[0] for i in range(3)]
    np.testing.assert_allclose(whole[:3], alone, rtol=1e-5)


def test_region_perturbation_direction_is_corrected():
    assert LabelFree(quantus.RegionPerturbation(order="morf")).score_direction.value == "higher"
    assert LabelFree(quantus.RegionPerturbation(order="lerf")).score_direction.value == "lower"


def test_works_in_quantus_evaluate_on_a_real_encoder(ae, digits):
    x = digits.x_test[:24].numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = quantus.evaluate(
            metrics={"FC": LabelFree(quantus.FaithfulnessCorrelation(nr_runs=20, subset_size=8))},
            xai_methods={"IntegratedGradients": lfeval.explain, "Random": lfeval.explain},
            model=ae, x_batch=x, y_batch=None, explain_func_kwargs={},
        )
    assert res["IntegratedGradients"]["FC"] > res["Random"]["FC"]


def test_bad_input_gets_clear_errors(synthetic):
    enc, x, oracle, _ = synthetic
    with pytest.raises(NotAdaptable, match="PixelFlipping"):
        LabelFree(quantus.RandomLogit())
    with pytest.raises(InvalidArgument, match="s_batch"):
        LabelFree(quantus.PointingGame())(model=enc, x_batch=x, a_batch=oracle)
    with pytest.raises(InvalidArgument, match="ill-defined"):
        LabelFree(quantus.IROF(), similarity="negative_distance")
    with pytest.raises(lfeval.errors.UnknownName, match="cosine"):
        LabelFree(quantus.IROF(), similarity="cosinus")
