"""Per-example losses for the loss-based example methods (TracIn, influence functions) of encoders that
lfeval did not train.

A loss is a callable ``loss(forward, x, y, extra) -> (N,)``, where ``forward`` is the differentiated model
(the encoder, as a functional call), ``y`` the labels (or zeros) and ``extra`` per-example tensors the loss
needs and that must be computed outside the per-example gradient (random views, say). An
:class:`ExampleLoss` declares that second part with :meth:`extra`.

>>> import torch
>>> loss = AlignmentLoss("tabular")
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
>>> x = torch.rand(5, 1, 4)
>>> tuple(loss(net, x, None, loss.extra(x)).shape)                # 1 - cos(f(x), f(view of x))
(5,)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..modalities import get_modality


class ExampleLoss:
    """Base class: ``__call__(forward, x, y, extra) -> (N,)`` and the ``extra`` it needs."""

    name = "loss"

    def extra(self, x: torch.Tensor):
        """Per-example tensors computed once per batch, outside the per-example gradients (default None)."""
        return None

    def __call__(self, forward, x, y, extra=None) -> torch.Tensor:
        raise NotImplementedError


class AlignmentLoss(ExampleLoss):
    """1 - cos(f(x), f(x~)) with x~ a fixed-seed augmented view of x (the modality's contrastive augmentation):
    SimCLR's alignment term on the encoder alone, a self-supervised loss any encoder can be differentiated
    through without a decoder or a head (the contrastive pretext's ``example_loss`` uses its projection head)."""

    name = "alignment"

    def __init__(self, modality, seed: int = 0):
        self.augment, self.seed = get_modality(modality).augment, int(seed)

    def extra(self, x):
        return self.augment(x, torch.Generator().manual_seed(self.seed))  # a CPU generator: one view on any device

    def __call__(self, forward, x, y, extra=None):
        view = self.extra(x) if extra is None else extra
        return 1 - F.cosine_similarity(forward(x), forward(view), dim=-1)


#: named losses a user encoder can be given in a run's config (``loss = "alignment"``)
NAMED_LOSSES = {"alignment": AlignmentLoss}
