"""Stock Quantus metrics, same numbers, less overhead: what the label-free wrappers run instead of three costs
of Quantus 0.6.0 that are not the metric's work.

1. **The no-change check.** Faithfulness and robustness metrics call
   ``quantus.helpers.warn.warn_perturbation_caused_no_change`` (``np.allclose`` on every perturbed sample, at
   every step), even when the metric's ``disable_warnings`` is True, the default outside GitHub Actions.
   That check took 8 of the 11 s of LabelFree(PixelFlipping) and 26 of the 49 s of
   LabelFree(FaithfulnessCorrelation) in a meta-evaluation. :func:`quick_checks` skips it while a
   metric whose warnings are disabled runs: the warning it would raise is the one Quantus promises not to
   show. It only ever warns, so no number changes.
2. **The attribution check.** ``quantus.helpers.asserts.assert_attributions`` asks whether a batch's
   attributions are all equal by building a Python set of every value: 12 s for 256 RGB 224x224 maps on 2 CPU
   cores, most of the 128 s of a ResNet-scale ``lfeval run`` with a near-free encoder (benchmarks/README.md,
   "the host floor of the ResNet-18 job"). :func:`quick_checks` swaps in :func:`assert_attributions`: the same
   asserts with the same messages, that one as a vectorised comparison.
3. **One forward pass per step.** PixelFlipping predicts once per flipping step and FaithfulnessCorrelation
   once per run, each on the batch. :data:`BATCHED` holds their ``evaluate_batch`` with the same
   perturbations, drawn in the same order from the same ``np.random`` stream, and one prediction over all
   steps (in chunks of :data:`ROWS`). When the features are removed with the adapter's baseline replacement
   (the default), the perturbed copies are built and scored as torch on the encoder's device, never as NumPy
   on the host. The scores equal the stock ones to float noise (rows of a larger batch), which
   tests/test_fast_paths.py checks on both routes, together with the random state after the call.
"""

from __future__ import annotations

import contextlib
import math
import threading

import numpy as np
import quantus
import torch

from ..memory import rows_per_pass, run_in_chunks

#: rows per prediction of the batched paths (fewer for large inputs: :func:`lfeval.memory.rows_per_pass`)
ROWS = 4096

_lock = threading.Lock()
_depth = {"warn": 0, "asserts": 0}
_original = {}


def _no_check(x, x_perturbed) -> None:
    return None


def assert_attributions(x_batch, a_batch) -> None:
    """``quantus.helpers.asserts.assert_attributions`` (0.6.0), assert for assert and message for message; its
    ``len(set(a_batch.flatten().tolist())) > 1`` is ``np.any(flat[1:] != flat[0])`` (two NaNs also count as
    different there: ``tolist`` makes a new float object of each)."""
    assert type(a_batch) == np.ndarray, "Attributions 'a_batch' should be of type np.ndarray."  # noqa: E721
    assert np.shape(x_batch)[0] == np.shape(a_batch)[0], (
        "The inputs 'x_batch' and attributions 'a_batch' should include the same number of samples."
        "{} != {}".format(np.shape(x_batch)[0], np.shape(a_batch)[0]))
    assert np.ndim(x_batch) == np.ndim(a_batch), (
        "The inputs 'x_batch' and attributions 'a_batch' should have the same number of dimensions."
        "{} != {}".format(np.ndim(x_batch), np.ndim(a_batch)))
    a_shape = [s for s in np.shape(a_batch)[1:] if s != 1]
    x_shape = [s for s in np.shape(x_batch)[1:]]
    assert a_shape[0] == x_shape[0] or a_shape[-1] == x_shape[-1], (
        "The dimensions of attribution and input per sample should correspond in either the first or last "
        "dimensions, but got shapes {} and {}".format(a_shape, x_shape))
    assert all([a in x_shape for a in a_shape]), (
        "All attribution dimensions should be included in the input dimensions, "
        "but got shapes {} and {}".format(a_shape, x_shape))
    assert all([x_shape.index(a) > x_shape.index(a_shape[i]) for a in a_shape for i in range(a_shape.index(a))]), (
        "The dimensions of the attribution must correspond to dimensions of the input in the same order, "
        "but got shapes {} and {}".format(a_shape, x_shape))
    assert not np.all((a_batch == 0)), (
        "The elements in the attribution vector are all equal to zero, which may cause inconsistent results since "
        "many metrics rely on ordering. Recompute the explanations.")
    assert not np.all((a_batch == 1.0)), (
        "The elements in the attribution vector are all equal to one, which may cause inconsistent results since "
        "many metrics rely on ordering. Recompute the explanations.")
    flat = a_batch.reshape(-1)
    assert bool(np.any(flat[1:] != flat[:1])), (
        "The attributions are uniformly distributed, which may cause inconsistent results since many metrics rely "
        "on ordering.Recompute the explanations.")
    assert not np.all((a_batch < 0.0)), "Attributions should not all be less than zero."


