"""Masking baselines that depend on the input (the paper's CIFAR-10 baseline is a blur of the image)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InvalidArgument


class GaussianBlur:
    """Callable baseline: a depthwise Gaussian blur of a batch (N, C, H, W), reflect-padded.

    Crabbé & van der Schaar (2022, §4.1) replace masked CIFAR-10 pixels with a blurred copy of
    the image, so masking removes detail without adding out-of-distribution black patches.
    """

    def __init__(self, sigma: float = 5.0, kernel_size: int = 21):
        if sigma <= 0:
            raise InvalidArgument(f"`sigma` must be > 0, got {sigma}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise InvalidArgument(f"`kernel_size` must be a positive odd integer, got {kernel_size}.")
        self.sigma, self.kernel_size = float(sigma), int(kernel_size)

    def kernel(self, device=None, dtype=torch.float32) -> torch.Tensor:
        r = torch.arange(self.kernel_size, device=device, dtype=dtype) - self.kernel_size // 2
        k = torch.exp(-(r**2) / (2 * self.sigma**2))
        return k / k.sum()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise InvalidArgument(f"GaussianBlur expects a batch (N, C, H, W), got shape {tuple(x.shape)}.")
        c = x.shape[1]
        k = self.kernel(x.device, x.dtype)
        pad = min(self.kernel_size // 2, x.shape[-1] - 1, x.shape[-2] - 1)
        k = k[self.kernel_size // 2 - pad: self.kernel_size // 2 + pad + 1]
        k = k / k.sum()
        out = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad > 0 else x
        out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    def __repr__(self) -> str:
        return f"GaussianBlur(sigma={self.sigma}, kernel_size={self.kernel_size})"
