"""Label-free metrics as :class:`quantus.Metric` subclasses (usable in :func:`quantus.evaluate`), their
functional twins (:mod:`lfeval.metrics.functional`) and the catalogue ``lfeval run`` scores with
(:mod:`lfeval.metrics.catalogue`).

The metrics, one file each (each declares its catalogue entry beside its class): ``representation_shift``,
``representation_orders`` (its insertion and LeRF twins), ``pretext_correlation``, ``similarity_rate``,
``label_free_similarity``, ``road``, ``corpus_curves`` (COCOA's curves), ``unit_saliency``, ``label_free_adapter``
(:class:`LabelFree`, stock Quantus metrics on encoders) and ``similarity_shift`` (pair explanations:
similarity-shift curves and completeness, with their twins in ``pair_functional``). The infrastructure: ``base``
(:class:`LabelFreeMetric`), ``catalogue`` (the registry and the table of stock metrics), ``functional`` (the
maths), ``curve``, ``fast_paths`` (faster stock Quantus loops). Importing any of them imports them all, so the
catalogue is complete in every process (a Ray worker unpickling one metric included).
"""

from . import functional, pair_functional
from .base import LabelFreeMetric, score_direction
from .catalogue import (
    ADAPTABLE,
    CATALOGUE,
    CurveSpec,
    MetricContext,
    MetricEntry,
    build_metric,
    default_metrics,
    register_metric,
)
from .corpus_curves import CorpusDeletion, CorpusInsertion
from .curve import Curve
from .label_free_adapter import NEEDS_MASKS, LabelFree
from .label_free_similarity import LabelFreeSimilarityRate
from .pretext_correlation import PretextCorrelation, correlation_matrix, pretext_correlation_table
from .representation_orders import RepresentationShiftInsertion, RepresentationShiftLeRF
from .representation_shift import RepresentationShift
from .road import ROAD
from .similarity_rate import SimilarityRate
from .similarity_shift import PairCompleteness, PairExplainFunc, SimilarityShift, SimilarityShiftInsertion
from .unit_saliency import UnitSaliencyCorrelation, pooled_unit_correlation, unit_saliency_stats

__all__ = ["LabelFreeMetric", "score_direction", "LabelFree", "ADAPTABLE", "NEEDS_MASKS", "PretextCorrelation",
           "pretext_correlation_table", "correlation_matrix", "RepresentationShift", "ROAD", "SimilarityRate",
           "UnitSaliencyCorrelation", "unit_saliency_stats", "pooled_unit_correlation", "Curve", "CATALOGUE",
           "CurveSpec", "MetricContext",
           "MetricEntry", "build_metric", "register_metric", "functional", "RepresentationShiftInsertion",
           "RepresentationShiftLeRF", "CorpusDeletion", "CorpusInsertion", "LabelFreeSimilarityRate",
           "default_metrics", "pair_functional", "SimilarityShift", "SimilarityShiftInsertion", "PairCompleteness",
           "PairExplainFunc"]
