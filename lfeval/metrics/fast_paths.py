"""Stock Quantus metrics, same numbers, less overhead: what the label-free wrappers run instead of two costs
of Quantus 0.6.0 that are not the metric's work.

1. **The no-change check.** Faithfulness and robustness metrics call
   ``quantus.helpers.warn.warn_perturbation_caused_no_change`` (``np.allclose`` on every perturbed sample, at
   every step), even when the metric's ``disable_warnings`` is True, the default outside GitHub Actions.
   That check took 8 of the 11 s of LabelFree(PixelFlipping) and 26 of the 49 s of
   LabelFree(FaithfulnessCorrelation) in a meta-evaluation. :func:`skip_silenced_checks` skips it while a
   metric whose warnings are disabled runs: the warning it would raise is the one Quantus promises not to
   show. It only ever warns, so no number changes.
2. **One forward pass per step.** PixelFlipping predicts once per flipping step and FaithfulnessCorrelation
   once per run, each on the batch. :data:`BATCHED` holds their ``evaluate_batch`` with the same
   perturbations, drawn in the same order from the same ``np.random`` stream, and one prediction over all
   steps (in chunks of :data:`ROWS`). The scores equal the stock ones to float noise (rows of a larger
   batch), which tests/test_fast_paths.py checks, together with the random state after the call.
"""

from __future__ import annotations

import contextlib
import math
import threading

import numpy as np
import quantus

from ..memory import rows_per_pass

#: rows per prediction of the batched paths (fewer for large inputs: :func:`lfeval.memory.rows_per_pass`)
ROWS = 4096

_lock = threading.Lock()
_depth = 0
_original = None


def _no_check(x, x_perturbed) -> None:
    return None


@contextlib.contextmanager
def skip_silenced_checks(metric):
    """While ``metric`` runs with its warnings disabled, skip Quantus' no-change check (it can only warn)."""
    global _depth, _original
    if not getattr(metric, "disable_warnings", False):
        yield
        return
    warn = quantus.helpers.warn
    with _lock:
        if _depth == 0:
            _original = warn.warn_perturbation_caused_no_change
            warn.warn_perturbation_caused_no_change = _no_check
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                warn.warn_perturbation_caused_no_change = _original


def _predict_rows(model, inputs: list, y_batch) -> np.ndarray:
    """``model.predict`` of every array in ``inputs`` (each a batch of the same samples), read at ``y_batch``:
    (len(inputs), batch)."""
    batch = len(inputs[0])
    stacked = np.concatenate(inputs)
    step = rows_per_pass(stacked[0].size, ROWS, device=model.get_model())  # CPU: 4096 digits, 27 224x224 RGB
    out = np.concatenate([model.predict(stacked[i:i + step]) for i in range(0, len(stacked), step)])
    return out.reshape(len(inputs), batch, -1)[:, np.arange(batch), y_batch]


def pixel_flipping(metric, model, x_batch, y_batch, a_batch, **kwargs):
    """quantus.PixelFlipping.evaluate_batch (0.6.0), predicting all flipping steps at once."""
    if x_batch.shape != a_batch.shape:
        a_batch = np.broadcast_to(a_batch, x_batch.shape)
    batch_size = a_batch.shape[0]
    a_batch = a_batch.reshape(batch_size, -1)
    a_indices = np.argsort(-a_batch, axis=1)
    steps = math.ceil(a_batch.shape[-1] / metric.features_in_step)
    x_perturbed, inputs = x_batch.copy(), []
    for step in range(steps):
        a_ix = a_indices[:, step * metric.features_in_step:(step + 1) * metric.features_in_step]
        x_perturbed = metric.perturb_func(arr=x_perturbed.reshape(batch_size, -1), indices=a_ix)
        x_perturbed = x_perturbed.reshape(*x_batch.shape)
        inputs.append(model.shape_input(x_perturbed, x_batch.shape, channel_first=True, batched=True))
    preds = _predict_rows(model, inputs, y_batch).T  # (batch, steps)
    if metric.return_auc_per_sample:
        return quantus.helpers.utils.calculate_auc(preds, batched=True).tolist()
    return preds.tolist()


def faithfulness_correlation(metric, model, x_batch, y_batch, a_batch, **kwargs):
    """quantus.FaithfulnessCorrelation.evaluate_batch (0.6.0), predicting all runs at once."""
    if x_batch.shape != a_batch.shape:
        a_batch = np.broadcast_to(a_batch, x_batch.shape)
    batch_size = a_batch.shape[0]
    a_batch = a_batch.reshape(batch_size, -1)
    n_features = a_batch.shape[-1]
    inputs = [model.shape_input(x_batch, x_batch.shape, channel_first=True, batched=True)]
    att_sums = []
    for _ in range(metric.nr_runs):  # the same np.random draws, in the same order, as the stock loop
        a_ix = np.stack([np.random.choice(n_features, metric.subset_size, replace=False) for _ in range(batch_size)])
        x_perturbed = metric.perturb_func(arr=x_batch.reshape(batch_size, -1), indices=a_ix).reshape(*x_batch.shape)
        inputs.append(model.shape_input(x_perturbed, x_batch.shape, channel_first=True, batched=True))
        att_sums.append(a_batch[np.arange(batch_size)[:, None], a_ix].sum(axis=-1))
    preds = _predict_rows(model, inputs, y_batch)
    pred_deltas = (preds[0][None, :] - preds[1:]).T  # (batch, runs)
    return metric.similarity_func(a=np.stack(att_sums, axis=1), b=pred_deltas, batched=True).tolist()


#: stock metric class -> its batched evaluate_batch(metric, model, x_batch, y_batch, a_batch)
BATCHED = {quantus.PixelFlipping: pixel_flipping, quantus.FaithfulnessCorrelation: faithfulness_correlation}


def batched_evaluate(metric):
    """The batched ``evaluate_batch`` of a stock metric (exactly its class, not a subclass), or None."""
    return BATCHED.get(type(metric))


__all__ = ["skip_silenced_checks", "batched_evaluate", "BATCHED", "ROWS"]
