"""Label-free explanations.

``lfeval.explain`` is both this package and a function: calling it runs
:func:`lfeval.explain.features.explain` (Quantus' ``explain_func`` signature), while
``lfeval.explain.base`` holds the explainer base class and registry, ``.features`` the entry
points, ``.captum_methods``, ``.stochastic``, ``.contrastive``, ``.relax`` and ``.cocoa`` (with ``.corpus``) the
feature methods, ``.examples``
example importance and ``.precomputed`` the store of finished explanations.
"""

from __future__ import annotations

import importlib
import sys
import types

_SUBMODULES = ("base", "features", "captum_methods", "stochastic", "examples", "contrastive", "precomputed", "relax",
               "corpus", "cocoa")


class _CallableModule(types.ModuleType):
    def __call__(self, model, inputs, targets=None, **kwargs):
        from .features import explain

        return explain(model, inputs, targets, **kwargs)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in ("explain", "explain_units"):
        return getattr(importlib.import_module(f"{__name__}.features"), name)
    if name in ("FeatureExplainer", "register_explainer", "get_explainer", "explainer_names", "EXPLAINERS"):
        return getattr(importlib.import_module(f"{__name__}.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


sys.modules[__name__].__class__ = _CallableModule
