"""Images (C, H, W), channel first, values in [0, 1]."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..draws import draw
from .base import Modality


class Image(Modality):
    """Images laid out (C, H, W). The masking unit is a pixel, removed in every channel at once (paper
    §4.1 ranks pixels by ``|attribution|`` summed over channels); the default baseline is black (zeros)."""

    name = "image"
    layout = "(C, H, W)"
    sample_ndim = 3
    quantus_name = "IMAGE"
    architecture = "conv"
    plot_kind = "image"

    def unit_shape(self, shape):
        return (1, *tuple(shape)[1:])

    def occlusion_window(self, shape):
        """About 1/7 of each side (1 pixel on 8x8 digits, 4 on 28x28 MNIST), every channel."""
        c, h, w = shape
        return (c, max(1, h // 7), max(1, w // 7))

    def imputation_kernel(self) -> torch.Tensor:
        """Rong et al. (2022): the 4 direct neighbours weigh 1/6, the 4 diagonal ones 1/12."""
        return torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])

    def patch_size(self, shape):
        """2x2 patches where they tile the image (Quantus' Infidelity mis-indexes padded inputs), else 1."""
        return 2 if min(shape[1:]) >= 4 and all(s % 2 == 0 for s in shape[1:]) else 1

    def augment(self, x, generator):
        """Random affine (rotation +-15 deg, scale 0.9-1.1, shift +-12.5%) plus Gaussian noise (sigma 0.05).
        Drawn from ``generator`` (a seeded CPU generator) on the CPU, then moved to x's device and dtype: a seed
        gives the same view on any device."""
        n = x.shape[0]
        r = lambda *s: draw(torch.rand, s, generator, x)  # noqa: E731
        angle = (r(n) * 2 - 1) * math.radians(15)
        scale = 0.9 + 0.2 * r(n)
        shift = (r(n, 2) * 2 - 1) * 0.25  # grid coordinates span [-1, 1]: 0.25 = 12.5% of the width
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
        noise = draw(torch.randn, out.shape, generator, x) * 0.05
        return (out + noise).clamp(0.0, 1.0)

    def draw_input(self, ax, x):
        img = np.asarray(x, dtype=float)
        ax.imshow(img.transpose(1, 2, 0) if img.shape[0] == 3 else img.mean(0), cmap="gray")

    def draw_attribution(self, ax, a, x=None):
        ax.imshow(np.abs(np.asarray(a, dtype=float)).reshape(-1, *np.shape(a)[-2:]).sum(0), cmap="hot")
