"""``lfeval.evaluate``: :func:`quantus.evaluate` for encoders, with label-free checks.

It keeps Quantus' call convention (each metric is called with ``model, x_batch, y_batch,
a_batch, s_batch, explain_func, explain_func_kwargs``), but: it refuses stock metrics that
need labels when ``y_batch`` is None, it lets a metric's exception propagate (Quantus prints
and swallows it), a dict entry of ``xai_methods`` means keyword arguments of
:func:`lfeval.explain` for the method of that name (Quantus would call its vanilla
``quantus.explain`` without the method), tabular (N, D) input is accepted, and the result is a
pandas DataFrame of methods x metrics. Inputs are taken in the encoder's layout: a plain module of
tabular rows (N, D) is wrapped as an :class:`lfeval.Encoder` and scored in Quantus' (N, 1, D) layout.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch

from .encoder import check_model
from .errors import InvalidArgument, InvalidInput, LabelsRequired
from .explain.features import explain as lf_explain
from .metrics import NEEDS_MASKS, LabelFree, LabelFreeMetric
from .metrics.fast_paths import quick_checks
from .precision import precise
from .validation import check_inputs, to_numpy

#: stock Quantus metrics that index model outputs with y: they fail, or run with a wrong meaning, on an
#: encoder without labels.
NEEDS_LABELS = frozenset({
    "FaithfulnessCorrelation", "FaithfulnessEstimate", "SensitivityN", "MonotonicityCorrelation", "IROF",
    "Completeness", "RandomLogit", "PixelFlipping", "Monotonicity", "RegionPerturbation", "Selectivity",
    "Infidelity", "ROAD", "Consistency", "Sufficiency", "NonSensitivity", "ContinuityTest",
})


def _check_metric(name: str, metric, y_batch, s_batch) -> None:
    if isinstance(metric, (LabelFreeMetric, LabelFree)):
        return
    cls = type(metric).__name__
    if y_batch is None and cls in NEEDS_LABELS:
        raise LabelsRequired(
            f"Metric {name!r} ({cls}) reads model outputs at label y, which an encoder does not have; with "
            f"y_batch=None use lfeval.metrics.LabelFree(quantus.{cls}(...)) to score it on g_x, or "
            "lfeval.metrics.RepresentationShift for label-free faithfulness."
        )
    if s_batch is None and cls in NEEDS_MASKS:
        raise InvalidArgument(f"Metric {name!r} ({cls}) needs segmentation masks: pass s_batch.")


@precise
def evaluate(metrics: dict, xai_methods: dict, model: torch.nn.Module, x_batch, y_batch=None, s_batch=None,
             agg_func: Callable = np.mean, explain_func_kwargs: Optional[dict] = None,
             call_kwargs: Optional[dict] = None, return_as_df: bool = True, **kwargs):
    """Score label-free explanations of an encoder with several metrics.

    Parameters
    ----------
    metrics : dict
        {name: quantus.Metric}: lfeval's label-free metrics and stock Quantus metrics that are
        meaningful without labels (Sparseness, Complexity, MaxSensitivity, ...).
    xai_methods : dict
        {name: value} where value is a callable explain function (Quantus' signature), a dict of
        keyword arguments for ``lfeval.explain(method=name)``, or a precomputed attribution array.
    model : torch.nn.Module or lfeval.Encoder
        The encoder, in eval mode.
    x_batch : np.ndarray
        Inputs in the encoder's layout: (N, C, H, W), (N, 1, D), (N, T, C), or tabular (N, D).
    y_batch : np.ndarray, optional
        Labels; only metrics that score with labels (SimilarityRate) use them.
    agg_func : callable
        Aggregates each metric's per-sample scores (default: mean).
    call_kwargs : dict, optional
        Extra keyword arguments for every metric call (e.g. ``batch_size``).
    return_as_df : bool
        DataFrame (methods x metrics) if True, else Quantus' nested dict {method: {metric: score}}.

    Examples
    --------
    >>> import numpy as np, quantus, torch, lfeval
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    >>> x = np.random.default_rng(0).random((8, 1, 4, 4)).astype(np.float32)
    >>> df = lfeval.evaluate({"RS": lfeval.metrics.RepresentationShift(), "Sparseness": quantus.Sparseness()},
    ...                      {"Saliency": {}, "Random": {}}, net, x)
    >>> df.shape, list(df.columns)
    ((2, 2), ['RS', 'Sparseness'])
    """
    if not metrics or not xai_methods:
        raise InvalidArgument("Pass at least one metric in `metrics` and one method in `xai_methods`.")
    model = check_model(model, x_batch)
    x = to_numpy(model.canonical(check_inputs(x_batch, model, "x_batch")))
    for name, metric in metrics.items():
        _check_metric(name, metric, y_batch, s_batch)
    efk = dict(explain_func_kwargs or {})
    results = {}
    for method, value in xai_methods.items():
        a, explain_func, kw = _attributions(method, value, model, x, y_batch, efk)
        results[method] = {}
        for name, metric in metrics.items():
            with quick_checks(metric):  # Quantus' slow checks (lfeval.metrics.fast_paths)
                scores = metric(model=model, x_batch=x, y_batch=y_batch, a_batch=a, s_batch=s_batch,
                                explain_func=functools.partial(explain_func) if explain_func else None,
                                explain_func_kwargs=kw, channel_first=True, softmax=False,
                                **{**(call_kwargs or {}), **kwargs})
            results[method][name] = agg_func(scores)
    if not return_as_df:
        return results
    return pd.DataFrame.from_dict(results, orient="index")[list(metrics)]


def _attributions(method: str, value, model, x: np.ndarray, y_batch, efk: dict) -> tuple:
    """``(a_batch, explain_func, explain_func_kwargs)`` of one entry of ``xai_methods`` (see :func:`evaluate`)."""
    if callable(value):
        explain_func, kw = value, {**efk, "method": method}
        a = explain_func(model=model, inputs=x, targets=y_batch, **kw)
    elif isinstance(value, dict):
        explain_func, kw = lf_explain, {**efk, **value, "method": method}
        a = lf_explain(model, x, y_batch, **kw)
    elif isinstance(value, (np.ndarray, torch.Tensor)):
        explain_func, kw = lf_explain, {**efk, "method": method}
        a = to_numpy(value)
        if model.native_shape not in (None, model.input_shape) and a.shape[1:] == model.native_shape:
            a = a.reshape(x.shape)  # attributions in the module's native layout
    else:
        raise InvalidArgument(
            f"xai_methods[{method!r}] must be a callable, a dict of lfeval.explain kwargs or an array, "
            f"got {type(value).__name__}."
        )
    a = np.asarray(a)
    if a.shape[0] != x.shape[0]:
        raise InvalidInput(f"Attributions of {method!r} have {a.shape[0]} samples, x_batch has {x.shape[0]}.")
    return a, explain_func, kw
