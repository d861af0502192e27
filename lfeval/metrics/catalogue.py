"""The metric catalogue: every metric ``lfeval run`` (and anything else that loops over metrics) can
score with, as one :class:`MetricEntry` each.

An entry holds the kinds of explanation the metric scores (feature attributions, example importance),
how to build it for one encoder (:class:`MetricContext` -> metric), its defaults (scaled to the number
of input features, so 8x8 digits and 28x28 MNIST both get a sensible number of perturbation steps),
a short text for the report, the constructor that ``metric_params`` are checked against and, if the
metric exposes per-sample curves (:meth:`LabelFreeMetric.curve`), how the report titles them. The
score direction is read from the built metric (:func:`lfeval.metrics.score_direction`), never restated.

Adding a metric is one file: a class and :func:`register_metric`:

>>> import quantus
>>> entry = register_metric(MetricEntry("GiniSparseness", build=lambda ctx, kind, params: quantus.Sparseness(
...     disable_warnings=True, **params), text="Gini index of |attribution|.", target=quantus.Sparseness))
>>> "GiniSparseness" in CATALOGUE
True
>>> _ = CATALOGUE.pop("GiniSparseness")
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..errors import InvalidArgument
from ..validation import check_choice

FEATURES, EXAMPLES = "features", "examples"


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


@dataclass(frozen=True)
class CurveSpec:
    """How the report draws a metric's :class:`~lfeval.metrics.Curve`: one panel per encoder, one line
    per method (the first series with a 95% band, the others dashed)."""

    title: str
    xlabel: str
    ylabel: str
    text: str = ""
    ylim: Optional[tuple] = None


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
        ``("features",)``, ``("examples",)`` or both.
    target : type or None
        The constructor ``metric_params`` are checked against (and ``extra_params`` it also takes).
    label_free : bool
        lfeval's own label-free metrics and adapted stock ones (False: stock metrics used as they are).
    needs : frozenset
        Run data the metric needs: ``"references"`` (other encoders), ``"labels"`` (scores with labels),
        ``"training"`` (the training inputs, ``MetricContext.x_train``), ``"continuous"`` (real-valued inputs:
        the metric adds noise to them or imputes values, which token ids (text) do not have).
    curve : CurveSpec or None
        The report's plot of the metric's per-sample curves.
    """

    name: str
    build: Callable
    text: str
    kinds: tuple = (FEATURES,)
    target: Optional[type] = None
    extra_params: tuple = ()
    label_free: bool = True
    needs: frozenset = frozenset()
    curve: Optional[CurveSpec] = None

    def check_params(self, params) -> None:
        """Refuse a parameter the metric's constructor does not take, naming the closest valid one."""
        if not isinstance(params, dict):
            raise InvalidArgument(f"metric_params[{self.name!r}] must be a table of parameters, got {params!r}.")
        if self.target is None:
            return
        valid = (set(inspect.signature(self.target.__init__).parameters) - {"self", "args", "kwargs"}) | set(
            self.extra_params)
        for key in sorted(set(params) - valid):
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise InvalidArgument(f"metric_params[{self.name!r}] has unknown parameter {key!r}.{hint} "
                                  f"{self.target.__name__} takes: {', '.join(sorted(valid))}.")


#: name -> MetricEntry
CATALOGUE: dict = {}


def register_metric(entry: MetricEntry) -> MetricEntry:
    """Add (or replace) a catalogue entry."""
    if not isinstance(entry, MetricEntry):
        raise InvalidArgument(f"register_metric needs a MetricEntry, got {type(entry).__name__}.")
    for kind in entry.kinds:
        check_choice(kind, (FEATURES, EXAMPLES), f"kind of metric {entry.name!r}")
    CATALOGUE[entry.name] = entry
    return entry


def get_entry(name: str) -> MetricEntry:
    return CATALOGUE[check_choice(name, CATALOGUE, "metric")]


def build_metric(name: str, ctx: MetricContext, kind: str, params: Optional[dict] = None):
    """A fresh metric ``name`` for one encoder, scoring explanations of ``kind``."""
    return get_entry(name).build(ctx, kind, dict(params or {}))


