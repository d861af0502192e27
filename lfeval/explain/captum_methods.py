"""captum's attribution methods applied to the auxiliary function g_x, one class per method (as captum names them).

Each class is a registered :class:`~lfeval.explain.base.FeatureExplainer` that names its captum class; its
options are the keyword arguments of that class's ``attribute`` (``n_steps`` for :class:`IntegratedGradients`,
``sliding_window_shapes`` for :class:`Occlusion`, ...). A method that sets captum arguments of its own from the
inputs (Occlusion's window, the token groups of FeatureAblation and ShapleyValueSampling) overrides
:meth:`CaptumExplainer.extra_args`.
"""

from __future__ import annotations

import inspect
from types import MappingProxyType

import numpy as np
import torch
from captum import attr as captum_attr
from captum.attr._utils.approximation_methods import SUPPORTED_METHODS, SUPPORTED_RIEMANN_METHODS

from ..errors import InvalidArgument
from ..memory import rows_per_pass
from ..validation import check_choice
from .base import FeatureExplainer, register_explainer

#: arguments lfeval sets itself
_OWN = ("self", "inputs", "baselines", "target", "additional_forward_args", "return_convergence_delta")
#: integer options of the captum methods and their minimum: below it captum fails an assertion
#: (n_steps, perturbations_per_eval, internal_batch_size) or silently returns NaN (ShapleyValueSampling's n_samples)
_INT_OPTIONS = {"n_steps": 1, "n_samples": 1, "perturbations_per_eval": 1, "internal_batch_size": 1}
#: options that are a positive integer or a tuple of them (Occlusion's window and strides; a 0 stride gives NaN)
_SHAPE_OPTIONS = ("sliding_window_shapes", "strides")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


