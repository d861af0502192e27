"""lfeval: label-free explainability for unsupervised encoders, evaluated with Quantus and MetaQuantus.

Crabbé & van der Schaar, "Label-Free Explainability for Unsupervised Models", ICML 2022.

Every public module is imported here, eagerly (Quantus, MetaQuantus and captum add about 1 s to ``import
lfeval``), so ``lfeval.metrics`` and ``import lfeval.metrics`` both work, and every explainer, metric, example
method, modality and data set is registered in any process that imported lfeval. The ``lfeval`` command
(:mod:`lfeval.cli`) is the one module left out.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys


def _command_environment(environ=os.environ, argv=None, orig_argv=None) -> None:
    """When this import starts the ``lfeval`` command (console script or ``python -m lfeval.cli``), let idle
    OpenMP threads sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE``, unless set): it matters on shared
    cores, and OpenMP reads it once, when torch loads, which is below. A library import changes nothing."""
    argv = sys.argv if argv is None else argv
    orig_argv = getattr(sys, "orig_argv", argv) if orig_argv is None else orig_argv
    command = os.path.basename(argv[0] if argv else "") == "lfeval" or "lfeval.cli" in orig_argv[1:3]
    if command and "OMP_WAIT_POLICY" not in environ:
        environ["OMP_WAIT_POLICY"] = "PASSIVE"


_command_environment()

from . import (  # noqa: E402
    config,
    data,
    diagnostics,
    errors,
    evaluation,
    examples,
    execution,
    explain,
    memory,
    meta,
    metrics,
    modalities,
    models,
    pipeline,
    precision,
    registry,
    report,
    text,
    threads,
    validation,
)
from .encoder import Encoder, as_encoder  # noqa: E402
from .evaluation import evaluate  # noqa: E402
from .explain.features import explain_units  # noqa: E402

__version__ = importlib.metadata.version("lfeval")  # the one version: pyproject.toml's

__all__ = ["Encoder", "as_encoder", "config", "data", "diagnostics", "errors", "evaluate", "evaluation", "examples",
           "execution", "explain", "explain_units", "memory", "meta", "metrics", "modalities", "models", "pipeline",
           "precision", "registry", "report", "text", "threads", "validation"]
