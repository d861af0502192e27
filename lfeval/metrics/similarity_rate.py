"""SimilarityRate: label-free example consistency (Crabbé & van der Schaar 2022, §4.1, Fig. 3).

For each test example, take its M most important training examples by an example-importance
matrix; the similarity rate is the fraction of them that share the test example's label. A
good label-free method puts same-class examples on top (high top-M rate) and other-class
examples at the bottom (low bottom-M rate, the paper's contrast).

Labels are used **only to score**, never to explain: the importance matrix comes from the
encoder alone (:func:`lfeval.examples.importance`); ``y_train`` and ``y_batch`` (test labels)
only check whether the retrieved examples share a class.

Quantus fit: the "attribution" is the (n_test, n_train) importance matrix and ``x_batch`` the
test inputs. Pass the matrix as ``a_batch`` (directly, in ``quantus.evaluate`` as a precomputed
array, or in ``lfeval.evaluate`` as an array or a callable such as
``functools.partial(lfeval.examples.explain_func, x_train=x_train)``). Quantus' own checks that
an attribution has the input's shape are skipped for this metric.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import quantus
import torch

from ..errors import InvalidArgument, InvalidInput
from ..validation import as_tensor, check_batch, check_labels
from .base import EXAMPLES, Curve, LabelFreeMetric
from .catalogue import CurveSpec, register_metric
from .functional import similarity_rates

_DT = quantus.helpers.enums.DataType


def example_counts(M, n_train: int) -> np.ndarray:
    """The numbers of training examples M stands for: counts as given (ints), or fractions of ``n_train``
    (floats in (0, 1], rounded, at least 1); shared by the similarity rates (paper §4.1)."""
    try:
        m = np.atleast_1d(np.asarray(M))
    except (TypeError, ValueError):
        m = np.zeros(0)
    if m.ndim != 1 or m.size == 0 or m.dtype.kind not in "iuf" or not np.all(m > 0):  # NaN: not > 0
        raise InvalidArgument(f"`M` must be positive counts (ints) or fractions in (0, 1] (floats), got {M!r}.")
    if m.dtype.kind == "f" and np.any(m > 1):
        raise InvalidArgument(f"`M` mixes counts and fractions or holds a non-integer count: {M!r}. Pass counts "
                              "as ints (e.g. [1, 5, 10]) or fractions of n_train as floats in (0, 1].")
    counts = np.maximum(1, np.round(m * n_train)).astype(int) if m.dtype.kind == "f" else m.astype(int)
    if counts.max() > n_train:
        raise InvalidArgument(f"`M` asks for {counts.max()} examples but there are only n_train={n_train}.")
    return counts


def run_counts(n_train: int) -> list:
    """The values of M (1, 5, 10, 20, 50) that a training set of ``n_train`` examples allows: the run's default."""
    return [m for m in (1, 5, 10, 20, 50) if m <= n_train]


@register_metric("SimilarityContrast", defaults=lambda ctx: {"contrast": True, "M": run_counts(len(ctx.y_train))},
                 default=True, text=(
    "Top-M minus bottom-M similarity rate, the paper's contrast between the most and the least important "
    "examples: how well the ranking separates same-class from other-class examples."))
@register_metric(defaults=lambda ctx: {"contrast": False, "M": run_counts(len(ctx.y_train))}, default=True, text=(
    "Label-free example consistency (paper §4.1): share of the top-M training examples that have the "
    "test example's label, averaged over M. Labels only score; they never explain."), curve=CurveSpec(
    "Same-label rate of the top-M (solid) and bottom-M (dashed) training examples",
    "M (most / least important training examples)", "same-label rate",
    "The paper's Fig. 3: the most important training examples should share the test example's label "
    "(high solid curves) and the least important should not (low dashed curves).", ylim=(0, 1)))