@contextlib.contextmanager
def _swapped(key: str, module, name: str, replacement):
    """``module.name = replacement`` while any holder of ``key`` runs (nested and threaded holders counted)."""
    with _lock:
        if _depth[key] == 0:
            _original[key] = getattr(module, name)
            setattr(module, name, replacement)
        _depth[key] += 1
    try:
        yield
    finally:
        with _lock:
            _depth[key] -= 1
            if _depth[key] == 0:
                setattr(module, name, _original.pop(key))


@contextlib.contextmanager
def quick_checks(metric):
    """While ``metric`` runs: Quantus' attribution check vectorised (:func:`assert_attributions`), and its
    no-change check skipped if the metric's warnings are disabled (it can only warn)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(_swapped("asserts", quantus.helpers.asserts, "assert_attributions", assert_attributions))
        if getattr(metric, "disable_warnings", False):
            stack.enter_context(_swapped("warn", quantus.helpers.warn, "warn_perturbation_caused_no_change",
                                         _no_check))
        yield


def _predict_rows(model, inputs: list, y_batch) -> np.ndarray:
    """``model.predict`` of every array in ``inputs`` (each a batch of the same samples), read at ``y_batch``:
    (len(inputs), batch)."""
    batch = len(inputs[0])
    stacked = np.concatenate(inputs)
    step = rows_per_pass(stacked[0].size, ROWS, device=model.get_model())  # CPU: 4096 digits, 27 224x224 RGB
    out = np.concatenate([model.predict(stacked[i:i + step]) for i in range(0, len(stacked), step)])
    return out.reshape(len(inputs), batch, -1)[:, np.arange(batch), y_batch]


def _on_device(metric, model, x_batch):
    """The torch route: when the metric removes features with the label-free adapter's baseline replacement
    (``perturb_func.replacing``) and predicts with its reference scores (a ``z_ref`` buffer), the perturbed
    copies are built and scored on the encoder's device, never as NumPy on the host (1.85 GB per metric for
    256 RGB 224x224 images and 12 steps). Returns ``(x, perturb)`` or None (Quantus' NumPy route)."""
    replacing = getattr(metric.perturb_func, "replacing", None)
    z_ref = getattr(model.get_model(), "z_ref", None)
    if replacing is None or not isinstance(z_ref, torch.Tensor) or model.model_predict_kwargs:
        return None
    x = torch.as_tensor(np.ascontiguousarray(x_batch), dtype=torch.float32, device=z_ref.device)  # as predict
    x = x.reshape(len(x), -1)
    return x, replacing(x)


@torch.no_grad()
def _predict_copies(model, x: torch.Tensor, shape, y_batch, copy, count: int) -> np.ndarray:
    """Scores at ``y_batch`` of ``count`` perturbed copies of the batch ``x`` (B, F), built by ``copy(i, rows)``
    (rows of copy i) pass by pass on ``x``'s device (smaller passes on an out-of-memory error): (count, B), as
    ``model.predict`` would give them."""
    batch, predict = len(x), model.get_softmax_arg_model()  # what model.predict calls (softmax rule included)
    ids = torch.as_tensor(np.asarray(y_batch), device=x.device)

    def scores(flat: slice) -> torch.Tensor:
        start, stop = flat.start, flat.stop
        rows = torch.cat([copy(i, slice(max(start - i * batch, 0), min(stop - i * batch, batch)))
                          for i in range(start // batch, (stop - 1) // batch + 1)])
        pred = predict(rows.reshape(len(rows), *shape))
        return pred.gather(1, ids[torch.arange(start, stop, device=x.device) % batch, None])[:, 0]

    step = rows_per_pass(x[0].numel(), ROWS, device=x.device)
    return run_in_chunks(scores, count * batch, step).reshape(count, batch).cpu().numpy()


def pixel_flipping(metric, model, x_batch, y_batch, a_batch, **kwargs):
    """quantus.PixelFlipping.evaluate_batch (0.6.0), predicting all flipping steps at once."""
    if x_batch.shape != a_batch.shape:
        a_batch = np.broadcast_to(a_batch, x_batch.shape)
    batch_size = a_batch.shape[0]
    a_batch = a_batch.reshape(batch_size, -1)
    a_indices = np.argsort(-a_batch, axis=1)
    k = metric.features_in_step
    steps = math.ceil(a_batch.shape[-1] / k)
    route = _on_device(metric, model, x_batch)
    if route is not None:
        x, perturb = route
        for _ in range(steps):  # the stock loop's draws, one perturbation per step
            metric.perturb_func.draw(batch_size)
        order = torch.as_tensor(a_indices, device=x.device)
        preds = _predict_copies(model, x, x_batch.shape[1:], y_batch,
                                lambda i, rows: perturb(rows, order[rows, :(i + 1) * k]), steps).T
    else:
        x_perturbed, inputs = x_batch.copy(), []
        for step in range(steps):
            a_ix = a_indices[:, step * k:(step + 1) * k]
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
    route = _on_device(metric, model, x_batch)
    inputs, subsets = [model.shape_input(x_batch, x_batch.shape, channel_first=True, batched=True)], []
    for _ in range(metric.nr_runs):  # the same np.random draws, in the same order, as the stock loop
        a_ix = np.stack([np.random.choice(n_features, metric.subset_size, replace=False) for _ in range(batch_size)])
        subsets.append(a_ix)
        if route is not None:
            metric.perturb_func.draw(batch_size)
            continue
        x_perturbed = metric.perturb_func(arr=x_batch.reshape(batch_size, -1), indices=a_ix).reshape(*x_batch.shape)
        inputs.append(model.shape_input(x_perturbed, x_batch.shape, channel_first=True, batched=True))
    att_sums = [a_batch[np.arange(batch_size)[:, None], a_ix].sum(axis=-1) for a_ix in subsets]
    if route is not None:
        x, perturb = route
        ix = torch.as_tensor(np.stack(subsets), device=x.device)
        preds = _predict_copies(model, x, x_batch.shape[1:], y_batch,
                                lambda i, rows: x[rows] if i == 0 else perturb(rows, ix[i - 1, rows]),
                                metric.nr_runs + 1)
    else:
        preds = _predict_rows(model, inputs, y_batch)
    pred_deltas = (preds[0][None, :] - preds[1:]).T  # (batch, runs)
    return metric.similarity_func(a=np.stack(att_sums, axis=1), b=pred_deltas, batched=True).tolist()


#: stock metric class -> its batched evaluate_batch(metric, model, x_batch, y_batch, a_batch)
BATCHED = {quantus.PixelFlipping: pixel_flipping, quantus.FaithfulnessCorrelation: faithfulness_correlation}


def batched_evaluate(metric):
    """The batched ``evaluate_batch`` of a stock metric (exactly its class, not a subclass), or None."""
    return BATCHED.get(type(metric))


__all__ = ["quick_checks", "assert_attributions", "batched_evaluate", "BATCHED", "ROWS"]
