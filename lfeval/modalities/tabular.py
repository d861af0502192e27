"""Tabular data: one row of D features per sample, laid out (1, D) (Quantus needs a channel axis)."""

from __future__ import annotations

import numpy as np
import torch

from ..draws import draw
from .base import Modality


class Tabular(Modality):
    """Tabular rows laid out (1, D); a module that takes (N, D) is fed through the same layout by
    :class:`lfeval.Encoder`. The masking unit is one feature; data sets give their mean row as the
    baseline (masking a feature replaces it with its average), zeros otherwise."""

    name = "tabular"
    layout = "(1, D)"
    sample_ndim = 2
    quantus_name = "TABULAR"
    architecture = "mlp"
    plot_kind = "bars"

    def canonical_shape(self, shape):
        shape = tuple(shape)
        return (1, *shape) if len(shape) == 1 else shape

    def check_sample_shape(self, shape, name="inputs"):
        super().check_sample_shape(self.canonical_shape(shape) if len(shape) == 1 else shape, name)

    def augment(self, x, generator):
        """Gaussian noise (sigma 0.1) and 20% feature dropout (set to 0). Drawn from ``generator`` (a seeded CPU
        generator) on the CPU, then moved to x's device and dtype: a seed gives the same view on any device."""
        noise = draw(torch.randn, x.shape, generator, x) * 0.1
        keep = (torch.rand(x.shape, generator=generator, device="cpu") >= 0.2).to(x.device, x.dtype, non_blocking=True)
        return ((x + noise) * keep).clamp(0.0, 1.0)

    def draw_input(self, ax, x):
        v = np.asarray(x, dtype=float).reshape(-1)
        ax.bar(np.arange(len(v)), v, color="#555", width=0.9)

    def draw_attribution(self, ax, a, x=None):
        v = np.abs(np.asarray(a, dtype=float)).reshape(-1)
        ax.bar(np.arange(len(v)), v, color="#c33", width=0.9)
