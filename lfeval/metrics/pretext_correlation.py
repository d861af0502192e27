"""Pretext-task sensitivity of explanations (Crabbé & van der Schaar 2022, §4.2).

:class:`PretextCorrelation` is a per-sample ``quantus.Metric``: how much an explanation of an
encoder agrees with the explanations, by the same method, of reference encoders trained on other
pretext tasks. :func:`pretext_correlation_table` is the paper's table: for every pair of tasks, the
Pearson correlation pooled over all test pixels (features) or over the whole DkNN matrix
(examples), mean ± std over runs.
"""

from __future__ import annotations

import itertools
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import quantus
import torch

from ..encoder import Encoder
from ..errors import InvalidArgument, InvalidInput
from ..explain.examples import importance
from ..explain.features import explain
from ..validation import as_tensor, check_batch, check_choice, check_module
from .base import EXAMPLES, FEATURES, LabelFreeMetric
from .catalogue import register_metric
from .functional import CORRELATIONS, pooled_correlation, rowwise_correlation


def _check_encoders(encoders: Sequence[torch.nn.Module], x: torch.Tensor, what: str) -> None:
    if len(encoders) == 0:
        raise InvalidArgument(f"`{what}` is empty: pass encoders trained on other pretext tasks.")
    for e in encoders:
        check_module(e, what)
    shapes = {e.input_shape for e in encoders if isinstance(e, Encoder) and e.input_shape is not None}
    if len(shapes) > 1:
        raise InvalidInput(f"`{what}` have different input shapes {sorted(shapes)}; train them on the same data.")
    if shapes and tuple(x.shape[1:]) not in shapes:
        raise InvalidInput(f"x has sample shape {tuple(x.shape[1:])}, the encoders expect {shapes.pop()}.")


@register_metric(default=True, text=(
    "Pretext sensitivity (paper §4.2): Pearson correlation of an explanation with the same method's "
    "explanation of the encoders trained on the other pretext tasks, per sample; a high value means the "
    "explanation reflects the input more than the pretext task. An explanation that ignores the model "
    "(Random depends on the input only) scores 1, so read it next to the faithfulness metrics."))
class PretextCorrelation(LabelFreeMetric):
    """Per-sample correlation of ``|a(x; f)|`` with ``|a(x; f_ref)|``, averaged over reference encoders f_ref.

    Parameters
    ----------
    references : dict or list of nn.Module
        Encoders trained on other pretext tasks (eval mode, same input shape as the explained one).
    explain_func : callable, optional
        Quantus explain_func used on the references (default :func:`lfeval.explain`); its
        ``explain_func_kwargs`` (notably ``method``) are those of the call, so the references are
        explained by the same method as ``a_batch``.
    correlation : {"pearson", "spearman"}
    explanations : {"features", "examples"}
        What ``a_batch`` holds: input-shaped feature attributions, or (N, n_train) example-importance
        matrices (rows of the same training examples), e.g. from
        ``functools.partial(lfeval.explain.examples.explain_func, x_train=x_train)`` as ``explain_func``.

    Higher means the explanation reflects the input more than the pretext task. The paper's
    finding (§4.2) is that it is low (about .3-.4 for features on MNIST).
    """

    name = "PretextCorrelation"
    data_applicability = {quantus.helpers.enums.DataType.IMAGE, quantus.helpers.enums.DataType.TIMESERIES,
                          quantus.helpers.enums.DataType.TABULAR}
    score_direction = quantus.helpers.enums.ScoreDirection.HIGHER
    evaluation_category = quantus.helpers.enums.EvaluationCategory.ROBUSTNESS
    explanations = (FEATURES, EXAMPLES)  # one per instance: its `explanations` argument
    requires_references = True

    def __init__(self, references, explain_func: Optional[Callable] = None, explain_func_kwargs: Optional[dict] = None,
                 correlation: str = "pearson", explanations: str = "features", **kwargs):
        super().__init__(**kwargs)
        self.explanations = (check_choice(explanations, (FEATURES, EXAMPLES), "explanations"),)
        refs = list(references.values()) if isinstance(references, dict) else list(references or [])
        if not refs:
            raise InvalidArgument("PretextCorrelation needs reference encoders trained on other pretext tasks.")
        for r in refs:
            check_module(r, "references")
        self.references = refs
        self.reference_explain_func = explain_func
        self.reference_kwargs = dict(explain_func_kwargs or {})
        self.correlation = check_choice(correlation, CORRELATIONS, "correlation")

    def evaluate_batch(self, model, x_batch, y_batch=None, a_batch=None, s_batch=None, **kwargs) -> np.ndarray:
        x = as_tensor(x_batch, "x_batch")
        _check_encoders(self.references, x, "references")
        explain_func = self.reference_explain_func or self.explain_func or explain
        call_kwargs = {**(self.explain_func_kwargs or {}), **self.reference_kwargs}
        a = torch.as_tensor(np.asarray(a_batch), dtype=torch.float32).abs().flatten(1)
        scores = []
        for ref in self.references:
            a_ref = np.asarray(explain_func(model=ref, inputs=x.numpy(), targets=None, **call_kwargs))
            a_ref = torch.as_tensor(a_ref, dtype=torch.float32).abs().reshape(len(x), -1)
            if a_ref.shape != a.shape:
                a_ref = a_ref.reshape(len(x), *np.asarray(a_batch).shape[1:]).flatten(1)
            scores.append(rowwise_correlation(a, a_ref, self.correlation))
        return torch.stack(scores).mean(0).numpy()


