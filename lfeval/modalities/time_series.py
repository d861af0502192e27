"""Time series laid out (C, T): C channels of T time steps, channel first as Quantus and aeon read them."""

from __future__ import annotations

import numpy as np
import torch

from ..draws import draw
from .base import Modality


class TimeSeries(Modality):
    """Time series laid out (C, T), channel first (Quantus' ``DataType.TIMESERIES`` and aeon's layout). The
    masking unit is a time step, removed in every channel at once (as a pixel of an image); data sets give
    their baseline (ECG5000: the mean normal beat, paper §4.1; other UCR sets: the mean training series).
    Missing time steps are imputed from their two neighbours (:meth:`imputation_kernel`, for ROAD)."""

    name = "time_series"
    layout = "(C, T)"
    sample_ndim = 2
    quantus_name = "TIMESERIES"
    architecture = "lstm"
    plot_kind = "curve"

    def unit_shape(self, shape):
        return (1, tuple(shape)[-1])

    def occlusion_window(self, shape):
        """About 1/20 of the series (at least one step), every channel."""
        c, t = shape
        return (c, max(1, t // 20))

    def patch_size(self, shape):
        """About T/32 steps, a divisor of T (Quantus' Infidelity mis-indexes padded inputs)."""
        t = tuple(shape)[-1]
        return max(p for p in range(1, max(1, t // 32) + 1) if t % p == 0)

    def imputation_kernel(self) -> torch.Tensor:
        """Neighbour weights of the noisy linear imputation: the two adjacent time steps."""
        return torch.tensor([0.5, 0.0, 0.5])

    def augment(self, x, generator):
        """Jitter (sigma 0.03) and per-series scaling around the series mean (factor ~ N(1, 0.1)). Drawn from
        ``generator`` (a seeded CPU generator) on the CPU, then moved to x's device and dtype: a seed gives the
        same view on any device."""
        n = x.shape[0]
        jitter = draw(torch.randn, x.shape, generator, x) * 0.03
        factor = 1 + 0.1 * draw(torch.randn, (n, 1, 1), generator, x)
        mean = x.mean(dim=(1, 2), keepdim=True)
        return ((x - mean) * factor + mean + jitter).clamp(0.0, 1.0)

    def draw_input(self, ax, x):
        ax.plot(np.asarray(x, dtype=float).reshape(-1, np.shape(x)[-1]).T, lw=0.8)

    def draw_attribution(self, ax, a, x=None):
        v = np.abs(np.asarray(a, dtype=float)).reshape(-1, np.shape(a)[-1]).sum(0)
        ax.imshow(v[None, :], cmap="hot", aspect="auto")
