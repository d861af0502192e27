"""``LabelFree``: score stock Quantus faithfulness metrics on an encoder, through g_x.

Stock metrics read ``model.predict(x')[:, y]``, a class logit. An encoder has none, so they are
silently wrong on it (REFERENCE.md). The adapter presents the encoder as a model whose output
column j, for any perturbed input x', is the label-free score of Crabbé & van der Schaar
(2022, Eq. 2) against sample j of the batch:

    out(x')_j = s(f(x_j), f(x'))     s = <.,.> ("inner", the paper's g_x), -||.-.||^2 or cosine

and calls the metric with ``y_batch = arange(N)``. Quantus pairs ``y_batch[i]`` with ``x_batch[i]``
wherever it perturbs, reshapes, batches or loops, so each perturbed row of sample i is scored
against f(x_i): the pairing rides on the convention every label-based metric already follows.
Scores are computed in torch on whole batches ((rows, d) @ (d, N)).

Two Quantus 0.6.0 slips are corrected on the way: ROAD and SensitivityN keep only the first
batch's results (``evaluation_scores[0]``), so the adapter runs them on the whole batch at once;
and curve metrics are summarised per sample (see :data:`ADAPTABLE`) so ``quantus.evaluate``
aggregates a number per sample.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import as_tensor, check_batch, check_choice, check_eval_mode, model_device
from ..errors import InvalidArgument, NotAdaptable

SIMILARITIES = ("inner", "negative_distance", "cosine")
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz


def _mean_curve(scores):
    """Per-sample area under a curve on a uniform [0, 1] grid (trapezoid), for curve metrics."""
    curves = np.asarray(scores, dtype=float)
    if curves.ndim == 1:
        return curves
    return _trapezoid(curves, dx=1.0 / max(curves.shape[1] - 1, 1), axis=1)


def _road_auc(scores):
    """ROAD returns {percentage: accuracy over the batch}; its area over percentages (one number)."""
    p = np.array(sorted(scores), dtype=float)
    return [float(_trapezoid([scores[k] for k in sorted(scores)], p / 100.0))]


def _identity(scores):
    return scores


def _nanmean(scores):
    """SensitivityN: one correlation per n across the batch; n where no sample changed is NaN."""
    return [float(np.nanmean(np.asarray(scores, dtype=float)))]


@dataclass(frozen=True)
class Spec:
    """How one stock metric is adapted: its output summary, the similarities it supports and the
    similarity used by default, and its score direction when Quantus' metadata is wrong."""

    summary: Callable = _identity
    similarities: tuple = SIMILARITIES
    default: str = "inner"
    direction: Optional[Callable] = None
    #: the metric aggregates by default (np.mean); the adapter needs the raw scores to summarise
    raw: bool = False


_NONZERO = ("inner", "cosine")  # metrics that divide by the unperturbed score, which is 0 for -distance


def _region_direction(metric):
    """RegionPerturbation's curve is f(x) - f(x_perturbed): with MoRF order a bigger drop is better
    (Samek et al. 2017, AOPC); Quantus 0.6.0 declares LOWER regardless of order."""
    return "higher" if getattr(metric, "order", "morf") == "morf" else "lower"


#: metric class name -> its adaptation. PixelFlipping, Selectivity and RegionPerturbation return one
#: curve per sample (area per sample). ROAD asks whether f(x') is still most similar to f(x_i) among
#: the batch (the label-free "prediction unchanged"), a batch-level curve (its area); argmax of an
#: inner product is not self-retrieval, so it defaults to -distance. SensitivityN returns one
#: correlation per n (their mean).
ADAPTABLE = {
    "PixelFlipping": Spec(_mean_curve),
    "FaithfulnessCorrelation": Spec(),
    "FaithfulnessEstimate": Spec(),
    "MonotonicityCorrelation": Spec(similarities=_NONZERO),
    "RegionPerturbation": Spec(_mean_curve, direction=_region_direction),
    "Selectivity": Spec(_mean_curve),
    "SensitivityN": Spec(_nanmean, raw=True),
    "IROF": Spec(similarities=_NONZERO),
    "ROAD": Spec(_road_auc, similarities=("negative_distance", "cosine"), default="negative_distance"),
    "Infidelity": Spec(),
}
#: metrics that read only attributions and segmentation masks: label-free once s_batch is given
NEEDS_MASKS = frozenset({
    "PointingGame", "AttributionLocalisation", "TopKIntersection", "RelevanceRankAccuracy",
    "RelevanceMassAccuracy", "AUC", "Focus",
})
#: metrics that keep only the first batch's results in Quantus 0.6.0: run on the whole batch
WHOLE_BATCH = frozenset({"ROAD", "SensitivityN"})


def _direction(metric, spec: Spec):
    """The metric's score direction as a Quantus ScoreDirection (corrected where Quantus' is wrong)."""
    import quantus

    if spec.direction is None:
        return metric.score_direction
    return quantus.helpers.enums.ScoreDirection(spec.direction(metric))


