"""captum's attribution methods applied to the auxiliary function g_x, through one table.

Each row becomes a registered :class:`~lfeval.explain.base.FeatureExplainer` whose options are the
keyword arguments of the captum class's ``attribute`` (``n_steps`` for IntegratedGradients,
``sliding_window_shapes`` for Occlusion, ...).
"""

from __future__ import annotations

import inspect

import torch
from captum import attr as captum_attr

from ..memory import rows_per_pass
from .base import FeatureExplainer, register_explainer

#: method name -> (captum class, takes baselines)
CAPTUM_METHODS = {
    "Saliency": (captum_attr.Saliency, False),
    "IntegratedGradients": (captum_attr.IntegratedGradients, True),
    "InputXGradient": (captum_attr.InputXGradient, False),
    "DeepLift": (captum_attr.DeepLift, True),
    "GuidedBackprop": (captum_attr.GuidedBackprop, False),
    "Deconvolution": (captum_attr.Deconvolution, False),
    "Occlusion": (captum_attr.Occlusion, True),
    "FeatureAblation": (captum_attr.FeatureAblation, True),
    "ShapleyValueSampling": (captum_attr.ShapleyValueSampling, True),
}
#: arguments lfeval sets itself
_OWN = ("self", "inputs", "baselines", "target", "additional_forward_args", "return_convergence_delta")


class CaptumExplainer(FeatureExplainer):
    """A captum method on g_x(x') = <f(x), f(x')>: f(x) is passed as an additional forward argument."""

    captum_class = None
    #: seeded with torch's global generator inside a forked RNG (captum draws from it)
    seeded = False

    @classmethod
    def options(cls) -> tuple:
        params = inspect.signature(cls.captum_class.attribute).parameters
        return tuple(p for p in params if p not in _OWN and params[p].kind is not inspect.Parameter.VAR_KEYWORD)

    def attribute_batch(self, x, z_ref, baseline, seed, **options):
        explainer = self.captum_class(self.aux)
        args = dict(additional_forward_args=(z_ref,), **options)
        if self.uses_baseline:
            args["baselines"] = baseline
        if self.name == "Occlusion":
            window = (self.space or self.encoder.modality).occlusion_window(tuple(x.shape[1:]))
            args.setdefault("sliding_window_shapes", window)
        if self.space is not None and self.name in ("FeatureAblation", "ShapleyValueSampling"):
            args.setdefault("feature_mask", self.space.feature_mask(x))  # one group per token
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


for _name, (_cls, _baselines) in CAPTUM_METHODS.items():
    register_explainer(_name)(type(_name, (CaptumExplainer,), {
        "captum_class": _cls, "uses_baseline": _baselines, "seeded": _name == "ShapleyValueSampling",
        "passes_per_input": 50 if _name == "IntegratedGradients" else 1,
        "__doc__": f"captum's {_cls.__name__} of the auxiliary function g_x (label-free).",
        "__module__": __name__,
    }))
