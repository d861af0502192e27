"""A user feature explainer in one file: (x - baseline) * grad g_x(x), registered for lfeval.explain,
quantus.evaluate and lfeval run (no lfeval file is edited). For an encoder linear in x it equals
IntegratedGradients exactly."""

import torch

from lfeval.explain.base import FeatureExplainer, register_explainer


@register_explainer("GradientDelta")
class GradientDelta(FeatureExplainer):
    uses_baseline = True

    def attribute_batch(self, x, z_ref, baseline, seed, scale: float = 1.0):
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.aux(x, z_ref).sum(), x)
        return scale * (x - baseline) * grad
