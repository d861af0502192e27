"""The base of the explainers that encode each input under many random masks of its masking units: RELAX
(:mod:`lfeval.explain.relax`) and the Distance Explainer (:mod:`lfeval.explain.distance`).

Both keep a unit's value where the mask is 1 and take the baseline where it is 0 (x ⊙ M + r ⊙ (1 − M)), draw
smooth masks over the spatial axes of images and the time axis of series (shared by the channels) and independent
ones over tabular entries and tokens, and bound the masked inputs per forward pass by the pass budget.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..memory import rows_per_pass
from ..validation import check_positive_int
from .base import FeatureExplainer


class MaskingExplainer(FeatureExplainer):
    """A feature explainer over random masks of the masking units (module docstring). Subclasses draw the masks
    in :meth:`attribute_batch`, lay them out with :meth:`mask_layout` and encode :meth:`masked` inputs in blocks
    of ``self._rows // n`` masks."""

    uses_baseline = True
    unit_masking = True  # text: tokens of the input are kept or deleted, no embeddings involved
    #: masked inputs per forward pass, set by :meth:`attribute` from its ``batch_size`` and the pass budget
    _rows = 256

    def attribute(self, inputs, baseline=None, seed: int = 0, batch_size: int = 256, reference=None, **options):
        """:meth:`FeatureExplainer.attribute`, with ``batch_size`` bounding the masked inputs per forward pass."""
        self._rows = rows_per_pass(math.prod(np.shape(inputs)[1:]), check_positive_int(batch_size, "batch_size"),
                                   device=self.encoder if isinstance(self.encoder, torch.nn.Module) else None)
        return super().attribute(inputs, baseline=baseline, seed=seed, batch_size=batch_size, reference=reference,
                                 **options)

    def mask_layout(self, shape: tuple) -> tuple:
        """``(units shape, size the smooth masks cover or None for independent units)`` of inputs of ``shape``:
        images (C, H, W) get (1, H, W) masks over (H, W), series (C, T) (1, T) masks over time, other modalities
        one independent unit each (:meth:`lfeval.modalities.Modality.unit_shape`)."""
        name = self.encoder.modality.name
        if name == "image":
            return (1, *shape[1:]), tuple(shape[1:])
        if name == "time_series":
            return (1, shape[-1]), (shape[-1],)
        return tuple(self.encoder.modality.unit_shape(shape)), None

    @staticmethod
    def masked(x: torch.Tensor, masks: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
        """Every input under every mask, ``(n * b, *shape)``: x ⊙ M + r ⊙ (1 − M) for ``masks`` ``(b, *units)``."""
        out = x.unsqueeze(1) * masks + baseline.unsqueeze(1) * (1 - masks)
        return out.reshape(len(x) * len(masks), *x.shape[1:])


__all__ = ["MaskingExplainer"]
