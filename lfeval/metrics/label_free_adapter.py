"""``LabelFree``: score stock Quantus faithfulness metrics on an encoder, through g_x.

Stock metrics read ``model.predict(x')[:, y]``, a class logit. An encoder has none, so they are
silently wrong on it (they index latent units as if they were classes). The adapter presents the
encoder as a model whose output column j, for any perturbed input x', is the label-free score of Crabbé & van der Schaar
(2022, Eq. 2) against sample j of the batch:

    out(x')_j = s(f(x_j), f(x'))     s = <.,.> ("inner", the paper's g_x), -||.-.||^2 or cosine

and calls the metric with ``y_batch = arange(N)``. Quantus pairs ``y_batch[i]`` with ``x_batch[i]``
wherever it perturbs, reshapes, batches or loops, so each perturbed row of sample i is scored
against f(x_i): the pairing rides on the convention every label-based metric already follows.
Scores are computed in torch on whole batches ((rows, d) @ (d, N)).

Removed features take the encoder's masking baseline (:meth:`lfeval.Encoder.baseline_for`: the data
set's, e.g. the blur of the image for CIFAR-10), the same one RepresentationShift masks with, for
every metric that removes features by baseline replacement and was left at Quantus' default
``perturb_baseline="black"`` (``baseline="metric"`` keeps Quantus' own).

Two Quantus 0.6.0 slips are corrected on the way: ROAD and SensitivityN keep only the first
batch's results (``evaluation_scores[0]``), so the adapter runs them on the whole batch at once;
and curve metrics are summarised per sample so ``quantus.evaluate`` aggregates a number per sample. How each stock
metric is adapted (its summary, similarities, direction fix, fitness for token ids) is its row of
:data:`lfeval.metrics.catalogue.STOCK`; this module registers the stock metrics' catalogue entries, since they are
built through :class:`LabelFree`.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Callable, Optional

import numpy as np
import quantus
import torch
import torch.nn.functional as F

from ..encoder import check_model
from ..errors import InvalidArgument, InvalidInput, NotAdaptable
from ..explain.features import explain
from ..memory import encode_chunks
from ..precision import precise
from ..validation import check_choice, check_inputs, check_positive_int, to_numpy
from .catalogue import ADAPTABLE, SIMILARITIES, STOCK, StockMetric, register_metric
from .fast_paths import batched_evaluate, quick_checks

#: metrics that read only attributions and segmentation masks: label-free once s_batch is given
#: (lfeval.evaluate refuses them without s_batch too)
NEEDS_MASKS = frozenset({
    "PointingGame", "AttributionLocalisation", "TopKIntersection", "RelevanceRankAccuracy",
    "RelevanceMassAccuracy", "AUC", "Focus",
})
#: metrics that keep only the first batch's results in Quantus 0.6.0: run on the whole batch
WHOLE_BATCH = frozenset(name for name, row in ADAPTABLE.items() if row.whole_batch)


def check_attribution_shape(a_shape: tuple, x_shape: tuple, name: str = "a_batch") -> None:
    """Raise :class:`InvalidInput` unless attributions of shape ``a_shape`` fit inputs of shape ``x_shape`` (both
    (N, ...), in the layout Quantus sees) by Quantus 0.6.0's rule (``helpers.asserts.assert_attributions`` after
    ``utils.expand_attribution_channel`` and ``utils.infer_attribution_axes``): no more axes than the inputs, and
    the sample axes other than those of size 1 are a leading or trailing run of the inputs' sample axes that
    tells its place (unique among the inputs' runs, or, with as many axes as the inputs, among the attributions'
    own), so (N, 1, H, W) fits (N, 3, H, W) inputs and (N, W) does not fit (N, 1, W, W)."""
    a_full, x_dims = list(a_shape[1:]), list(x_shape[1:])
    a_dims = [d for d in a_full if d != 1]
    k = len(a_dims)

    def runs(seq):
        return [seq[i:i + k] for i in range(len(seq) - k + 1)]

    placed = a_dims == x_dims or runs(x_dims).count(a_dims) == 1 or (
        len(a_shape) == len(x_shape) and runs(a_full).count(a_dims) == 1 and a_dims in runs(x_dims))
    fits = (len(a_shape) <= len(x_shape) and 0 < k <= len(x_dims) and placed
            and (a_dims[0] == x_dims[0] or a_dims[-1] == x_dims[-1]))
    if not fits:
        raise InvalidInput(
            f"`{name}` has per-sample shape {tuple(a_shape[1:])}, which does not fit x_batch's {tuple(x_shape[1:])}: "
            f"attributions need x_batch's shape {tuple(x_shape)} (axes of size 1, such as a single channel, may "
            "stand for any size). Recompute them on x_batch, e.g. with lfeval.explain."
        )


def check_features_in_step(metric, x_shape: tuple, name: str | None = None) -> None:
    """Raise :class:`InvalidArgument` unless the metric's ``features_in_step`` (PixelFlipping, FaithfulnessEstimate,
    MonotonicityCorrelation, SensitivityN) is a positive integer that divides the features per channel of inputs of
    shape ``x_shape`` (N, C, ...), in the layout Quantus sees (``helpers.asserts.assert_features_in_step``).
    ``metric`` may be the metric or its ``features_in_step`` value (then ``name`` names the metric)."""
    step = metric if isinstance(metric, (int, np.integer, float)) else getattr(metric, "features_in_step", None)
    if step is None:
        return
    name = name or type(metric).__name__
    try:
        step = check_positive_int(step, "features_in_step")
    except InvalidArgument as error:
        raise InvalidArgument(f"{name}'s {error}") from None
    if x_shape is None:
        return
    n = int(np.prod(x_shape[2:]))
    if n % step:
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        shown = ", ".join(map(str, divisors[:12])) + (", ..." if len(divisors) > 12 else "")
        raise InvalidArgument(
            f"{name}'s `features_in_step`={step} must divide the {n} features per channel of the inputs (shape "
            f"{tuple(x_shape[1:])} as Quantus sees them); use a divisor of {n}: {shown}."
        )


def _direction(metric, spec: StockMetric):
    """The metric's score direction as a Quantus ScoreDirection (corrected where Quantus' is wrong)."""
    if spec.direction is None:
        return metric.score_direction
    return quantus.helpers.enums.ScoreDirection(spec.direction(metric))


BASELINES = ("encoder", "metric")


class BaselineReplacement:
    """A Quantus ``perturb_func`` (``arr`` (B, F), ``indices`` (B, k)) that replaces features with the
    encoder's baseline rows of the current Quantus batch (:meth:`select` sets them from the sample ids).

    Patch metrics (Selectivity, RegionPerturbation, Infidelity) perturb inputs padded to a multiple of the
    patch size (Quantus' ``get_padding_size``, last two axes); the baseline is placed inside the same
    padded grid (the padding is cropped away after each step, so its value does not matter).
    """

    def __init__(self, baselines: np.ndarray, patch_sizes=()):
        self.baselines = baselines  # (N, C, H, W), the layout Quantus sees
        self.patch_sizes = tuple(int(p) for p in np.atleast_1d(patch_sizes))
        self.current = baselines

    def select(self, ids) -> None:
        self.current = self.baselines[np.asarray(ids, dtype=int)]

    def _rows(self, n_features: int) -> np.ndarray:
        b = self.current
        if b[0].size == n_features:
            return b.reshape(len(b), -1)
        for p in self.patch_sizes:
            pad_h, pad_w = (quantus.helpers.utils.get_padding_size(d, p) for d in b.shape[-2:])
            padded = np.pad(b, ((0, 0), (0, 0), pad_h, pad_w))
            if padded[0].size == n_features:
                return padded.reshape(len(b), -1)
        raise InvalidArgument(f"The metric perturbs inputs of {n_features} features, which matches neither the "
                              f"encoder's inputs {b.shape[1:]} nor their padding to its patch sizes; pass "
                              "LabelFree(..., baseline='metric') to use Quantus' own baseline.")

    @staticmethod
    def draw(rows: int, **kwargs) -> None:
        """Quantus' baseline lookup draws a "uniform" candidate on every call; draw it too, so the metric's own
        random choices (FaithfulnessCorrelation's subsets, ...) follow the same np.random stream as stock."""
        np.random.uniform(low=kwargs.get("uniform_low", 0.0), high=kwargs.get("uniform_high", 1.0), size=rows)

    def __call__(self, arr, indices, **kwargs):
        arr = np.asarray(arr)
        self.draw(np.shape(indices)[0], **kwargs)
        out = arr.copy()
        rows = np.arange(len(arr))[:, None]
        out[rows, indices] = self._rows(arr.shape[1])[rows, indices]
        return out

    def replacing(self, x: torch.Tensor):
        """This call's replacement as torch (:mod:`lfeval.metrics.fast_paths`' device path): ``x`` (B, F) on the
        encoder's device -> ``perturb(rows, indices)``, ``x[rows]`` with ``indices`` (len(rows), k) replaced by
        the baseline, the values ``__call__`` gives."""
        base = torch.as_tensor(self._rows(x.shape[1]), device=x.device).to(x.dtype)

        def perturb(rows: slice, indices: torch.Tensor) -> torch.Tensor:
            return x[rows].scatter(1, indices, base[rows].gather(1, indices))

        return perturb


class ReferenceScores(torch.nn.Module):
    """x' (M, ...) -> (M, N): the similarity of f(x') to each reference latent f(x_j), j < N. ``sample_shape``
    reshapes Quantus' image-shaped rows back into the encoder's layout (time series are shown to Quantus as
    (1, C, T) images)."""

    def __init__(self, encoder: torch.nn.Module, z_ref: torch.Tensor, similarity: str, sample_shape=None):
        super().__init__()
        self.encoder, self.similarity = encoder, similarity
        self.sample_shape = None if sample_shape is None else tuple(sample_shape)
        self.register_buffer("z_ref", z_ref)

    def forward(self, x):
        if self.sample_shape is not None:
            x = x.reshape(len(x), *self.sample_shape)
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
    baseline : {"encoder", "metric"}
        What a removed feature becomes, for metrics that remove features by baseline replacement with
        Quantus' default ``perturb_baseline="black"``: the encoder's baseline (default; the one
        RepresentationShift uses) or Quantus' black (the sample's minimum). A metric built with another
        ``perturb_baseline`` ("uniform", "mean", a number) keeps it.
    batched : bool
        PixelFlipping and FaithfulnessCorrelation predict all their steps in one pass (same perturbations,
        same random draws, same scores to float noise; :mod:`lfeval.metrics.fast_paths`). False runs
        Quantus' loop as it is.

    Called like any Quantus metric (``model`` = the encoder, ``y_batch`` is not needed); the
    metric's attributes (``score_direction``, ``abs``, ``normalise``, ...) show through, so the
    adapter also works as a MetaQuantus estimator and in ``quantus.evaluate``.

    >>> import numpy as np, quantus, torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)).eval()
    >>> x = np.random.default_rng(0).random((4, 1, 4, 4)).astype(np.float32)
    >>> metric = LabelFree(quantus.PixelFlipping(features_in_step=4, disable_warnings=True))
    >>> scores = metric(net, x, a_batch=x)               # no y_batch: each sample is scored on its own g_x
    >>> len(scores), metric.score_direction.value
    (4, 'lower')
    """

    def __init__(self, metric, similarity: Optional[str] = None, baseline: str = "encoder", batched: bool = True):
        cls = type(metric).__name__
        if cls not in ADAPTABLE and cls not in NEEDS_MASKS:
            raise NotAdaptable(
                f"{cls} cannot be adapted to encoders. Adaptable metrics: {', '.join(sorted(ADAPTABLE))}; "
                f"with segmentation masks also {', '.join(sorted(NEEDS_MASKS))}. Metrics that never read "
                "model outputs at a label (Sparseness, Complexity, MaxSensitivity, ...) need no adapter."
            )
        check_features_in_step(metric, None)
        self.metric = metric
        spec = ADAPTABLE.get(cls, StockMetric())
        self.similarity = (spec.similarity if similarity is None
                           else check_choice(similarity, SIMILARITIES, "similarity"))
        if self.similarity not in spec.similarities:
            raise InvalidArgument(
                f"{cls} with similarity={self.similarity!r} is ill-defined on encoders (it divides by, or takes "
                f"the argmax of, the score); use one of {spec.similarities}."
            )
        self.summary, self.raw = spec.summary, spec.raw
        self.baseline = check_choice(baseline, BASELINES, "LabelFree baseline")
        if not isinstance(batched, bool):
            raise InvalidArgument(f"`batched` must be True or False, got {batched!r}.")
        self.batched = batched
        self.score_direction = _direction(metric, spec)
        self.name = f"LabelFree({getattr(metric, 'name', cls)})"

    def __getattr__(self, item):
        if item == "metric":
            raise AttributeError(item)
        return getattr(self.metric, item)

    def __repr__(self):
        return f"LabelFree({type(self.metric).__name__}, similarity={self.similarity!r})"

    def score_model(self, encoder: torch.nn.Module, x: torch.Tensor, sample_shape=None) -> ReferenceScores:
        """The encoder seen as an N-output model whose output i is sample i's label-free score."""
        with torch.no_grad():
            z_ref = encode_chunks(encoder, x)
        return ReferenceScores(encoder, z_ref.detach(), self.similarity, sample_shape).eval()

    @staticmethod
    def quantus_layout(encoder, x: torch.Tensor) -> torch.Tensor:
        """Inputs as Quantus' perturbation metrics read them: images (N, C, H, W); time series (N, C, T) as
        one-channel (N, 1, C, T) images (Quantus 0.6.0's patch metrics assume two spatial axes, and it cannot
        place (C, T) attributions on (C, 1, T) inputs); tabular rows as (N, 1, D)."""
        return x.unsqueeze(1) if encoder.modality == "time_series" else x

    def _replaces_with_black(self) -> bool:
        """The metric removes features by baseline replacement, at Quantus' default 'black'."""
        func = getattr(self.metric, "perturb_func", None)  # stock metrics without a perturbation have none
        return (isinstance(func, functools.partial)
                and func.func is quantus.functions.perturb_func.batch_baseline_replacement_by_indices
                and func.keywords.get("perturb_baseline") == "black")

    @contextlib.contextmanager
    def _running(self, encoder, x: torch.Tensor):
        """While scoring: features removed by the metric take the encoder's baseline (see ``baseline``), the
        metric predicts all its steps at once where lfeval has its batched path (``batched``; on the encoder's
        device with the encoder's baseline), and Quantus' slow checks are replaced
        (:mod:`lfeval.metrics.fast_paths`)."""
        metric = self.metric
        replace = None
        if self.baseline == "encoder" and self._replaces_with_black():
            with torch.no_grad():
                baselines = to_numpy(self.quantus_layout(encoder, encoder.baseline_for(x)))
            if baselines.ndim == 3:
                baselines = baselines[:, :, None]
            sizes = getattr(metric, "patch_size", None) or getattr(metric, "perturb_patch_sizes", ())
            replace = BaselineReplacement(baselines, sizes)
        fast = batched_evaluate(metric) if self.batched else None
        if replace is None and fast is None:
            with quick_checks(metric):
                yield
            return
        original = metric.perturb_func
        compute = functools.partial(fast or type(metric).evaluate_batch, metric)

        def evaluate_batch(*args, y_batch=None, **kwargs):  # Quantus passes the batch's sample ids as y_batch
            if replace is not None:
                replace.select(y_batch)
            return compute(*args, y_batch=y_batch, **kwargs)

        if replace is not None:
            metric.perturb_func = replace
        metric.evaluate_batch = evaluate_batch
        try:
            with quick_checks(metric):
                yield
        finally:
            metric.perturb_func = original
            del metric.evaluate_batch

    @precise
    def __call__(self, model, x_batch, y_batch=None, a_batch=None, s_batch=None, channel_first: bool = True,
                 explain_func: Optional[Callable] = None, explain_func_kwargs: Optional[dict] = None,
                 model_predict_kwargs: Optional[dict] = None, softmax: bool = False, device=None,
                 batch_size: int = 64, **kwargs):
        cls = type(self.metric).__name__
        if cls in NEEDS_MASKS and s_batch is None:
            raise InvalidArgument(f"{cls} needs segmentation masks: pass s_batch (same shape as x_batch).")
        model = check_model(model, x_batch)
        batch_size = check_positive_int(batch_size, "batch_size")
        x = model.canonical(check_inputs(x_batch, model, "x_batch"))
        if not model.modality.continuous and not ADAPTABLE.get(cls, StockMetric()).tokens:
            raise NotAdaptable(f"{cls} perturbs inputs with noise, imputed values or image segments; "
                               f"{model.modality.name} inputs are token ids, which have none. Use a metric that "
                               "removes tokens: RepresentationShift or LabelFree of "
                               f"{', '.join(n for n, row in ADAPTABLE.items() if row.tokens and row.text)}.")
        if cls == "ROAD" and len(x) < 2:
            raise InvalidInput("LabelFree(ROAD) asks whether f(x') stays closest to f(x) among the batch: pass at "
                               "least 2 samples (tens for a meaningful rate); one sample is trivially 'unchanged'.")
        if cls == "ROAD" and (model.modality != "image" or x.shape[1] != 1):
            raise NotAdaptable(f"Quantus 0.6.0's ROAD imputes on a single-channel pixel grid and fails on "
                               f"{model.modality.name} inputs of shape {tuple(x.shape[1:])}; use lfeval.metrics.ROAD, "
                               "the label-free ROAD for every modality (equal to this one on grey images).")
        if y_batch is not None:
            warnings.warn(f"{self.name} scores against each sample's own representation; y_batch is ignored.",
                          stacklevel=2)
        if a_batch is None:
            if explain_func is None:
                explain_func = explain
            a_batch = explain_func(model=model, inputs=to_numpy(x), targets=None, **(explain_func_kwargs or {}))
        a = to_numpy(a_batch)
        if a.shape[0] != len(x):
            raise InvalidArgument(f"a_batch has {a.shape[0]} samples, x_batch has {len(x)}.")
        shown = self.quantus_layout(model, x)
        if shown.shape != x.shape and a.shape == tuple(x.shape):
            a = a.reshape(shown.shape)
        check_attribution_shape(a.shape, tuple(shown.shape))
        check_features_in_step(self.metric, tuple(shown.shape))
        if cls in WHOLE_BATCH:
            batch_size = len(x)
        aggregate = self.metric.return_aggregate
        if self.raw:
            self.metric.return_aggregate = False
        try:
            with self._running(model, x):
                scores = self.metric(model=self.score_model(model, x, x.shape[1:]), x_batch=to_numpy(shown),
                                     y_batch=np.arange(len(x)),
                                     a_batch=a, s_batch=s_batch, channel_first=channel_first,
                                     explain_func=explain_func, explain_func_kwargs=explain_func_kwargs or {},
                                     model_predict_kwargs=model_predict_kwargs, softmax=False, device=device,
                                     batch_size=batch_size, **kwargs)
        finally:
            self.metric.return_aggregate = aggregate
        summary = self.summary(scores)
        return summary if isinstance(summary, list) else np.asarray(summary).tolist()


for _name, _row in STOCK.items():  # the stock metrics' catalogue entries, built here where LabelFree is
    if _row.text:
        register_metric(_row.entry(_name, LabelFree))
