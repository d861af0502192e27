"""Label-free explanations.

``lfeval.explain.base`` holds the explainer base class and registry, ``.features`` the entry points
(:func:`explain`, :func:`explain_units`), ``.captum_methods``, ``.stochastic``, ``.contrastive``, ``.relax`` and
``.cocoa`` (with ``.corpus``) the feature methods, ``.examples`` example importance and ``.precomputed`` the store
of finished explanations; ``.pairs`` (one-sided pair attributions of a similarity s(a, b)), ``.interactions``
(the two-sided interaction matrix, integrated Jacobians) and ``.distance`` (the Distance Explainer) explain why two
inputs have close representations.

Every built-in module is imported here, eagerly: importing any ``lfeval.explain.<module>`` runs this file first, so
every built-in explainer and example-importance method is registered in any process, whatever it imported (a Ray
worker that unpickles one class of :mod:`lfeval.explain.stochastic` still finds ``"Saliency"``).

``lfeval.explain`` is also callable: ``lfeval.explain(model, inputs, targets=None, method=..., **kw)`` is Quantus'
``explain_func`` form and public API, while ``lfeval.explain.base`` and the others stay submodules. A package cannot
be called, so its module object is given a :class:`types.ModuleType` subclass with ``__call__`` (the only reason for
:class:`_CallableModule`; it looks nothing up lazily).
"""

from __future__ import annotations

import sys
import types

# every built-in module; the explainers register in this order: captum's, COCOA, CEM, RELAX, the stochastic ones
from . import (
    base,
    captum_methods,
    cocoa,
    contrastive,
    corpus,
    distance,
    examples,
    features,
    ghost,
    interactions,
    masking,
    pairs,
    precomputed,
    relax,
    stochastic,
)
from .base import EXPLAINERS, FeatureExplainer, explainer_names, get_explainer, register_explainer
from .distance import DistanceExplainer, explain_distance
from .examples import EXAMPLE_METHODS, register_example_method
from .features import explain, explain_units
from .interactions import IntegratedJacobians, completeness_target
from .pairs import PairExplainer, explain_pairs
from .precomputed import PrecomputedExplanations


class _CallableModule(types.ModuleType):
    """The module type of ``lfeval.explain``: calling it runs :func:`lfeval.explain.features.explain`."""

    def __call__(self, model, inputs, targets=None, **kwargs):
        return explain(model, inputs, targets, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["base", "captum_methods", "cocoa", "contrastive", "corpus", "relax", "stochastic", "examples", "features",
           "ghost", "precomputed", "EXPLAINERS", "FeatureExplainer", "explainer_names", "get_explainer",
           "register_explainer", "EXAMPLE_METHODS", "register_example_method", "explain", "explain_units",
           "PrecomputedExplanations", "distance", "interactions", "masking", "pairs", "DistanceExplainer",
           "explain_distance", "IntegratedJacobians", "completeness_target", "PairExplainer", "explain_pairs"]