class ReferenceScores(torch.nn.Module):
    """x' (M, ...) -> (M, N): the similarity of f(x') to each reference latent f(x_j), j < N."""

    def __init__(self, encoder: torch.nn.Module, z_ref: torch.Tensor, similarity: str):
        super().__init__()
        self.encoder, self.similarity = encoder, similarity
        self.register_buffer("z_ref", z_ref)

    def forward(self, x):
        z = self.encoder(x)
        if self.similarity == "inner":
            return z @ self.z_ref.T
        if self.similarity == "cosine":
            return F.normalize(z, dim=1) @ F.normalize(self.z_ref, dim=1).T
        return -torch.cdist(z, self.z_ref).pow(2)


class LabelFree:
    """Wrap a stock Quantus metric so it scores explanations of an encoder without labels.

    Parameters
    ----------
    metric : quantus.Metric
        One of :data:`ADAPTABLE` (or a localisation metric, given ``s_batch``).
    similarity : {"inner", "negative_distance", "cosine"}, optional
        s in out(x')_j = s(f(x_j), f(x')); "inner" is the paper's g_x and the default, except for
        ROAD (-distance). Metrics that divide by the unperturbed score refuse -distance (it is 0).

    Called like any Quantus metric (``model`` = the encoder, ``y_batch`` is not needed); the
    metric's attributes (``score_direction``, ``abs``, ``normalise``, ...) show through, so the
    adapter also works as a MetaQuantus estimator and in ``quantus.evaluate``.
    """

    def __init__(self, metric, similarity: Optional[str] = None):
        cls = type(metric).__name__
        if cls not in ADAPTABLE and cls not in NEEDS_MASKS:
            raise NotAdaptable(
                f"{cls} cannot be adapted to encoders. Adaptable metrics: {', '.join(sorted(ADAPTABLE))}; "
                f"with segmentation masks also {', '.join(sorted(NEEDS_MASKS))}. Metrics that never read "
                "model outputs at a label (Sparseness, Complexity, MaxSensitivity, ...) need no adapter."
            )
        self.metric = metric
        spec = ADAPTABLE.get(cls, Spec())
        self.similarity = spec.default if similarity is None else check_choice(similarity, SIMILARITIES, "similarity")
        if self.similarity not in spec.similarities:
            raise InvalidArgument(
                f"{cls} with similarity={self.similarity!r} is ill-defined on encoders (it divides by, or takes "
                f"the argmax of, the score); use one of {spec.similarities}."
            )
        self.summary, self.raw = spec.summary, spec.raw
        self.score_direction = _direction(metric, spec)
        self.name = f"LabelFree({getattr(metric, 'name', cls)})"

    def __getattr__(self, item):
        if item == "metric":
            raise AttributeError(item)
        return getattr(self.metric, item)

    def __repr__(self):
        return f"LabelFree({type(self.metric).__name__}, similarity={self.similarity!r})"

    def score_model(self, encoder: torch.nn.Module, x: torch.Tensor) -> ReferenceScores:
        """The encoder seen as an N-output model whose output i is sample i's label-free score."""
        with torch.no_grad():
            z_ref = encoder(x.to(model_device(encoder)))
        return ReferenceScores(encoder, z_ref.detach(), self.similarity).eval()

    def __call__(self, model, x_batch, y_batch=None, a_batch=None, s_batch=None, channel_first: bool = True,
                 explain_func: Optional[Callable] = None, explain_func_kwargs: Optional[dict] = None,
                 model_predict_kwargs: Optional[dict] = None, softmax: bool = False, device=None,
                 batch_size: int = 64, **kwargs):
        cls = type(self.metric).__name__
        if cls in NEEDS_MASKS and s_batch is None:
            raise InvalidArgument(f"{cls} needs segmentation masks: pass s_batch (same shape as x_batch).")
        if not isinstance(model, torch.nn.Module):
            raise InvalidArgument(f"`model` must be the encoder (a torch.nn.Module), got {type(model).__name__}.")
        check_eval_mode(model)
        x = check_batch(as_tensor(x_batch, "x_batch"), "x_batch")
        if y_batch is not None:
            warnings.warn(f"{self.name} scores against each sample's own representation; y_batch is ignored.",
                          stacklevel=2)
        if a_batch is None:
            if explain_func is None:
                from ..explain.features import explain as explain_func
            a_batch = explain_func(model=model, inputs=x.numpy(), targets=None, **(explain_func_kwargs or {}))
        a = np.asarray(a_batch.detach().cpu() if isinstance(a_batch, torch.Tensor) else a_batch, dtype=np.float32)
        if a.shape[0] != len(x):
            raise InvalidArgument(f"a_batch has {a.shape[0]} samples, x_batch has {len(x)}.")
        if cls in WHOLE_BATCH:
            batch_size = len(x)
        aggregate = self.metric.return_aggregate
        if self.raw:
            self.metric.return_aggregate = False
        try:
            scores = self.metric(model=self.score_model(model, x), x_batch=x.numpy(), y_batch=np.arange(len(x)),
                                 a_batch=a, s_batch=s_batch, channel_first=channel_first, explain_func=explain_func,
                                 explain_func_kwargs=explain_func_kwargs or {},
                                 model_predict_kwargs=model_predict_kwargs, softmax=False, device=device,
                                 batch_size=batch_size, **kwargs)
        finally:
            self.metric.return_aggregate = aggregate
        summary = self.summary(scores)
        return summary if isinstance(summary, list) else np.asarray(summary).tolist()
