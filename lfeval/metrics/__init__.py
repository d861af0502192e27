"""Label-free metrics as :class:`quantus.Metric` subclasses (usable in :func:`quantus.evaluate`)."""

from .base import LabelFreeMetric

__all__ = ["LabelFreeMetric"]
