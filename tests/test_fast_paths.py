"""Same numbers, less overhead: the batched stock-metric paths equal Quantus' loops (scores and the random
state afterwards), the skipped no-change check only ever skips a warning, and the fast Wilcoxon test gives
scipy's p-values."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import quantus
import scipy.stats
import torch

import lfeval
from lfeval.meta.wilcoxon import wilcoxon
from lfeval.metrics import LabelFree, fast_paths
from lfeval.metrics.fast_paths import assert_attributions, quick_checks


def _metrics():
    return {"PixelFlipping": lambda: quantus.PixelFlipping(features_in_step=4, disable_warnings=True),
            "FaithfulnessCorrelation": lambda: quantus.FaithfulnessCorrelation(
                nr_runs=20, subset_size=8, return_aggregate=False, disable_warnings=True)}


@pytest.mark.parametrize("baseline", ["encoder", "metric"])
@pytest.mark.parametrize("name", list(_metrics()))
def test_batched_stock_metrics_equal_quantus_loops(ae, digits, name, baseline, monkeypatch):
    x = digits.x_test[:40].numpy()
    a = np.abs(np.random.default_rng(0).normal(size=x.shape)).astype(np.float32)
    out, states = {}, {}
    for batched in (True, False):
        np.random.seed(5)
        with monkeypatch.context() as patch:
            if batched and baseline == "encoder":  # the torch route: no perturbed NumPy copies to predict
                patch.setattr(fast_paths, "_predict_rows", None)
            metric = LabelFree(_metrics()[name](), baseline=baseline, batched=batched)
            out[batched] = metric(ae, x, a_batch=a, batch_size=16)
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
    with quick_checks(on), quick_checks(on):  # nested
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quantus.helpers.warn.warn_perturbation_caused_no_change(x, x)
        assert not caught
    assert quantus.helpers.warn.warn_perturbation_caused_no_change is original
    off = quantus.PixelFlipping(disable_warnings=False)
    assert not off.disable_warnings
    with quick_checks(off), pytest.warns(UserWarning, match="didn't cause change"):
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


def _outcome(check, x, a):
    try:
        check(x_batch=x, a_batch=a)
    except AssertionError as error:
        return str(error)
    return None


def test_the_vectorised_attribution_check_raises_exactly_when_quantus_does():
    original = quantus.helpers.asserts.assert_attributions
    rng = np.random.default_rng(0)
    x = rng.random((3, 1, 4, 4)).astype(np.float32)
    nan_pair = np.full((3, 1, 4, 4), np.nan)
    one_nan = np.full((3, 1, 4, 4), 0.5)
    one_nan[0, 0, 0, 0] = np.nan
    cases = {"random": rng.normal(size=x.shape), "zeros": np.zeros(x.shape), "ones": np.ones(x.shape),
             "constant": np.full(x.shape, 0.5), "negative": -rng.random(x.shape), "two NaNs": nan_pair,
             "one NaN": one_nan, "one differs": np.where(np.arange(48).reshape(x.shape) == 47, 1.5, 0.5),
             "first differs": np.where(np.arange(48).reshape(x.shape) == 0, 1.5, 0.5),
             "a list": x.tolist(), "fewer samples": x[:2], "no channel": x[:, 0], "wrong size": x[:, :, :3]}
    raised = 0
    for name, a in cases.items():
        expected = _outcome(original, x, a)
        assert _outcome(assert_attributions, x, a) == expected, name
        raised += expected is not None
    assert raised == 8  # zeros, ones, constant, negative, a list and the three shape faults; NaNs pass in both


def test_quick_checks_swap_the_attribution_check_only_while_a_metric_runs():
    original = quantus.helpers.asserts.assert_attributions
    with quick_checks(quantus.PixelFlipping(disable_warnings=False)):
        with quick_checks(quantus.PixelFlipping(disable_warnings=True)):  # nested
            assert quantus.helpers.asserts.assert_attributions is assert_attributions
        assert quantus.helpers.asserts.assert_attributions is assert_attributions
    assert quantus.helpers.asserts.assert_attributions is original


@pytest.mark.parametrize("name", list(_metrics()))
def test_multichannel_series_are_scored_on_both_routes(name):
    # Quantus cannot place (C, T) attributions on (C, 1, T) inputs; a series is shown to it as a one-channel
    # (1, C, T) image. BasicMotions: real 6-channel series (accelerometer and gyroscope).
    x = lfeval.data.load("ucr:BasicMotions").x_test[:24].numpy()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(x.shape[1], 4, 5), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * (x.shape[-1] - 4), 6)).eval()
    enc = lfeval.encoder.as_encoder(net, modality="time_series", inputs=torch.as_tensor(x[:1]))
    a = lfeval.explain(enc, x, method="Saliency")
    make = {"PixelFlipping": lambda: quantus.PixelFlipping(features_in_step=x.shape[-1] // 4, disable_warnings=True),
            "FaithfulnessCorrelation": _metrics()["FaithfulnessCorrelation"]}[name]
    out = {}
    for batched in (True, False):
        np.random.seed(1)
        out[batched] = np.asarray(LabelFree(make(), batched=batched)(enc, x, a_batch=a, batch_size=8))
    np.testing.assert_allclose(out[True], out[False], rtol=1e-5, atol=1e-6)
    assert out[True].shape[0] == len(x) and np.std(out[True]) > 0
