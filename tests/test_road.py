"""Label-free ROAD: noisy linear imputation against Quantus' own (grey and RGB) and a sparse-solve
transcription (time series), parity with the stock adapter where Quantus works, orderings that must hold."""

from __future__ import annotations

import numpy as np
import pytest
import quantus
import scipy.sparse
import scipy.sparse.linalg
import torch
from quantus.functions.perturb_func import noisy_linear_imputation as quantus_imputation

import lfeval
from lfeval.errors import NotAdaptable
from lfeval.metrics import ROAD, LabelFree
from lfeval.metrics.functional import noisy_linear_imputation
from lfeval.modalities import get_modality


@pytest.mark.parametrize("channels, side", [(1, 8), (3, 12)])
def test_image_imputation_equals_quantus(channels, side):
    rng = np.random.default_rng(channels)
    x = rng.random((4, channels, side, side)).astype(np.float32)
    mask = np.zeros((4, 1, side, side), dtype=bool)
    expected = []
    for i in range(4):
        removed = np.sort(rng.choice(side * side, size=int(0.6 * side * side), replace=False))
        mask[i, 0].flat[removed] = True
        expected.append(quantus_imputation(x[i], removed, noise=0.0))  # pixel indices: fine on RGB too
    got = noisy_linear_imputation(torch.tensor(x), torch.tensor(mask), get_modality("image").imputation_kernel(),
                                  noise=0.0)
    np.testing.assert_allclose(got.numpy(), np.stack(expected), atol=1e-5)


def _series_reference(x: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Each removed step = mean of its in-bounds neighbours (weights 1/2), solved exactly (scipy)."""
    t = x.shape[-1]
    index = {s: i for i, s in enumerate(removed)}
    a = scipy.sparse.lil_matrix((len(removed), len(removed)))
    b = np.zeros((len(removed), x.shape[0]))
    for s, i in index.items():
        neighbours = [n for n in (s - 1, s + 1) if 0 <= n < t]
        a[i, i] = 0.5 * len(neighbours)
        for n in neighbours:
            if n in index:
                a[i, index[n]] -= 0.5
            else:
                b[i] += 0.5 * x[:, n]
    out = x.copy()
    out[:, removed] = scipy.sparse.linalg.spsolve(a.tocsc(), b).reshape(len(removed), -1).T
    return out


def test_time_series_imputation_equals_a_sparse_solve():
    rng = np.random.default_rng(5)
    x = rng.random((3, 2, 40))
    mask = np.zeros((3, 1, 40), dtype=bool)
    expected = []
    for i in range(3):
        removed = np.sort(rng.choice(40, size=25, replace=False))
        mask[i, 0, removed] = True
        expected.append(_series_reference(x[i], removed))
    got = noisy_linear_imputation(torch.tensor(x), torch.tensor(mask), get_modality("time_series").imputation_kernel(),
                                  noise=0.0)
    np.testing.assert_allclose(got.numpy(), np.stack(expected), atol=1e-6)


def test_tabular_rows_take_the_baseline_and_noise_is_seeded():
    x, mask = torch.rand(2, 1, 6), torch.tensor([[[True, False, True, False, False, False]]] * 2)
    base = torch.full((1, 6), 0.25)
    out = noisy_linear_imputation(x, mask, None, noise=0.0, baseline=base)
    assert torch.equal(out[mask], torch.full((4,), 0.25)) and torch.equal(out[~mask], x[~mask])
    a = noisy_linear_imputation(x, mask, None, 0.1, base, torch.Generator().manual_seed(3))
    b = noisy_linear_imputation(x, mask, None, 0.1, base, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, out)


def test_parity_with_the_stock_adapter_on_grey_digits(ae, digits):
    """Where Quantus' ROAD works (grey images), lfeval's ROAD with measure='retrieval' and no noise gives the
    same area as LabelFree(quantus.ROAD()) (the same imputations and the same label-free 'unchanged')."""
    x = digits.x_test[:64].numpy()
    a = np.random.default_rng(0).random(x.shape).astype(np.float32)  # no ties: both rank the same order
    pct = [10, 30, 50, 70, 90]
    stock = LabelFree(quantus.ROAD(noise=0.0, percentages=pct, disable_warnings=True))(ae, x, a_batch=a)
    ours = ROAD(percentages=pct, noise=0.0, measure="retrieval")
    ours(ae, x, a_batch=a, batch_size=64)
    area = np.trapezoid(ours.curve().series["retrieved"].mean(0), np.array(pct) / 100)
    assert area == pytest.approx(stock[0], abs=1e-9)


class Patch(torch.nn.Module):
    """f(x) = W x_S for a 5x5 patch S of a 12x12 RGB image (W >= 0): only S matters."""

    def __init__(self):
        super().__init__()
        mask = torch.zeros(3, 12, 12, dtype=torch.bool)
        mask[:, 2:7, 4:9] = True
        self.register_buffer("mask", mask.flatten())
        self.register_buffer("W", torch.rand(6, int(mask.sum()), generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return x.flatten(1)[:, self.mask] @ self.W.T


def test_oracle_beats_random_in_both_orders():
    enc = lfeval.Encoder(Patch(), input_shape=(3, 12, 12)).eval()
    x = torch.rand(24, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    oracle = (enc.module.mask.view(1, 3, 12, 12).float() * x).numpy()  # the relevant pixels rank first
    random = torch.rand(x.shape, generator=torch.Generator().manual_seed(2)).numpy()
    morf, lerf = ROAD(noise=0.0), ROAD(noise=0.0, order="lerf")
    assert morf.score_direction.value == "higher" and lerf.score_direction.value == "lower"
    assert ROAD(measure="cosine").score_direction.value == "lower"
    for metric in (morf, lerf):  # oracle vs random: more shift when the relevant pixels go first, less when last
        better = metric.score_direction.value == "higher"
        s_oracle = np.mean(metric(enc, x.numpy(), a_batch=oracle))
        s_random = np.mean(metric(enc, x.numpy(), a_batch=random))
        assert (s_oracle > 1.5 * s_random) if better else (s_oracle < 0.75 * s_random), (metric.order, s_oracle,
                                                                                         s_random)
    assert np.isfinite(morf.curve().series["shift"]).all()
    with pytest.raises(NotAdaptable, match="lfeval.metrics.ROAD"):  # Quantus 0.6.0 fails on RGB
        LabelFree(quantus.ROAD())(enc, x.numpy(), a_batch=oracle)