def pretext_correlation_table(encoders: dict, x, kind: str = "features", method: Optional[str] = None,
                              seeds: Optional[Sequence[int]] = None, x_train=None, **method_kwargs) -> pd.DataFrame:
    """The §4.2 table: Pearson correlation of explanations between every pair of pretext tasks.

    Parameters
    ----------
    encoders : dict
        ``{task: encoder}`` or ``{task: [encoder_run0, encoder_run1, ...]}`` (one encoder per training
        seed; every task needs the same number of runs).
    x : array (N, ...)
        Test inputs in [0, 1].
    kind : {"features", "examples"}
        features: ``|label-free attributions|`` (default GradientShap, as the paper), pooled over all
        test pixels. examples: the DkNN matrix (test x ``x_train``), pooled over the whole matrix.
    method : str, optional
        Feature method for :func:`lfeval.explain` or example method for
        :func:`lfeval.explain.examples.importance` (defaults "GradientShap" / "dknn").
    seeds : sequence of int, optional
        Seed of the explainer's randomness per run (default 0, 1, ...).

    Returns
    -------
    DataFrame with columns task_a, task_b, mean, std, runs (one row per unordered pair).
    """
    kind = check_choice(kind, ("features", "examples"), "kind")
    if not encoders or len(encoders) < 2:
        raise InvalidArgument("`encoders` needs at least two pretext tasks: {task: encoder or [encoders]}.")
    runs = {t: (list(e) if isinstance(e, (list, tuple)) else [e]) for t, e in encoders.items()}
    n_runs = {len(v) for v in runs.values()}
    if len(n_runs) != 1:
        counts = {t: len(v) for t, v in runs.items()}
        raise InvalidArgument(f"Every task needs the same number of runs, got {counts}.")
    n_runs = n_runs.pop()
    seeds = list(range(n_runs)) if seeds is None else list(seeds)
    if len(seeds) != n_runs:
        raise InvalidArgument(f"`seeds` has {len(seeds)} entries for {n_runs} runs.")
    xt = check_batch(as_tensor(x, "x"), "x")
    if xt.min() < 0 or xt.max() > 1:
        raise InvalidInput(f"x must be scaled into [0, 1] (the paper's setting), got [{xt.min():.3g}, {xt.max():.3g}].")
    _check_encoders([e for v in runs.values() for e in v], xt, "encoders")
    if kind == "examples" and x_train is None:
        raise InvalidArgument("kind='examples' needs `x_train`: the training examples the DkNN scores rank.")

    corr = {pair: [] for pair in itertools.combinations(runs, 2)}
    for r, seed in enumerate(seeds):
        if kind == "features":
            maps = {t: torch.as_tensor(explain(v[r], xt, method=method or "GradientShap", seed=seed,
                                               **method_kwargs)).abs() for t, v in runs.items()}
        else:
            maps = {t: importance(v[r], x_train, xt, method=method or "dknn", **method_kwargs).detach().cpu()
                    for t, v in runs.items()}
        for a, b in corr:
            corr[(a, b)].append(pooled_correlation(maps[a], maps[b]))
    rows = [{"task_a": a, "task_b": b, "mean": float(np.mean(v)), "std": float(np.std(v)), "runs": len(v)}
            for (a, b), v in corr.items()]
    return pd.DataFrame(rows)


def correlation_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """Square task x task matrix of mean correlations (1 on the diagonal), for heatmaps."""
    tasks = list(dict.fromkeys(list(table["task_a"]) + list(table["task_b"])))
    mat = pd.DataFrame(np.eye(len(tasks)), index=tasks, columns=tasks)
    for row in table.itertuples():
        mat.loc[row.task_a, row.task_b] = mat.loc[row.task_b, row.task_a] = row.mean
    return mat
