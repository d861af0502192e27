"""Same numbers, less overhead: the batched stock-metric paths equal Quantus' loops (scores and the random
state afterwards), the skipped no-change check only ever skips a warning, and the fast Wilcoxon test gives
scipy's p-values."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import quantus
import scipy.stats

from lfeval.meta.wilcoxon import wilcoxon
from lfeval.metrics import LabelFree
from lfeval.metrics.fast_paths import skip_silenced_checks


def _metrics():
    return {"PixelFlipping": lambda: quantus.PixelFlipping(features_in_step=4, disable_warnings=True),
            "FaithfulnessCorrelation": lambda: quantus.FaithfulnessCorrelation(
                nr_runs=20, subset_size=8, return_aggregate=False, disable_warnings=True)}


@pytest.mark.parametrize("name", list(_metrics()))
def test_batched_stock_metrics_equal_quantus_loops(ae, digits, name):
    x = digits.x_test[:40].numpy()
    a = np.abs(np.random.default_rng(0).normal(size=x.shape)).astype(np.float32)
    out, states = {}, {}
    for batched in (True, False):
        np.random.seed(5)
        out[batched] = LabelFree(_metrics()[name](), batched=batched)(ae, x, a_batch=a, batch_size=16)
        states[batched] = np.random.get_state()[1].copy()
    np.testing.assert_allclose(out[True], out[False], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(states[True], states[False])  # the same random draws, in the same order
    assert np.std(out[True]) > 0


def test_the_no_change_check_is_skipped_only_while_warnings_are_off(monkeypatch):
    # Quantus shows a metric's warnings only in GitHub Actions and outside pytest: set that environment here, so
    # the warnings-on half runs everywhere
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.delenv("PYTEST", raising=False)
    x = np.zeros((2, 3))
    original = quantus.helpers.warn.warn_perturbation_caused_no_change
    on = quantus.PixelFlipping(disable_warnings=True)
    with skip_silenced_checks(on), skip_silenced_checks(on):  # nested
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quantus.helpers.warn.warn_perturbation_caused_no_change(x, x)
        assert not caught
    assert quantus.helpers.warn.warn_perturbation_caused_no_change is original
    off = quantus.PixelFlipping(disable_warnings=False)
    assert not off.disable_warnings
    with skip_silenced_checks(off), pytest.warns(UserWarning, match="didn't cause change"):
        quantus.helpers.warn.warn_perturbation_caused_no_change(x, x)
    assert quantus.helpers.warn.warn_perturbation_caused_no_change is original


def test_wilcoxon_gives_scipys_p_values():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 8, 11, 13, 14, 30):
        q = rng.integers(0, 4, n) / 4  # ties and zeros: scipy's exact permutation test up to n = 13
        q_hat = q.copy()
        q_hat[: n // 2] = rng.integers(0, 4, n // 2) / 4
        for alternative in ("two-sided", "greater"):
            ours = wilcoxon(q, q_hat, alternative=alternative, zero_method="zsplit")
            theirs = scipy.stats.wilcoxon(q, q_hat, alternative=alternative, zero_method="zsplit")
            assert ours[1] == theirs[1] and ours[0] == theirs[0], (n, alternative)
    q = rng.random(9)
    q_hat = q + rng.normal(size=9)  # no ties: scipy's own exact test, called as it is
    assert wilcoxon(q, q_hat, zero_method="zsplit")[1] == scipy.stats.wilcoxon(q, q_hat, zero_method="zsplit")[1]
