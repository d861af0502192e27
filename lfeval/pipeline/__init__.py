"""The main job behind ``lfeval run``: resumable stages from data to report.

:func:`run` trains encoders, explains them (features and examples), scores the explanations
with label-free and stock Quantus metrics, builds the pretext-correlation tables, meta-evaluates
the label-free metrics with MetaQuantus, ranks the explainers and writes ``runs/<name>/``.
"""

from __future__ import annotations

import importlib

from .store import StageStore

__all__ = ["StageStore", "run"]


def __getattr__(name: str):  # the job imports Quantus and MetaQuantus: load it on first use
    if name == "run":
        return importlib.import_module(f"{__name__}.job").run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