class SimilarityRate(LabelFreeMetric):
    """Same-label rate of the top-M (and bottom-M) training examples per test example.

    Parameters
    ----------
    y_train : array (n_train,)
        Labels of the training examples (columns of the importance matrix).
    M : int, float or sequence
        Counts (ints >= 1) or fractions of n_train (floats in (0, 1]); several values give a curve.
    contrast : bool
        Score top-M rate minus bottom-M rate instead of the top-M rate alone.

    Notes
    -----
    The per-sample score is the top-M rate averaged over the values of M (minus the bottom-M
    rate when ``contrast``). ``rates`` holds the last call's per-sample curves:
    ``{"M": counts, "top": (N, len(M)), "bottom": (N, len(M))}``.

    >>> import numpy as np, torch
    >>> net = torch.nn.Flatten().eval()
    >>> importance = np.array([[0.9, 0.8, 0.1, 0.0], [0.0, 0.2, 0.7, 0.9]], dtype=np.float32)
    >>> metric = SimilarityRate(y_train=[0, 0, 1, 1], M=[1, 2])
    >>> [float(s) for s in metric(net, np.zeros((2, 1, 3)), y_batch=[0, 1], a_batch=importance)]
    [1.0, 1.0]
    """

    name = "SimilarityRate"
    data_applicability = {_DT.IMAGE, _DT.TIMESERIES, _DT.TABULAR}
    score_direction = quantus.helpers.enums.ScoreDirection.HIGHER
    evaluation_category = quantus.helpers.enums.EvaluationCategory.FAITHFULNESS
    requires_labels = True
    explanations = (EXAMPLES,)

    def __init__(self, y_train, M=(1, 5, 10, 20, 50), contrast: bool = False, abs: bool = False,
                 normalise: bool = False, normalise_func: Optional[Callable] = None, normalise_func_kwargs=None,
                 return_aggregate: bool = False, aggregate_func: Optional[Callable] = None,
                 default_plot_func: Optional[Callable] = None, disable_warnings: bool = False,
                 display_progressbar: bool = False, **kwargs):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        if y_train is None:
            raise InvalidArgument("`y_train` is required: the labels of the training examples, used only to score.")
        self.y_train = check_labels(y_train, "y_train")
        self.counts = example_counts(M, len(self.y_train))
        self.contrast = bool(contrast)
        self.rates = None
        self._parts = []

    def _validate_a(self, a_batch, x_batch):
        a = check_batch(as_tensor(a_batch, "a_batch"), "a_batch").cpu().numpy()
        if a.shape != (len(x_batch), len(self.y_train)):
            raise InvalidInput(
                f"`a_batch` must be the (n_test, n_train) = ({len(x_batch)}, {len(self.y_train)}) example-importance "
                f"matrix, got shape {a.shape}."
            )
        return a

    def custom_preprocess(self, **kwargs):
        self._parts = []

    def evaluate_batch(self, model, x_batch, y_batch, a_batch, s_batch=None, **kwargs) -> np.ndarray:
        a = torch.as_tensor(np.asarray(a_batch), dtype=torch.float32)
        if not bool(torch.isfinite(a).all()):
            raise InvalidInput("The example-importance matrix contains NaN/inf.")
        top_rate, bottom_rate = similarity_rates(a, self.y_train, torch.as_tensor(np.asarray(y_batch)), self.counts)
        self._parts.append((top_rate.numpy(), bottom_rate.numpy()))
        score = top_rate.mean(1) - (bottom_rate.mean(1) if self.contrast else 0)
        return score.numpy()

    def custom_postprocess(self, **kwargs):
        if self._parts:
            self.rates = {"M": self.counts, "top": np.concatenate([p[0] for p in self._parts]),
                          "bottom": np.concatenate([p[1] for p in self._parts])}

    def curve(self) -> Curve:
        """The last call's top-M and bottom-M same-label rates over M (paper Fig. 3)."""
        return Curve(x=self.rates["M"], series={"top": self.rates["top"], "bottom": self.rates["bottom"]})
