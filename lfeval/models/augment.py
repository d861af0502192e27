"""Batched, seeded augmentations for the contrastive (SimCLR) pretext, one family per modality."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_images(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random affine (rotation +-15 deg, scale 0.9-1.1, shift +-12.5%) plus Gaussian noise (sigma 0.05)."""
    n = x.shape[0]
    r = lambda *s: torch.rand(*s, generator=generator, device=x.device)  # noqa: E731
    angle = (r(n) * 2 - 1) * math.radians(15)
    scale = 0.9 + 0.2 * r(n)
    shift = (r(n, 2) * 2 - 1) * 0.25  # grid coordinates span [-1, 1]: 0.25 = 12.5% of the width
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
    noise = torch.randn(out.shape, generator=generator, device=x.device) * 0.05
    return (out + noise).clamp(0.0, 1.0)


def augment_tabular(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise (sigma 0.1) and 20% feature dropout (set to 0)."""
    noise = torch.randn(x.shape, generator=generator, device=x.device) * 0.1
    keep = (torch.rand(x.shape, generator=generator, device=x.device) >= 0.2).to(x.dtype)
    return ((x + noise) * keep).clamp(0.0, 1.0)


def augment_time_series(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Jitter (sigma 0.03) and per-series scaling around the series mean (factor ~ N(1, 0.1))."""
    n = x.shape[0]
    jitter = torch.randn(x.shape, generator=generator, device=x.device) * 0.03
    factor = 1 + 0.1 * torch.randn(n, 1, 1, generator=generator, device=x.device)
    mean = x.mean(dim=(1, 2), keepdim=True)
    return ((x - mean) * factor + mean + jitter).clamp(0.0, 1.0)


AUGMENTATIONS = {"image": augment_images, "tabular": augment_tabular, "time_series": augment_time_series}
