"""Seeded random draws that are the same on every device: made on the CPU from a seeded ``torch.Generator``,
then moved to where they are used (a CUDA generator would give other numbers than the CPU's for one seed)."""

from __future__ import annotations

import torch


def draw(sampler, shape, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """``sampler(shape)`` (``torch.rand``/``torch.randn``) drawn in float32 on the CPU from ``generator`` (a seeded
    CPU generator), then moved to ``like``'s device and dtype: the same numbers whatever the device. The copy is
    asynchronous on a GPU (the host buffer is staged at once), so a training step does not wait for the device."""
    return sampler(tuple(shape), generator=generator, device="cpu").to(like.device, like.dtype, non_blocking=True)


__all__ = ["draw"]
