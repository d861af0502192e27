"""The base of every pretext task: :class:`PretextTask` says how the input is corrupted, which head sits on the
encoder, and the task's loss. The tasks are in :mod:`lfeval.models.pretext` (paper §4.2) and
:mod:`lfeval.models.vae` (§4.3)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .architectures import EncoderNet, build_decoder

if TYPE_CHECKING:
    from .pretext import PretextModel


class PretextTask:
    """Base class of a pretext task: corruption + head + per-example loss."""

    name = "base"
    needs_labels = False

    def corrupt(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x

    def build_head(self, encoder: EncoderNet, n_classes: int) -> nn.Module:
        return build_decoder(encoder)

    def draws(self, model: "PretextModel", x: torch.Tensor, generator: torch.Generator):
        """What one batch's loss takes besides (x, y): its random part (the corrupted input, views, noise), drawn
        from ``generator`` in the order the loss consumes it, and per-example constants that differ between tasks
        sharing :meth:`loss_given` (a VAE's β). None, a tensor or a tuple of tensors, each (N, ...). Kept apart
        from :meth:`loss_given` so that a batched ensemble (:func:`lfeval.models.train_ensemble`) makes each
        member's from that member's task and generator."""
        return self.corrupt(x, generator)

    def batch_key(self) -> tuple:
        """Tasks with equal keys compute their loss with the same code and Python constants, so a batched ensemble
        can train them in one vmapped step (reconstruction, denoising and inpainting differ only in their draws)."""
        return (type(self).loss_given,)

    def loss_given(self, model: "PretextModel", x, y, drawn) -> torch.Tensor:
        """Per-example training loss (N,) given this batch's draws (deterministic)."""
        return _mse(model(drawn), x)

    def loss(self, model: "PretextModel", x, y, generator) -> torch.Tensor:
        """Per-example training loss (N,), with this task's random corruption."""
        return self.loss_given(model, x, y, self.draws(model, x, generator))

    def example_extra(self, x: torch.Tensor):
        """Per-example tensors the deterministic loss needs besides (x, y), precomputed for a batch."""
        return None

    def example_loss(self, forward, x, y, extra=None) -> torch.Tensor:
        """Deterministic per-example loss (N,) of ``forward`` (a callable model) on clean inputs."""
        return _mse(forward(x), x)


def _mse(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (out - x).pow(2).flatten(1).mean(1)


__all__ = ["PretextTask"]
