"""Label-free metrics as :class:`quantus.Metric` subclasses (usable in :func:`quantus.evaluate`), their
functional twins (:mod:`lfeval.metrics.functional`) and the catalogue ``lfeval run`` scores with
(:mod:`lfeval.metrics.catalogue`)."""

from . import functional
from .base import LabelFreeMetric, score_direction
from .catalogue import CATALOGUE, CurveSpec, MetricContext, MetricEntry, build_metric, register_metric
from .corpus_curves import CorpusDeletion, CorpusInsertion
from .curve import Curve
from .label_free_adapter import ADAPTABLE, NEEDS_MASKS, LabelFree
from .label_free_similarity import LabelFreeSimilarityRate
from .pretext_correlation import PretextCorrelation, correlation_matrix, pretext_correlation_table
from .representation_orders import RepresentationShiftInsertion, RepresentationShiftLeRF
from .representation_shift import RepresentationShift
from .road import ROAD
from .similarity_rate import SimilarityRate
from .unit_saliency import UnitSaliencyCorrelation, pooled_unit_correlation, unit_saliency_stats

__all__ = ["LabelFreeMetric", "score_direction", "LabelFree", "ADAPTABLE", "NEEDS_MASKS", "PretextCorrelation",
           "pretext_correlation_table", "correlation_matrix", "RepresentationShift", "ROAD", "SimilarityRate",
           "UnitSaliencyCorrelation", "unit_saliency_stats", "pooled_unit_correlation", "Curve", "CATALOGUE",
           "CurveSpec", "MetricContext",
           "MetricEntry", "build_metric", "register_metric", "functional", "RepresentationShiftInsertion",
           "RepresentationShiftLeRF", "CorpusDeletion", "CorpusInsertion", "LabelFreeSimilarityRate"]
