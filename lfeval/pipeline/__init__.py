"""The main job behind ``lfeval run``: resumable stages from data to report.

:func:`run` trains encoders, explains them (features and examples), scores the explanations
with label-free and stock Quantus metrics, builds the pretext-correlation tables, meta-evaluates
the label-free metrics with MetaQuantus, ranks the explainers (rank 1 = best) and writes
``runs/<name>/``; :func:`report` draws a finished run's report again without recomputing.
"""

from __future__ import annotations

from .job import report, run
from .store import StageStore

__all__ = ["StageStore", "run", "report"]
