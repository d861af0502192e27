"""Time series laid out (T, C): T time steps of C channels."""

from __future__ import annotations

import numpy as np
import torch

from .base import Modality


class TimeSeries(Modality):
    """Time series laid out (T, C). Every (time step, channel) value is a masking unit; data sets give
    their baseline (ECG5000: the mean normal beat, paper §4.1), zeros otherwise."""

    name = "time_series"
    layout = "(T, C)"
    sample_ndim = 2
    quantus_name = "TIMESERIES"
    architecture = "lstm"
    plot_kind = "curve"

    def augment(self, x, generator):
        """Jitter (sigma 0.03) and per-series scaling around the series mean (factor ~ N(1, 0.1))."""
        n = x.shape[0]
        jitter = torch.randn(x.shape, generator=generator, device=x.device) * 0.03
        factor = 1 + 0.1 * torch.randn(n, 1, 1, generator=generator, device=x.device)
        mean = x.mean(dim=(1, 2), keepdim=True)
        return ((x - mean) * factor + mean + jitter).clamp(0.0, 1.0)

    def draw_input(self, ax, x):
        ax.plot(np.asarray(x, dtype=float).reshape(np.shape(x)[0], -1), lw=0.8)

    def draw_attribution(self, ax, a):
        v = np.abs(np.asarray(a, dtype=float)).reshape(np.shape(a)[0], -1).sum(1)
        ax.imshow(v[None, :], cmap="hot", aspect="auto")
