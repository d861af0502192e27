"""Label-free metrics as :class:`quantus.Metric` subclasses (usable in :func:`quantus.evaluate`)."""

from .base import LabelFreeMetric
from .representation_shift import RepresentationShift
from .similarity_rate import SimilarityRate

__all__ = ["LabelFreeMetric", "RepresentationShift", "SimilarityRate"]
