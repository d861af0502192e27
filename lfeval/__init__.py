"""lfeval: label-free explainability for unsupervised encoders, evaluated with Quantus and MetaQuantus.

Crabbé & van der Schaar, "Label-Free Explainability for Unsupervised Models", ICML 2022.

Submodules load on first use (``lfeval.metrics`` imports Quantus, which is slow to import); both
``import lfeval.metrics`` and the attribute ``lfeval.metrics`` work for every public module.
"""

from __future__ import annotations

import importlib

from . import data, errors, modalities, models
from .encoder import Encoder, as_encoder

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
