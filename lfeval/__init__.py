"""lfeval: label-free explainability for unsupervised encoders, evaluated with Quantus and MetaQuantus.

Crabbé & van der Schaar, "Label-Free Explainability for Unsupervised Models", ICML 2022.

Submodules load on first use (``lfeval.metrics`` imports Quantus, which is slow to import); both
``import lfeval.metrics`` and the attribute ``lfeval.metrics`` work for every public module.
"""

from __future__ import annotations

import importlib
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

from . import data, errors, modalities, models  # noqa: E402
from .encoder import Encoder, as_encoder  # noqa: E402

__version__ = "0.1.0"

# public name -> (module, attribute or None for the module itself)
_LAZY = {
    "explain": ("lfeval.explain", None),
    "explain_units": ("lfeval.explain.features", "explain_units"),
    "examples": ("lfeval.examples", None),
    "metrics": ("lfeval.metrics", None),
    "meta": ("lfeval.meta", None),
    "evaluate": ("lfeval.evaluation", "evaluate"),
    "evaluation": ("lfeval.evaluation", None),
    "report": ("lfeval.report", None),
    "config": ("lfeval.config", None),
    "pipeline": ("lfeval.pipeline", None),
    "validation": ("lfeval.validation", None),
    "execution": ("lfeval.execution", None),
    "threads": ("lfeval.threads", None),
    "precision": ("lfeval.precision", None),
    "diagnostics": ("lfeval.diagnostics", None),
    "text": ("lfeval.text", None),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'lfeval' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = importlib.import_module(module)
    return value if attr is None else getattr(value, attr)


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["data", "errors", "modalities", "models", "Encoder", "as_encoder", *_LAZY]
