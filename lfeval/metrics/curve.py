"""Per-sample curves a metric exposes after a call (shift over % masked, same-label rate over M, ...),
which the report plots with confidence bands."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Curve:
    """Curves of one metric call.

    Attributes
    ----------
    x : np.ndarray (K,)
        Where the curve is evaluated (the metric's own parameters: % of features masked, counts M, ...).
    series : dict
        ``{label: (N, K) array}``: per-sample curves. The first series is drawn with a 95% band, the
        others (e.g. SimilarityRate's bottom-M contrast) as dashed means.
    """

    x: np.ndarray
    series: dict = field(default_factory=dict)

    def __post_init__(self):
        self.x = np.asarray(self.x, dtype=float)
        self.series = {k: np.asarray(v, dtype=float) for k, v in self.series.items()}