def metric_names(kind: Optional[str] = None) -> tuple:
    """Catalogue names (of one kind of explanation, if given)."""
    return tuple(n for n, e in CATALOGUE.items() if kind is None or kind in e.kinds)


# ---------------------------------------------------------------------------------------------- builders
def _steps(ctx: MetricContext, n: int = 16) -> int:
    """Features per perturbation step so that a curve has about ``n`` steps and F is a multiple."""
    step = max(1, ctx.n_features // n)
    while ctx.n_features % step:
        step -= 1
    return step


def _own(cls: type, defaults: Callable = lambda ctx: {}) -> Callable:
    """Builder of an lfeval metric class: its defaults for the context, then the run's parameters."""

    def build(ctx, kind, params):
        return cls(**{**defaults(ctx), **params})

    return build


def _pretext_correlation(ctx, kind, params):
    from .pretext_correlation import PretextCorrelation

    func = ctx.explain_func if kind == FEATURES else ctx.example_explain_func
    return PretextCorrelation(references=ctx.references, **{"explain_func": func, "explanations": kind, **params})


def _counts(n_train: int) -> list:
    """SimilarityRate's M values (1, 5, 10, 20, 50) that a training set of ``n_train`` examples allows."""
    return [m for m in (1, 5, 10, 20, 50) if m <= n_train]


def _similarity_rate(contrast: bool) -> Callable:
    def build(ctx, kind, params):
        from .similarity_rate import SimilarityRate

        return SimilarityRate(ctx.y_train, **{"contrast": contrast, "M": _counts(len(ctx.y_train)), **params})

    return build


def _training(cls: type, defaults: Callable = lambda ctx: {}) -> Callable:
    """Builder of a metric that takes the run's training inputs (and labels, where it has ``y_train``)."""

    def build(ctx, kind, params):
        if ctx.x_train is None:
            raise InvalidArgument(f"{cls.__name__} needs the training inputs: pass MetricContext(x_train=...).")
        extra = {"y_train": ctx.y_train} if "y_train" in inspect.signature(cls.__init__).parameters else {}
        return cls(ctx.x_train, **{**extra, **defaults(ctx), **params})

    return build


def _quantus(name: str):
    import quantus

    return getattr(quantus, name)


def _adapted(name: str, defaults: Callable, text: str, quantus_name: Optional[str] = None,
             needs: frozenset = frozenset()) -> MetricEntry:
    """A stock Quantus faithfulness metric scored on g_x through :class:`lfeval.metrics.LabelFree`."""
    quantus_name = quantus_name or name

    def build(ctx, kind, params):
        from .label_free_adapter import LabelFree

        params = dict(params)
        adapter = {k: params.pop(k) for k in ("similarity", "baseline") if k in params}
        metric = _quantus(quantus_name)(**{"disable_warnings": True, **defaults(ctx), **params})
        return LabelFree(metric, **adapter)

    return MetricEntry(name, build, text, target=_quantus(quantus_name), extra_params=("similarity", "baseline"),
                       needs=needs)


def _stock(name: str, text: str, defaults: Optional[dict] = None, needs: frozenset = frozenset()) -> MetricEntry:
    """A stock Quantus metric that never reads a label (used as it is)."""

    def build(ctx, kind, params):
        extra = {}
        if name == "RelativeRepresentationStability" and ctx.encoder is not None and "layer_names" not in params:
            extra = {"layer_names": _hidden_layers(ctx.encoder)}
        return _quantus(name)(**{"disable_warnings": True, **(defaults or {}), **extra, **params})

    return MetricEntry(name, build, text, label_free=False, target=_quantus(name), needs=needs)


def _tiling_patch(ctx: MetricContext) -> int:
    """Quantus 0.6.0's Infidelity indexes unpadded inputs with padded patches, so its patches must tile both
    spatial axes: the modality's patch for images, single steps for time series (shown to Quantus as 1 x T)."""
    return ctx.patch_size if ctx.encoder is None or ctx.encoder.modality == "image" else 1


def _hidden_layers(encoder) -> list:
    """The encoder's leaf layers whose output is one tensor: RelativeRepresentationStability's internal
    representation (Quantus hooks every layer, and a recurrent layer returns a tuple)."""
    import torch

    return [n for n, m in encoder.named_modules()
            if n and not any(True for _ in m.children()) and not isinstance(m, torch.nn.RNNBase)]


def _register_builtins() -> None:
    from .pretext_correlation import PretextCorrelation
    from .representation_shift import RepresentationShift
    from .road import ROAD
    from .similarity_rate import SimilarityRate

    robust = {"nr_samples": 10}  # Quantus' 200 explanations per sample cost minutes on CPU
    stability = {**robust, "return_nan_when_prediction_changes": False}  # an encoder has no prediction to keep
    noisy = frozenset({"continuous"})  # adds noise to the inputs or imputes values: not for token ids
    entries = [
        MetricEntry("RepresentationShift", _own(RepresentationShift, lambda c: {"seed": c.seed}), (
            "Label-free feature consistency (paper §4.1): mask the top-M features by |attribution| with the "
            "baseline and measure ||f(x) - f(x_M)||²; the score is the normalised area under that curve over "
            "the mask fractions."), target=RepresentationShift, curve=CurveSpec(
            "Representation shift when the top features are masked (mean, 95% band)",
            "% of features masked (most important first)", "representation shift",
            "The paper's Fig. 2: a faithful method moves the representation most when its top features are "
            "masked, far above Random.")),
        MetricEntry("PretextCorrelation", _pretext_correlation, (
            "Pretext sensitivity (paper §4.2): Pearson correlation of an explanation with the same method's "
            "explanation of the encoders trained on the other pretext tasks, per sample; a high value means the "
            "explanation reflects the input more than the pretext task. An explanation that ignores the model "
            "(Random depends on the input only) scores 1, so read it next to the faithfulness metrics."),
            kinds=(FEATURES, EXAMPLES), target=PretextCorrelation, needs=frozenset({"references"})),
        MetricEntry("SimilarityRate", _similarity_rate(False), (
            "Label-free example consistency (paper §4.1): share of the top-M training examples that have the "
            "test example's label, averaged over M. Labels only score; they never explain."),
            kinds=(EXAMPLES,), target=SimilarityRate, needs=frozenset({"labels"}), curve=CurveSpec(
                "Same-label rate of the top-M (solid) and bottom-M (dashed) training examples",
                "M (most / least important training examples)", "same-label rate",
                "The paper's Fig. 3: the most important training examples should share the test example's label "
                "(high solid curves) and the least important should not (low dashed curves).", ylim=(0, 1))),
        MetricEntry("SimilarityContrast", _similarity_rate(True), (
            "Top-M minus bottom-M similarity rate, the paper's contrast between the most and the least important "
            "examples: how well the ranking separates same-class from other-class examples."),
            kinds=(EXAMPLES,), target=SimilarityRate, needs=frozenset({"labels"})),
        _adapted("PixelFlipping", lambda c: {"features_in_step": _steps(c)}, (
            "Stock Quantus PixelFlipping scored label-free through lfeval.metrics.LabelFree: features are "
            "removed most important first while g_x(x') = <f(x), f(x')> is tracked; the score is the mean of "
            "that curve, and a faster drop is more faithful.")),
        _adapted("FaithfulnessCorrelation", lambda c: {
            "nr_runs": 50, "subset_size": max(1, c.n_features // 8), "return_aggregate": False}, (
            "Stock Quantus FaithfulnessCorrelation on g_x: correlation between the attribution mass of random "
            "feature subsets and the drop of g_x when they are masked.")),
        _adapted("FaithfulnessEstimate", lambda c: {"features_in_step": _steps(c)}, (
            "Stock Quantus FaithfulnessEstimate on g_x: correlation of the attributions with the drop of g_x as "
            "features are removed step by step.")),
        _adapted("MonotonicityCorrelation", lambda c: {"features_in_step": _steps(c), "nr_samples": 5}, (
            "Stock Quantus MonotonicityCorrelation on g_x: Spearman correlation of |attribution| with the "
            "variance of g_x when each step's features are perturbed."), needs=noisy),
        _adapted("Selectivity", lambda c: {"patch_size": c.patch_size}, (
            "Stock Quantus Selectivity on g_x: patches removed most important first; the score is the mean of "
            "the curve, and a faster drop is more faithful.")),
        _adapted("RegionPerturbation", lambda c: {"patch_size": c.patch_size, "regions_evaluation": 8}, (
            "Stock Quantus RegionPerturbation (MoRF, AOPC) on g_x: the drop of g_x as regions are perturbed most "
            "important first; lfeval corrects Quantus' direction (a bigger drop is better).")),
        MetricEntry("ROAD", _own(ROAD, lambda c: {"percentages": [10, 30, 50, 70, 90], "seed": c.seed}), (
            "Label-free ROAD (Rong et al. 2022): the most relevant features are removed by noisy linear imputation "
            "(no mask shape leaks to the encoder) and the relative shift ||f(x) - f(x')||² / ||f(x)||² is tracked; "
            "the score is the normalised area of that curve over the removed percentages."), target=ROAD,
            curve=CurveSpec("ROAD: relative representation shift as the top features are imputed (mean, 95% band)",
                            "% of features imputed (most relevant first)", "||f(x) - f(x')||² / ||f(x)||²",
                            "A faithful attribution moves the representation fastest (high curves)."),
            needs=noisy),
        _adapted("Infidelity", lambda c: {"n_perturb_samples": 10, "perturb_patch_sizes": [_tiling_patch(c)]}, (
            "Stock Quantus Infidelity on g_x: squared error between attribution-weighted perturbations and the "
            "change of g_x."), needs=noisy),
        _stock("Sparseness", "Stock Quantus Sparseness: the Gini index of |attribution|."),
        _stock("Complexity", "Stock Quantus Complexity: the entropy of the attribution distribution."),
        _stock("MaxSensitivity", (
            "Stock Quantus MaxSensitivity: the largest change of the explanation under uniform input noise "
            "(10 draws)."), robust, noisy),
        _stock("AvgSensitivity", (
            "Stock Quantus AvgSensitivity: the mean change of the explanation under uniform input noise "
            "(10 draws)."), robust, noisy),
        _stock("RelativeInputStability", (
            "Stock Quantus RelativeInputStability: change of the explanation relative to the change of the input "
            "(10 draws)."), stability, noisy),
        _stock("RelativeRepresentationStability", (
            "Stock Quantus RelativeRepresentationStability: change of the explanation relative to the change of "
            "the encoder's internal representations (10 draws), with return_nan_when_prediction_changes=False "
            "as an encoder has no prediction to keep."), stability, noisy),
    ]
    for entry in entries + _peer_entries():
        register_metric(entry)


def _peer_entries() -> list:
    """The peers' metrics: the insertion and LeRF twins of RepresentationShift, COCOA's insertion and deletion
    curves (Lin et al. 2023) and the fully label-free example consistency."""
    from .corpus_curves import CorpusDeletion, CorpusInsertion
    from .label_free_similarity import LabelFreeSimilarityRate
    from .representation_orders import RepresentationShiftInsertion, RepresentationShiftLeRF

    seed = lambda c: {"seed": c.seed}  # noqa: E731
    corpus_text = ("COCOA's evaluation (Lin et al. 2023): the explicand's corpus is its k-means cluster of training "
                   "latents (metric_params by='label' or 'index' for the other rules) and the foil a random sample of "
                   "the other training examples; ")
    similarity = "the contrastive corpus similarity (mean cosine to the corpus minus mean cosine to the foil)"
    majority = ("the probability of the corpus' majority class under a linear probe on the training latents "
                "(cluster ids as classes, or labels with by='label')")

    def corpus_entry(name, cls, target, short, what):
        inserting = cls is CorpusInsertion
        how = (f"features are revealed on the baseline most important first while {what} is tracked; a faster rise "
               "is better." if inserting else
               f"features are deleted most important first while {what} is tracked; a faster fall is better.")
        kind = "insertion" if inserting else "deletion"
        return MetricEntry(name, _training(cls, lambda c: {**seed(c), "target": target,
                                                           "steps": min(50, c.n_features)}),
                           corpus_text + how + " 50 steps (one per feature for inputs of fewer), trapezoid area "
                           "over the fraction of features.", target=cls,
                           needs=frozenset({"training"}), curve=CurveSpec(
                               f"{kind.capitalize()} curves of the {short} (mean, 95% band)",
                               f"% of features {'inserted into the baseline' if inserting else 'deleted'} "
                               "(most important first)", short,
                               f"COCOA's {kind} curves: a faithful attribution makes the {short} "
                               f"{'rise' if inserting else 'fall'} fast."))

    rate_curve = CurveSpec("Pseudo-class rate of the top-M (solid) and bottom-M (dashed) training examples",
                           "M (most / least important training examples)", "pseudo-class rate",
                           "SimilarityRate's curves with k-means pseudo-labels of the encoder's own latents in place "
                           "of labels.", ylim=(0, 1))
    return [
        MetricEntry("RepresentationShiftInsertion", _own(RepresentationShiftInsertion, seed), (
            "The insertion twin of RepresentationShift: start from the baseline, reveal the top-M features by "
            "|attribution| and measure ||f(x) - f(x^M)||²; the normalised area over the fractions is smaller when "
            "the representation comes back faster."), target=RepresentationShiftInsertion, curve=CurveSpec(
            "Representation shift as the top features are revealed on the baseline (mean, 95% band)",
            "% of features revealed (most important first)", "representation shift",
            "Insertion: a faithful method brings the representation back to f(x) with few features, far below "
            "Random.")),
        MetricEntry("RepresentationShiftLeRF", _own(RepresentationShiftLeRF, seed), (
            "RepresentationShift in ROAD's least-relevant-first order: mask the M least important features and "
            "measure ||f(x) - f(x_M)||²; a faithful attribution removes what the encoder ignores first, so the "
            "area is small."), target=RepresentationShiftLeRF, curve=CurveSpec(
            "Representation shift when the least important features are masked first (mean, 95% band)",
            "% of features masked (least important first)", "representation shift",
            "LeRF: a faithful method keeps the representation in place while the unimportant features go, below "
            "Random.")),
        corpus_entry("CorpusInsertion", CorpusInsertion, "similarity", "contrastive corpus similarity", similarity),
        corpus_entry("CorpusDeletion", CorpusDeletion, "similarity", "contrastive corpus similarity", similarity),
        corpus_entry("CorpusMajorityInsertion", CorpusInsertion, "majority_probability", "corpus majority probability",
                     majority),
        corpus_entry("CorpusMajorityDeletion", CorpusDeletion, "majority_probability", "corpus majority probability",
                     majority),
        MetricEntry("LabelFreeSimilarityRate", _training(LabelFreeSimilarityRate, lambda c: {
            "rule": "kmeans", "M": _counts(len(c.x_train)), **seed(c)}), (
            "Fully label-free example consistency: SimilarityRate with the labels replaced by k-means pseudo-labels "
            "(10 clusters) of the encoder's latents: the share of the top-M training examples in the test "
            "example's cluster, averaged over M. No label is read."), kinds=(EXAMPLES,),
            target=LabelFreeSimilarityRate, needs=frozenset({"training"}), curve=rate_curve),
        MetricEntry("NeighbourhoodRate", _training(LabelFreeSimilarityRate, lambda c: {
            "rule": "knn", "M": _counts(len(c.x_train)), "k": min(20, len(c.x_train)), **seed(c)}), (
            "Fully label-free example consistency: the share of the top-M training examples among the test "
            "example's 20 nearest training examples in the encoder's latent space (precision@M against that "
            "neighbourhood), averaged over M. No label is read. DkNN retrieves exactly these neighbours, so it "
            "scores near the top by construction: use it to compare the other methods."), kinds=(EXAMPLES,),
            target=LabelFreeSimilarityRate, needs=frozenset({"training"})),
    ]


_register_builtins()

__all__ = ["FEATURES", "EXAMPLES", "MetricContext", "CurveSpec", "MetricEntry", "CATALOGUE", "register_metric",
           "get_entry", "build_metric", "metric_names"]
