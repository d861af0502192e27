"""Label-free metrics as :class:`quantus.Metric` subclasses (usable in :func:`quantus.evaluate`)."""

from .base import LabelFreeMetric
from .label_free_adapter import ADAPTABLE, LabelFree
from .pretext_correlation import PretextCorrelation, correlation_matrix, pretext_correlation_table
from .representation_shift import RepresentationShift
from .similarity_rate import SimilarityRate
from .unit_saliency import UnitSaliencyCorrelation, unit_saliency_stats

__all__ = ["LabelFreeMetric", "LabelFree", "ADAPTABLE", "PretextCorrelation", "pretext_correlation_table",
           "correlation_matrix", "RepresentationShift", "SimilarityRate", "UnitSaliencyCorrelation",
           "unit_saliency_stats"]