class CaptumExplainer(FeatureExplainer):
    """A captum method on g_x(x') = <f(x), f(x')>: f(x) is passed as an additional forward argument."""

    captum_class = None
    #: seeded with torch's global generator inside a forked RNG (captum draws from it)
    seeded = False

    @classmethod
    def options(cls) -> tuple:
        params = inspect.signature(cls.captum_class.attribute).parameters
        return tuple(p for p in params if p not in _OWN and params[p].kind is not inspect.Parameter.VAR_KEYWORD)

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Refuse unknown options (:meth:`FeatureExplainer.check_options`) and, before captum sees them, values it
        would reject with an ``AssertionError`` or turn into NaN: the integer options of :data:`_INT_OPTIONS`,
        Occlusion's ``sliding_window_shapes``/``strides`` and IntegratedGradients' ``method`` (with its steps)."""
        super().check_options(options)
        params = inspect.signature(cls.captum_class.attribute).parameters
        for key, minimum in _INT_OPTIONS.items():
            value = options.get(key)
            if key not in options or (value is None and key == "internal_batch_size"):
                continue
            if not _is_int(value) or value < minimum:
                default = params[key].default
                hint = f" (captum's default: {default})" if default is not inspect.Parameter.empty else ""
                raise InvalidArgument(f"{cls.name} option `{key}` must be an integer >= {minimum}, got "
                                      f"{value!r}{hint}.")
        for key in _SHAPE_OPTIONS:
            value = options.get(key)
            if key not in options or (value is None and key == "strides"):
                continue
            items = value if isinstance(value, (tuple, list)) else (value,)
            if not items or not all(_is_int(v) and v >= 1 for v in items):
                raise InvalidArgument(f"{cls.name} option `{key}` must be a positive integer or a tuple of positive "
                                      f"integers (one per input axis, channel first), got {value!r}.")
        if "method" in options:
            method = check_choice(options["method"], SUPPORTED_METHODS, f"{cls.name} option `method`")
            steps = options.get("n_steps", params["n_steps"].default)
            if method in SUPPORTED_RIEMANN_METHODS and steps < 2:
                raise InvalidArgument(f"{cls.name} option `n_steps` must be >= 2 with method={method!r} (a Riemann "
                                      f"sum needs two points), got {steps!r}; use n_steps=50 or "
                                      "method='gausslegendre'.")

    def extra_args(self, x: torch.Tensor) -> dict:
        """captum arguments the method sets itself for the chunk ``x`` (the user's options take precedence);
        none by default."""
        return {}

    def attribute_batch(self, x, z_ref, baseline, seed, **options):
        explainer = self.captum_class(self.aux)
        args = dict(additional_forward_args=(z_ref,), **options)
        if self.uses_baseline:
            args["baselines"] = baseline
        for key, value in self.extra_args(x).items():
            args.setdefault(key, value)
        if "internal_batch_size" in self.options() and "internal_batch_size" not in options:
            steps = options.get("n_steps", 50)  # IG's default: split its steps only when they outgrow a pass
            rows = rows_per_pass(x[0].numel(), len(x) * steps, device=x.device)
            if len(x) * steps > rows:
                args["internal_batch_size"] = rows
        x = x.detach().requires_grad_(True)
        if not self.seeded:
            return explainer.attribute(x, **args)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return explainer.attribute(x, **args)


class GroupedCaptumExplainer(CaptumExplainer):
    """A captum method that perturbs groups of features: on discrete inputs (text), one group per token."""

    def extra_args(self, x: torch.Tensor) -> dict:
        return {} if self.space is None else {"feature_mask": self.space.feature_mask(x)}


@register_explainer("Saliency")
class Saliency(CaptumExplainer):
    """captum's :class:`captum.attr.Saliency` (gradient) of the auxiliary function g_x (label-free)."""

    captum_class = captum_attr.Saliency


@register_explainer("IntegratedGradients")
class IntegratedGradients(CaptumExplainer):
    """captum's :class:`captum.attr.IntegratedGradients` of the auxiliary function g_x (label-free)."""

    captum_class = captum_attr.IntegratedGradients
    uses_baseline = True
    passes_per_input = 50


@register_explainer("InputXGradient")
class InputXGradient(CaptumExplainer):
    """captum's :class:`captum.attr.InputXGradient` of the auxiliary function g_x (label-free)."""

    captum_class = captum_attr.InputXGradient


@register_explainer("DeepLift")
class DeepLift(CaptumExplainer):
    """captum's :class:`captum.attr.DeepLift` of the auxiliary function g_x (label-free)."""

    captum_class = captum_attr.DeepLift
    uses_baseline = True


@register_explainer("GuidedBackprop")
class GuidedBackprop(CaptumExplainer):
    """captum's :class:`captum.attr.GuidedBackprop` of the auxiliary function g_x (label-free)."""

    captum_class = captum_attr.GuidedBackprop


@register_explainer("Deconvolution")
class Deconvolution(CaptumExplainer):
    """captum's :class:`captum.attr.Deconvolution` of the auxiliary function g_x (label-free)."""

    captum_class = captum_attr.Deconvolution


@register_explainer("Occlusion")
class Occlusion(CaptumExplainer):
    """captum's :class:`captum.attr.Occlusion` of the auxiliary function g_x (label-free); the default window is
    the modality's (``occlusion_window``)."""

    captum_class = captum_attr.Occlusion
    uses_baseline = True

    def extra_args(self, x: torch.Tensor) -> dict:
        return {"sliding_window_shapes": (self.space or self.encoder.modality).occlusion_window(tuple(x.shape[1:]))}


@register_explainer("FeatureAblation")
class FeatureAblation(GroupedCaptumExplainer):
    """captum's :class:`captum.attr.FeatureAblation` of the auxiliary function g_x (label-free)."""

    captum_class = captum_attr.FeatureAblation
    uses_baseline = True


@register_explainer("ShapleyValueSampling")
class ShapleyValueSampling(GroupedCaptumExplainer):
    """captum's :class:`captum.attr.ShapleyValueSampling` of the auxiliary function g_x (label-free), seeded."""

    captum_class = captum_attr.ShapleyValueSampling
    uses_baseline = True
    seeded = True


#: method name -> (captum class, takes baselines), read from the classes above (read-only)
CAPTUM_METHODS = MappingProxyType({cls.name: (cls.captum_class, cls.uses_baseline) for cls in (
    Saliency, IntegratedGradients, InputXGradient, DeepLift, GuidedBackprop, Deconvolution, Occlusion, FeatureAblation,
    ShapleyValueSampling)})

__all__ = ["CaptumExplainer", "GroupedCaptumExplainer", "Saliency", "IntegratedGradients", "InputXGradient",
           "DeepLift", "GuidedBackprop", "Deconvolution", "Occlusion", "FeatureAblation", "ShapleyValueSampling",
           "CAPTUM_METHODS"]
