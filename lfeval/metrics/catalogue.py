"""The metric catalogue: every metric ``lfeval run`` (and anything else that loops over metrics) can
score with, as one :class:`MetricEntry` each, in the :class:`~lfeval.registry.Registry` :data:`CATALOGUE`.

An entry holds how to build the metric for one encoder (:class:`MetricContext` -> metric), its defaults
(scaled to the number of input features, so 8x8 digits and 28x28 MNIST both get a sensible number of
perturbation steps), a short text for the report, the constructor that ``metric_params`` are checked
against, whether it is a default of ``lfeval run`` and, if the metric exposes per-sample curves
(:meth:`LabelFreeMetric.curve`), how the report titles them. The score direction is read from the built
metric (:func:`lfeval.metrics.score_direction`), never restated; the kinds of explanation it scores and
what it needs from a run (labels, training inputs, reference encoders, real-valued inputs) are read from
the class's flags (:class:`~lfeval.metrics.LabelFreeMetric`).

lfeval's own metrics declare their entry beside their class with :func:`register_metric` as a class
decorator. The stock Quantus metrics are the rows of :data:`STOCK`: how each one is used (adapted through
:class:`~lfeval.metrics.LabelFree` on g_x, or as it is), its defaults, text and fitness for token ids.

Adding a metric is one file: a class with the decorator, or a class and a :class:`MetricEntry`:

>>> import quantus
>>> entry = register_metric(MetricEntry("GiniSparseness", build=lambda ctx, kind, params: quantus.Sparseness(
...     disable_warnings=True, **params), text="Gini index of |attribution|.", target=quantus.Sparseness))
>>> "GiniSparseness" in CATALOGUE
True
>>> _ = CATALOGUE.pop("GiniSparseness")
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import quantus
import torch

from ..errors import InvalidArgument
from ..registry import Registry, closest
from ..validation import check_choice
from .base import EXAMPLES, FEATURES

#: the built-in metrics in the catalogue's order (that of the run's tables and the demo's CSVs); metrics
#: registered by users follow, in the order they are registered
ORDER = (
    "RepresentationShift", "PretextCorrelation", "SimilarityRate", "SimilarityContrast", "PixelFlipping",
    "FaithfulnessCorrelation", "FaithfulnessEstimate", "MonotonicityCorrelation", "Selectivity", "RegionPerturbation",
    "ROAD", "Infidelity", "Sparseness", "Complexity", "MaxSensitivity", "AvgSensitivity", "RelativeInputStability",
    "RelativeRepresentationStability", "RepresentationShiftInsertion", "RepresentationShiftLeRF", "CorpusInsertion",
    "CorpusDeletion", "CorpusMajorityInsertion", "CorpusMajorityDeletion", "LabelFreeSimilarityRate",
    "NeighbourhoodRate", "SimilarityShift", "SimilarityShiftInsertion", "PairCompleteness",
)
#: what a metric may need from a run, and the class flag (:class:`~lfeval.metrics.LabelFreeMetric`) that says so
NEEDS = {"labels": "requires_labels", "training": "requires_training", "references": "requires_references",
         "continuous": "requires_continuous", "pairs": "requires_partners"}
#: the parameters of :class:`~lfeval.metrics.LabelFree` that ``metric_params`` of an adapted metric may set
ADAPTER_PARAMS = ("similarity", "baseline")


@dataclass
class MetricContext:
    """What a metric needs to be built for one encoder of a run."""

    n_features: int  # masking units per input (pixels for images, entries otherwise)
    seed: int
    y_train: Optional[np.ndarray] = None  # labels of the example-importance columns (scoring only)
    x_train: Optional[np.ndarray] = None  # the training inputs (example-importance columns, COCOA's pool)
    references: dict = field(default_factory=dict)  # {name: encoder} of the run's other encoders
    explain_func: Optional[Callable] = None  # feature explain function (a PrecomputedExplanations)
    example_explain_func: Optional[Callable] = None  # example-importance explain function
    patch_size: int = 2  # the modality's patch side for patch-based stock metrics
    encoder: Optional[object] = None  # the lfeval.Encoder the metric will score (for layer choices)
    partners: Optional[np.ndarray] = None  # each explained input's partner b (a run's ``pairs``)


@dataclass(frozen=True)
class CurveSpec:
    """How the report draws a metric's :class:`~lfeval.metrics.Curve`: one panel per encoder, one line
    per method (the first series with a 95% band, the others dashed)."""

    title: str
    xlabel: str
    ylabel: str
    text: str = ""
    ylim: Optional[tuple] = None


def explanation_kinds(cls) -> tuple:
    """The kinds of explanation a metric class scores, from its ``explanations`` flag (feature attributions for
    classes without one, such as stock Quantus metrics)."""
    return tuple(getattr(cls, "explanations", (FEATURES,)))


def run_needs(cls) -> frozenset:
    """What a metric class needs from a run (:data:`NEEDS`), from its flags (none for classes without them)."""
    return frozenset(need for need, flag in NEEDS.items() if getattr(cls, flag, False))


@dataclass(frozen=True)
class MetricEntry:
    """One metric of the catalogue.

    Attributes
    ----------
    name : str
        The catalogue key (config ``metrics``, CSV ``metric`` column).
    build : callable
        ``build(ctx, kind, params) -> metric``: a fresh metric for one encoder; ``params`` are the
        run's ``metric_params[name]`` (override the defaults).
    text : str
        What it scores, for the report (the direction is appended from the metric).
    kinds : tuple
        ``("features",)``, ``("examples",)`` or both; by default the ``target`` class's (:func:`explanation_kinds`).
    target : type or None
        The constructor ``metric_params`` are checked against (and ``extra_params`` it also takes).
    label_free : bool
        lfeval's own label-free metrics and adapted stock ones (False: stock metrics used as they are).
    needs : frozenset
        Run data the metric needs: ``"references"`` (other encoders), ``"labels"`` (scores with labels),
        ``"training"`` (the training inputs, ``MetricContext.x_train``), ``"continuous"`` (real-valued inputs:
        the metric adds noise to them or imputes values, which token ids (text) do not have), ``"pairs"`` (each
        explained input's partner, ``MetricContext.partners``); by default the ``target`` class's (:func:`run_needs`).
    curve : CurveSpec or None
        The report's plot of the metric's per-sample curves.
    default, meta_default : bool
        Among ``lfeval run``'s default ``metrics`` / ``meta_metrics`` (:func:`default_metrics`).
    """

    name: str
    build: Callable
    text: str
    kinds: Optional[tuple] = None
    target: Optional[type] = None
    extra_params: tuple = ()
    label_free: bool = True
    needs: Optional[frozenset] = None
    curve: Optional[CurveSpec] = None
    default: bool = False
    meta_default: bool = False

    def __post_init__(self):
        if self.kinds is None:
            object.__setattr__(self, "kinds", explanation_kinds(self.target))
        if self.needs is None:
            object.__setattr__(self, "needs", run_needs(self.target))
        object.__setattr__(self, "kinds", tuple(self.kinds))
        object.__setattr__(self, "needs", frozenset(self.needs))

    def check_params(self, params) -> None:
        """Refuse a parameter the metric's constructor does not take, naming the closest valid one."""
        if not isinstance(params, dict):
            raise InvalidArgument(f"metric_params[{self.name!r}] must be a table of parameters, got {params!r}.")
        if self.target is None:
            return
        valid = (set(inspect.signature(self.target.__init__).parameters) - {"self", "args", "kwargs"}) | set(
            self.extra_params)
        for key in sorted(set(params) - valid):
            raise InvalidArgument(f"metric_params[{self.name!r}] has unknown parameter {key!r}."
                                  f"{closest(key, sorted(valid))} {self.target.__name__} takes: "
                                  f"{', '.join(sorted(valid))}.")


def _check_entry(name: str, entry) -> None:
    if not isinstance(entry, MetricEntry):
        raise InvalidArgument(f"register_metric needs a MetricEntry, got {type(entry).__name__}.")
    for kind in entry.kinds:
        check_choice(kind, (FEATURES, EXAMPLES), f"kind of metric {entry.name!r}")


class Catalogue(Registry):
    """The metric :class:`~lfeval.registry.Registry`, kept in :data:`ORDER` (the built-in metrics first, whatever
    order their modules were imported in; then the others in registration order)."""

    def __init__(self):
        super().__init__("metric", check=_check_entry)

    def register(self, name: str, *obj):
        """Add (or replace) an entry under ``name`` at its place in :data:`ORDER`; without one, a decorator."""
        if not obj:
            return lambda entry: self.register(name, entry)
        registered = super().register(name, *obj)
        rank = {n: i for i, n in enumerate(ORDER)}
        self._items = dict(sorted(self._items.items(), key=lambda item: rank.get(item[0], len(rank))))
        return registered


#: name -> MetricEntry
CATALOGUE = Catalogue()


def run_arguments(cls, ctx: MetricContext, kind: str) -> dict:
    """The constructor arguments a run supplies to a metric class, by its flags: the training inputs
    (``requires_training``: ``x_train``, and ``y_train`` if it takes them), the labels (``requires_labels``:
    ``y_train``), the reference encoders (``requires_references``: ``references``, and the run's explain
    function of the kind scored, to explain them the same way), the pairs' partners (``requires_partners``:
    ``partners``) and, for a class that scores several kinds, the kind (``explanations``)."""
    takes = inspect.signature(cls.__init__).parameters
    args = {}
    if getattr(cls, "requires_training", False):
        if ctx.x_train is None:
            raise InvalidArgument(f"{cls.__name__} needs the training inputs: pass MetricContext(x_train=...).")
        args["x_train"] = ctx.x_train
    if "y_train" in takes and (getattr(cls, "requires_labels", False) or getattr(cls, "requires_training", False)):
        args["y_train"] = ctx.y_train
    if getattr(cls, "requires_references", False):
        args["references"] = ctx.references
        if "explain_func" in takes:
            args["explain_func"] = ctx.explain_func if kind == FEATURES else ctx.example_explain_func
    if getattr(cls, "requires_partners", False):
        if ctx.partners is None:
            raise InvalidArgument(f"{cls.__name__} scores pair explanations: it needs each explained input's partner "
                                  "(a run's `pairs`, e.g. pairs = \"nearest\"; MetricContext(partners=...)).")
        args["partners"] = ctx.partners
    if len(explanation_kinds(cls)) > 1:
        args["explanations"] = kind
    return args


def class_builder(cls: type, defaults: Optional[Callable] = None) -> Callable:
    """``build(ctx, kind, params)`` of a metric class: the run's data (:func:`run_arguments`), then its
    ``defaults(ctx)``, then the run's parameters."""

    def build(ctx, kind, params):
        return cls(**{**run_arguments(cls, ctx, kind), **(defaults(ctx) if defaults else {}), **params})

    return build


def register_metric(entry=None, *, text: Optional[str] = None, defaults: Optional[Callable] = None,
                    curve: Optional[CurveSpec] = None, default: bool = False, meta_default: bool = False):
    """Add (or replace) a catalogue entry: a :class:`MetricEntry`, or, as a class decorator, the entry of the
    decorated metric class.

    Parameters
    ----------
    entry : MetricEntry, str or None
        An entry to register as it is; or, for the decorator, the catalogue name (default: the class's
        ``name``; stack decorators to register one class under several names).
    text, defaults, curve, default, meta_default
        The decorated class's entry: :class:`MetricEntry`'s ``text``, ``curve``, ``default`` and
        ``meta_default``, and ``defaults(ctx) -> dict`` of constructor arguments for a run. Its builder is
        :func:`class_builder`; its kinds and needs come from the class's flags.

    Returns
    -------
    MetricEntry or callable
        The registered entry, or the decorator (which returns the class unchanged).

    Examples
    --------
    >>> from lfeval.metrics import LabelFreeMetric
    >>> @register_metric(text="The number of samples.", defaults=lambda ctx: {"seed": ctx.seed})
    ... class Count(LabelFreeMetric):
    ...     name = "Count"
    ...     def __init__(self, seed=0, **kwargs):
    ...         super().__init__(**kwargs)
    >>> CATALOGUE["Count"].kinds, CATALOGUE["Count"].needs
    (('features',), frozenset())
    >>> _ = CATALOGUE.pop("Count")
    """
    if isinstance(entry, MetricEntry):
        return CATALOGUE.register(entry.name, entry)
    if entry is not None and not isinstance(entry, str):
        raise InvalidArgument(f"register_metric needs a MetricEntry, got {type(entry).__name__}.")
    if text is None:
        raise InvalidArgument("register_metric as a class decorator needs `text`: what the metric scores.")

    def decorate(cls: type) -> type:
        CATALOGUE.register(entry or cls.name, MetricEntry(
            entry or cls.name, class_builder(cls, defaults), text, target=cls, curve=curve, default=default,
            meta_default=meta_default))
        return cls

    return decorate


def get_entry(name: str) -> MetricEntry:
    """The catalogue entry ``name`` (an unknown name raises :class:`~lfeval.errors.UnknownName`)."""
    return CATALOGUE.get(name)


def build_metric(name: str, ctx: MetricContext, kind: str, params: Optional[dict] = None):
    """A fresh metric ``name`` for one encoder, scoring explanations of ``kind``."""
    return get_entry(name).build(ctx, kind, dict(params or {}))


def metric_names(kind: Optional[str] = None) -> tuple:
    """Catalogue names (of one kind of explanation, if given)."""
    return tuple(n for n, e in CATALOGUE.items() if kind is None or kind in e.kinds)


def default_metrics(meta: bool = False) -> tuple:
    """The default ``metrics`` of ``lfeval run`` (``meta=True``: its default ``meta_metrics``), in catalogue order."""
    return tuple(n for n, e in CATALOGUE.items() if (e.meta_default if meta else e.default))


# ---------------------------------------------------------------------------------------------- stock metrics
def feature_step(ctx: MetricContext, n: int = 16) -> int:
    """Features per perturbation step so that a curve has about ``n`` steps and F is a multiple."""
    step = max(1, ctx.n_features // n)
    while ctx.n_features % step:
        step -= 1
    return step


def tiling_patch(ctx: MetricContext) -> int:
    """Quantus 0.6.0's Infidelity indexes unpadded inputs with padded patches, so its patches must tile both
    spatial axes: the modality's patch for images, single steps for time series (shown to Quantus as 1 x T)."""
    return ctx.patch_size if ctx.encoder is None or ctx.encoder.modality == "image" else 1


def hidden_layers(encoder) -> list:
    """The encoder's leaf layers whose output is one tensor: RelativeRepresentationStability's internal
    representation (Quantus hooks every layer, and a recurrent layer returns a tuple)."""
    return [n for n, m in encoder.named_modules()
            if n and not any(True for _ in m.children()) and not isinstance(m, torch.nn.RNNBase)]


_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz


def mean_curve(scores):
    """Per-sample area under a curve on a uniform [0, 1] grid (trapezoid), for curve metrics."""
    curves = np.asarray(scores, dtype=float)
    if curves.ndim == 1:
        return curves
    return _trapezoid(curves, dx=1.0 / max(curves.shape[1] - 1, 1), axis=1)


def road_auc(scores):
    """ROAD returns {percentage: accuracy over the batch}; its area over percentages (one number)."""
    p = np.array(sorted(scores), dtype=float)
    return [float(_trapezoid([scores[k] for k in sorted(scores)], p / 100.0))]


def identity(scores):
    """The scores as the metric returns them (one per sample)."""
    return scores


def nanmean(scores):
    """SensitivityN: one correlation per n across the batch; n where no sample changed is NaN."""
    return [float(np.nanmean(np.asarray(scores, dtype=float)))]


def region_direction(metric) -> str:
    """RegionPerturbation's curve is f(x) - f(x_perturbed): with MoRF order a bigger drop is better
    (Samek et al. 2017, AOPC); Quantus 0.6.0 declares LOWER regardless of order."""
    return "higher" if getattr(metric, "order", "morf") == "morf" else "lower"


#: g_x's similarities s(f(x_j), f(x')) (:class:`~lfeval.metrics.LabelFree`)
SIMILARITIES = ("inner", "negative_distance", "cosine")
_NONZERO = ("inner", "cosine")  # for metrics that divide by the unperturbed score, which is 0 for -distance


def _no_defaults(ctx: MetricContext) -> dict:
    return {}


@dataclass(frozen=True)
class StockMetric:
    """How lfeval uses one stock Quantus metric on an encoder (a row of :data:`STOCK`).

    Attributes
    ----------
    adapted : bool
        True: it reads the model's output at a label, so it is scored on g_x through
        :class:`~lfeval.metrics.LabelFree`; False: it never reads a label and is used as it is.
    text : str
        What it scores, for the report; empty for a metric that ``LabelFree`` adapts but the catalogue leaves out.
    defaults : callable
        ``defaults(ctx) -> dict`` of constructor arguments for a run (``disable_warnings=True`` is added).
    tokens : bool
        Fit for token ids (text): the metric only removes features by baseline replacement. False for metrics
        that add noise, impute values or segment images (the catalogue's ``needs`` "continuous").
    summary : callable
        The adapter's summary of the metric's output: one number per sample (an area for a curve metric).
    similarities, similarity : tuple, str
        The similarities s of g_x the adapted metric is well defined with, and its default.
    direction : callable or None
        ``direction(metric) -> "higher" | "lower"`` where Quantus 0.6.0 declares the wrong one.
    raw : bool
        The metric aggregates by default (np.mean): the adapter asks for the raw scores to summarise them.
    whole_batch : bool
        Quantus 0.6.0 keeps only its first batch's results: the adapter runs it on the whole batch at once.
    default, meta_default : bool
        Among ``lfeval run``'s default ``metrics`` / ``meta_metrics``.
    """

    adapted: bool = True
    text: str = ""
    defaults: Callable = _no_defaults
    tokens: bool = True
    summary: Callable = identity
    similarities: tuple = SIMILARITIES
    similarity: str = "inner"
    direction: Optional[Callable] = None
    raw: bool = False
    whole_batch: bool = False
    default: bool = False
    meta_default: bool = False

    def entry(self, name: str, adapter: type) -> MetricEntry:
        """The catalogue entry of the Quantus metric ``name``, built through ``adapter`` (``LabelFree``) if adapted."""
        cls = getattr(quantus, name)

        def build(ctx, kind, params):
            params = dict(params)
            options = {k: params.pop(k) for k in ADAPTER_PARAMS if k in params} if self.adapted else {}
            metric = cls(**{"disable_warnings": True, **self.defaults(ctx), **params})
            return adapter(metric, **options) if self.adapted else metric

        return MetricEntry(name, build, self.text, target=cls, extra_params=ADAPTER_PARAMS if self.adapted else (),
                           label_free=self.adapted, needs=frozenset() if self.tokens else frozenset({"continuous"}),
                           default=self.default, meta_default=self.meta_default)


_ROBUST = {"nr_samples": 10}  # Quantus' 200 explanations per sample cost minutes on CPU
_STABILITY = {**_ROBUST, "return_nan_when_prediction_changes": False}  # an encoder has no prediction to keep

#: Quantus metric class name -> how lfeval uses it. The adapted ones: PixelFlipping, Selectivity and
#: RegionPerturbation return one curve per sample (area per sample). ROAD asks whether f(x') is still most similar
#: to f(x_i) among the batch (the label-free "prediction unchanged"), a batch-level curve (its area); argmax of an
#: inner product is not self-retrieval, so it defaults to -distance (the catalogue's ROAD is lfeval's own,
#: :class:`~lfeval.metrics.ROAD`). SensitivityN returns one correlation per n (their mean).
STOCK = {
    "PixelFlipping": StockMetric(summary=mean_curve, default=True, meta_default=True, defaults=lambda c: {
        "features_in_step": feature_step(c)}, text=(
        "Stock Quantus PixelFlipping scored label-free through lfeval.metrics.LabelFree: features are "
        "removed most important first while g_x(x') = <f(x), f(x')> is tracked; the score is the mean of "
        "that curve, and a faster drop is more faithful.")),
    "FaithfulnessCorrelation": StockMetric(default=True, meta_default=True, defaults=lambda c: {
        "nr_runs": 50, "subset_size": max(1, c.n_features // 8), "return_aggregate": False}, text=(
        "Stock Quantus FaithfulnessCorrelation on g_x: correlation between the attribution mass of random "
        "feature subsets and the drop of g_x when they are masked.")),
    "FaithfulnessEstimate": StockMetric(defaults=lambda c: {"features_in_step": feature_step(c)}, text=(
        "Stock Quantus FaithfulnessEstimate on g_x: correlation of the attributions with the drop of g_x as "
        "features are removed step by step.")),
    "MonotonicityCorrelation": StockMetric(similarities=_NONZERO, tokens=False, defaults=lambda c: {
        "features_in_step": feature_step(c), "nr_samples": 5}, text=(
        "Stock Quantus MonotonicityCorrelation on g_x: Spearman correlation of |attribution| with the "
        "variance of g_x when each step's features are perturbed.")),
    "RegionPerturbation": StockMetric(summary=mean_curve, direction=region_direction, defaults=lambda c: {
        "patch_size": c.patch_size, "regions_evaluation": 8}, text=(
        "Stock Quantus RegionPerturbation (MoRF, AOPC) on g_x: the drop of g_x as regions are perturbed most "
        "important first; lfeval corrects Quantus' direction (a bigger drop is better).")),
    "Selectivity": StockMetric(summary=mean_curve, defaults=lambda c: {"patch_size": c.patch_size}, text=(
        "Stock Quantus Selectivity on g_x: patches removed most important first; the score is the mean of "
        "the curve, and a faster drop is more faithful.")),
    "SensitivityN": StockMetric(summary=nanmean, raw=True, whole_batch=True),
    "IROF": StockMetric(similarities=_NONZERO, tokens=False),
    "ROAD": StockMetric(summary=road_auc, similarities=("negative_distance", "cosine"),
                        similarity="negative_distance", tokens=False, whole_batch=True),
    "Infidelity": StockMetric(tokens=False, defaults=lambda c: {
        "n_perturb_samples": 10, "perturb_patch_sizes": [tiling_patch(c)]}, text=(
        "Stock Quantus Infidelity on g_x: squared error between attribution-weighted perturbations and the "
        "change of g_x.")),
    "Sparseness": StockMetric(adapted=False, default=True, text=(
        "Stock Quantus Sparseness: the Gini index of |attribution|.")),
    "Complexity": StockMetric(adapted=False, default=True, text=(
        "Stock Quantus Complexity: the entropy of the attribution distribution.")),
    "MaxSensitivity": StockMetric(adapted=False, tokens=False, default=True, defaults=lambda c: _ROBUST, text=(
        "Stock Quantus MaxSensitivity: the largest change of the explanation under uniform input noise "
        "(10 draws).")),
    "AvgSensitivity": StockMetric(adapted=False, tokens=False, defaults=lambda c: _ROBUST, text=(
        "Stock Quantus AvgSensitivity: the mean change of the explanation under uniform input noise "
        "(10 draws).")),
    "RelativeInputStability": StockMetric(adapted=False, tokens=False, defaults=lambda c: _STABILITY, text=(
        "Stock Quantus RelativeInputStability: change of the explanation relative to the change of the input "
        "(10 draws).")),
    "RelativeRepresentationStability": StockMetric(adapted=False, tokens=False, default=True, defaults=lambda c: {
        **_STABILITY, **({} if c.encoder is None else {"layer_names": hidden_layers(c.encoder)})}, text=(
        "Stock Quantus RelativeRepresentationStability: change of the explanation relative to the change of "
        "the encoder's internal representations (10 draws), with return_nan_when_prediction_changes=False "
        "as an encoder has no prediction to keep.")),
}

#: metric class name -> its adaptation: the :data:`STOCK` rows that :class:`~lfeval.metrics.LabelFree` adapts
ADAPTABLE = {name: row for name, row in STOCK.items() if row.adapted}

__all__ = ["FEATURES", "EXAMPLES", "ORDER", "NEEDS", "MetricContext", "CurveSpec", "MetricEntry", "Catalogue",
           "CATALOGUE", "register_metric", "class_builder", "run_arguments", "explanation_kinds", "run_needs",
           "get_entry", "build_metric", "metric_names", "default_metrics", "StockMetric", "STOCK", "ADAPTABLE",
           "SIMILARITIES", "ADAPTER_PARAMS"]
