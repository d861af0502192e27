"""The metrics ``lfeval run`` can score with: how each is built, what it scores, what it means.

Every entry builds a fresh metric for one encoder from a :class:`MetricContext`; ``metric_params``
in the run's config override the defaults below (keyword arguments of the metric's constructor;
for adapted stock metrics, of the stock Quantus class, plus ``similarity`` for the adapter).
Defaults are scaled to the number of input features F, so 8x8 digits and 28x28 MNIST both get a
sensible number of perturbation steps.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..errors import InvalidArgument

FEATURES, EXAMPLES = "features", "examples"


@dataclass
class MetricContext:
    """What a metric needs to be built for one encoder of a run."""

    n_features: int  # features per input (pixels for images, entries otherwise)
    seed: int
    fractions: list  # RepresentationShift mask fractions
    counts: list  # SimilarityRate M values
    y_train: np.ndarray  # labels of the example-importance columns (scoring only)
    references: dict = field(default_factory=dict)  # {pretext: encoder} of the other pretext tasks
    explain_func: Callable = None  # feature explain function (a PrecomputedExplanations)
    example_explain_func: Callable = None  # example-importance explain function


@dataclass(frozen=True)
class MetricEntry:
    """One metric of the registry: the kinds of explanation it scores, a builder, a short text."""

    kinds: tuple
    build: Callable  # (ctx, kind, params) -> metric
    text: str
    #: True for lfeval's own label-free metrics and adapted stock ones (meta-evaluated by default)
    label_free: bool = True
    #: "lfeval.<Class>" or "quantus.<Class>": the constructor ``metric_params`` go to
    target: str = ""
    #: wrapped in lfeval.metrics.LabelFree (which takes ``similarity``)
    adapted: bool = False


def _steps(ctx: MetricContext, n: int = 16) -> int:
    """Features per perturbation step so that a curve has about ``n`` steps and F is a multiple."""
    step = max(1, ctx.n_features // n)
    while ctx.n_features % step:
        step -= 1
    return step


def _representation_shift(ctx, kind, params):
    from ..metrics import RepresentationShift

    return RepresentationShift(**{"fractions": ctx.fractions, "seed": ctx.seed, **params})


def _pretext_correlation(ctx, kind, params):
    from ..metrics import PretextCorrelation

    func = ctx.explain_func if kind == FEATURES else ctx.example_explain_func
    return PretextCorrelation(references=ctx.references, **{"explain_func": func, "explanations": kind, **params})


def _similarity_rate(contrast: bool):
    def build(ctx, kind, params):
        from ..metrics import SimilarityRate

        return SimilarityRate(ctx.y_train, **{"M": ctx.counts, "contrast": contrast, **params})

    return build


def _adapted(name: str, defaults: Callable, text: str) -> MetricEntry:
    """A stock Quantus faithfulness metric scored on g_x through :class:`lfeval.metrics.LabelFree`."""

    def build(ctx, kind, params):
        import quantus

        from ..metrics import LabelFree

        params = dict(params)
        similarity = params.pop("similarity", None)
        metric = getattr(quantus, name)(**{"disable_warnings": True, **defaults(ctx), **params})
        return LabelFree(metric, similarity=similarity)

    return MetricEntry((FEATURES,), build, text, target=f"quantus.{name}", adapted=True)


def _stock(name: str, text: str, defaults: Optional[dict] = None) -> MetricEntry:
    """A stock Quantus metric that never reads a label (used as it is)."""

    def build(ctx, kind, params):
        import quantus

        return getattr(quantus, name)(**{"disable_warnings": True, **(defaults or {}), **params})

    return MetricEntry((FEATURES,), build, text, label_free=False, target=f"quantus.{name}")


_ROBUST = {"nr_samples": 10}  # Quantus' 200 explanations per sample cost minutes on CPU
_STABILITY = {**_ROBUST, "return_nan_when_prediction_changes": False}  # an encoder has no prediction to keep

REGISTRY = {
    "RepresentationShift": MetricEntry((FEATURES,), _representation_shift, (
        "Label-free feature consistency (paper §4.1): mask the top-M features by |attribution| with the "
        "baseline and measure ||f(x) - f(x_M)||²; the score is the normalised area under that curve over "
        "the mask fractions. Higher = the attribution finds the features the representation uses."),
        target="lfeval.RepresentationShift"),
    "PretextCorrelation": MetricEntry((FEATURES, EXAMPLES), _pretext_correlation, (
        "Pretext sensitivity (paper §4.2): Pearson correlation of an explanation with the same method's "
        "explanation of the encoders trained on the other pretext tasks, per sample. Higher = the explanation "
        "reflects the input more than the pretext task. An explanation that ignores the model (Random depends on "
        "the input only) scores 1, so read it next to the faithfulness metrics."), target="lfeval.PretextCorrelation"),
    "SimilarityRate": MetricEntry((EXAMPLES,), _similarity_rate(False), (
        "Label-free example consistency (paper §4.1): share of the top-M training examples that have the "
        "test example's label, averaged over M. Labels only score; they never explain."),
        target="lfeval.SimilarityRate"),
    "SimilarityContrast": MetricEntry((EXAMPLES,), _similarity_rate(True), (
        "Top-M minus bottom-M similarity rate, the paper's contrast between the most and the least important "
        "examples. Higher = the ranking separates same-class from other-class examples."),
        target="lfeval.SimilarityRate"),
    "PixelFlipping": _adapted("PixelFlipping", lambda c: {"features_in_step": _steps(c)}, (
        "Stock Quantus PixelFlipping scored label-free through lfeval.metrics.LabelFree: features are removed "
        "most important first while g_x(x') = <f(x), f(x')> is tracked; the mean of that curve, lower = faster "
        "drop = more faithful.")),
    "FaithfulnessCorrelation": _adapted("FaithfulnessCorrelation", lambda c: {
        "nr_runs": 50, "subset_size": max(1, c.n_features // 8), "return_aggregate": False}, (
        "Stock Quantus FaithfulnessCorrelation on g_x: correlation between the attribution mass of random "
        "feature subsets and the drop of g_x when they are masked. Higher = more faithful.")),
    "FaithfulnessEstimate": _adapted("FaithfulnessEstimate", lambda c: {"features_in_step": _steps(c)}, (
        "Stock Quantus FaithfulnessEstimate on g_x: correlation of the attributions with the drop of g_x as "
        "features are removed step by step. Higher = more faithful.")),
    "MonotonicityCorrelation": _adapted("MonotonicityCorrelation", lambda c: {
        "features_in_step": _steps(c), "nr_samples": 5}, (
        "Stock Quantus MonotonicityCorrelation on g_x: Spearman correlation of |attribution| with the variance "
        "of g_x when each step's features are perturbed. Higher = more faithful.")),
    "Selectivity": _adapted("Selectivity", lambda c: {"patch_size": 2}, (
        "Stock Quantus Selectivity on g_x: 2x2 patches removed most important first; the mean of the curve, "
        "lower = faster drop = more faithful.")),
    "RegionPerturbation": _adapted("RegionPerturbation", lambda c: {"patch_size": 2, "regions_evaluation": 8}, (
        "Stock Quantus RegionPerturbation (MoRF, AOPC) on g_x: the drop of g_x as 2x2 regions are perturbed most "
        "important first; lfeval corrects its direction, higher = bigger drop = more faithful.")),
    "ROAD": _adapted("ROAD", lambda c: {"percentages": [10, 30, 50, 70, 90]}, (
        "Stock Quantus ROAD on the encoder: is f(x') still closest to f(x) among the batch after the top features "
        "are imputed (noisy linear imputation)? The area of that curve over the removed percentages; lower = "
        "more faithful.")),
    "Infidelity": _adapted("Infidelity", lambda c: {"n_perturb_samples": 10, "perturb_patch_sizes": [2]}, (
        "Stock Quantus Infidelity on g_x: squared error between attribution-weighted perturbations and the "
        "change of g_x. Lower = more faithful.")),
    "Sparseness": _stock("Sparseness", "Stock Quantus Sparseness (Gini index of |attribution|). Higher = sparser."),
    "Complexity": _stock("Complexity", (
        "Stock Quantus Complexity (entropy of the attribution distribution). Lower = simpler.")),
    "MaxSensitivity": _stock("MaxSensitivity", (
        "Stock Quantus MaxSensitivity: the largest change of the explanation under uniform input noise "
        "(10 draws). Lower = more robust."), _ROBUST),
    "AvgSensitivity": _stock("AvgSensitivity", (
        "Stock Quantus AvgSensitivity: the mean change of the explanation under uniform input noise "
        "(10 draws). Lower = more robust."), _ROBUST),
    "RelativeInputStability": _stock("RelativeInputStability", (
        "Stock Quantus RelativeInputStability: change of the explanation relative to the change of the input "
        "(10 draws). Lower = more stable."), _STABILITY),
    "RelativeRepresentationStability": _stock("RelativeRepresentationStability", (
        "Stock Quantus RelativeRepresentationStability: change of the explanation relative to the change of the "
        "encoder's internal representations (10 draws), with return_nan_when_prediction_changes=False as an "
        "encoder has no prediction to keep. Lower = more stable."), _STABILITY),
}
FEATURE_METRICS = tuple(n for n, e in REGISTRY.items() if FEATURES in e.kinds)
EXAMPLE_METRICS = tuple(n for n, e in REGISTRY.items() if EXAMPLES in e.kinds)


def check_params(name: str, params: dict) -> None:
    """Refuse a parameter the metric's constructor does not take, naming the valid ones."""
    entry = REGISTRY[name]
    library, cls_name = entry.target.split(".")
    module = importlib.import_module("lfeval.metrics" if library == "lfeval" else "quantus")
    cls = getattr(module, cls_name)
    valid = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
    if entry.adapted:
        valid.add("similarity")
    if not isinstance(params, dict):
        raise InvalidArgument(f"metric_params[{name!r}] must be a table of parameters, got {params!r}.")
    for key in sorted(set(params) - valid):
        close = difflib.get_close_matches(key, sorted(valid), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InvalidArgument(f"metric_params[{name!r}] has unknown parameter {key!r}.{hint} {cls_name} takes: "
                              f"{', '.join(sorted(valid))}.")


def build_metric(name: str, ctx: MetricContext, kind: str, params: Optional[dict] = None):
    """A fresh metric ``name`` for one encoder, scoring explanations of ``kind``."""
    return REGISTRY[name].build(ctx, kind, dict(params or {}))


def direction(metric) -> str:
    """``"higher"`` or ``"lower"``: which scores are better (Quantus' ScoreDirection, as corrected by lfeval)."""
    value = getattr(metric.score_direction, "value", metric.score_direction)
    return str(value).lower()
