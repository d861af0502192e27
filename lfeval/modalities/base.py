"""The :class:`Modality` base class: what lfeval needs to know about a kind of data.

A modality owns the layout of one sample, the rule for its masking baseline, its masking unit
(the "feature" that RepresentationShift, ROAD and the stock perturbation metrics remove), Quantus'
``DataType``, the augmentations of the contrastive pretext, the default encoder architecture and
how a sample and its attribution are drawn. No other code looks at ``ndim`` to guess any of it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InvalidInput


class Modality:
    """Base class of a data modality; subclasses set the class attributes and override the methods.

    Attributes
    ----------
    name : str
        The registry name (``"image"``, ``"tabular"``, ``"time_series"``).
    layout : str
        One sample's axes, e.g. ``"(C, H, W)"``; ``sample_ndim`` is their count.
    quantus_name : str
        The member of ``quantus.helpers.enums.DataType`` (:attr:`data_type`).
    architecture : str
        The encoder family :func:`lfeval.models.build_encoder` builds for it (``"conv"``, ``"mlp"``, ``"lstm"``).
    plot_kind : str
        How a sample is drawn: ``"image"``, ``"bars"`` or ``"curve"``.
    """

    name = "base"
    layout = "(...)"
    sample_ndim = 0
    quantus_name = "IMAGE"
    architecture = "mlp"
    plot_kind = "bars"
    #: inputs are real-valued (noise, interpolation and imputation mean something); False for token ids
    continuous = True
    #: the range a loader's inputs must lie in
    value_range = (0.0, 1.0)
    #: noise levels of the MetaQuantus input tests and their centred-cosine keep thresholds
    #: (:func:`lfeval.meta.default_test_suite`)
    meta_noise = {"resilience": 0.01, "adversary": 0.5}
    meta_thresholds = {"resilience": 0.99, "adversary": 0.95}

    def input_dtype(self, model_dtype: torch.dtype) -> torch.dtype:
        """The dtype inputs take for a model computing in ``model_dtype``: the model's own for real-valued data
        (a float64 model sees float64 inputs); never narrower than float32 for discrete ids, which bfloat16 or
        float16 would round (ids above 256 or 2048)."""
        if self.continuous:
            return model_dtype
        return torch.promote_types(model_dtype, torch.float32)

    # ------------------------------------------------------------------ identity
    def __eq__(self, other) -> bool:  # a modality equals its name, so ds.modality == "image" reads naturally
        if isinstance(other, Modality):
            return self.name == other.name
        return isinstance(other, str) and other == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @property
    def data_type(self):
        """Quantus' ``DataType`` of this modality (imported lazily: Quantus is slow to import)."""
        from quantus.helpers.enums import DataType

        return DataType[self.quantus_name]

    # ------------------------------------------------------------------ layout
    def canonical_shape(self, shape: tuple) -> tuple:
        """The sample shape lfeval and Quantus work in, for a module's native sample ``shape``."""
        return tuple(shape)

    def check_sample_shape(self, shape: tuple, name: str = "inputs") -> None:
        """Raise :class:`InvalidInput` if a sample of ``shape`` does not fit this modality's layout."""
        if len(shape) != self.sample_ndim or any(int(s) < 1 for s in shape):
            raise InvalidInput(
                f"`{name}` samples have shape {tuple(shape)}, but {self.name} data is laid out as {self.layout} "
                f"per sample: pass a batch (N, {self.layout[1:-1]})."
            )

    # ------------------------------------------------------------------ masking units
    def unit_shape(self, shape: tuple) -> tuple:
        """Shape of one sample's masking units, broadcastable to ``shape`` (default: every entry)."""
        return tuple(shape)

    def n_features(self, shape: tuple) -> int:
        """Number of masking units (features) of a sample of ``shape``."""
        return math.prod(self.unit_shape(shape))

    def unit_importance(self, a: torch.Tensor, shape: tuple) -> torch.Tensor:
        """Importance (N, F) of each masking unit from attributions ``a`` (N, ...) of samples of ``shape``:
        ``|a|`` summed over the axes a unit spans. Attributions already reduced to the units' shape are
        used as they are."""
        a = a.abs()
        units = self.unit_shape(shape)
        if tuple(a.shape[1:]) != tuple(units):
            reduce = tuple(i + 1 for i, (s, u) in enumerate(zip(shape, units)) if u == 1 and s != 1)
            if tuple(a.shape[1:]) == tuple(shape) and reduce:
                a = a.sum(reduce, keepdim=True)
        return a.reshape(len(a), -1)

    def unit_mask(self, mask: torch.Tensor, shape: tuple) -> torch.Tensor:
        """A mask (..., F) over units as a tensor ``(..., *unit_shape)`` that broadcasts to samples of ``shape``."""
        return mask.reshape(*mask.shape[:-1], *self.unit_shape(shape))

    def occlusion_window(self, shape: tuple) -> tuple:
        """captum Occlusion's default sliding window: one masking unit."""
        units = self.unit_shape(shape)
        return tuple(s if u == 1 else 1 for s, u in zip(shape, units))

    def imputation_kernel(self):
        """Neighbour weights (a conv kernel over the unit axes) for noisy linear imputation (ROAD, Rong et al.
        2022), or None where features have no neighbours (tabular): missing values then take the baseline."""
        return None

    def attribution_space(self, encoder):
        """Where explainers attribute: None = the inputs themselves. Discrete inputs (text) return an object
        whose ``attribute(explainer, x, z_ref, baseline, seed, options)`` explains a chunk through a
        differentiable layer (:class:`lfeval.modalities.text.EmbeddingSpace`)."""
        return None

    def patch_size(self, shape: tuple) -> int:
        """Side of the patches of Quantus' patch-based metrics (Selectivity, RegionPerturbation, Infidelity)."""
        return 1

    # ------------------------------------------------------------------ baseline, augmentation
    def default_baseline(self, x_train: torch.Tensor | None = None, shape: tuple | None = None) -> torch.Tensor:
        """The masking baseline when the data set names none: zeros of one sample's shape."""
        shape = tuple(x_train.shape[1:]) if x_train is not None else tuple(shape)
        return torch.zeros(shape)

    def perturb_input(self, x: torch.Tensor, noise: float, generator: torch.Generator,
                      adversarial: bool = False) -> torch.Tensor:
        """The MetaQuantus input tests' perturbation: x + U(-noise, noise), clipped to the batch's [min, max]."""
        u = torch.rand(x.shape, generator=generator).to(x.device) * 2 - 1
        return (x + noise * u).clamp(float(x.min()), float(x.max()))

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A random view of a batch for the contrastive (SimCLR) pretext."""
        raise NotImplementedError(f"The {self.name} modality has no contrastive augmentation.")

    # ------------------------------------------------------------------ drawing
    def draw_input(self, ax, x) -> None:
        """Draw one sample on a matplotlib axis."""
        ax.imshow(np.asarray(x, dtype=float).reshape(1, -1), cmap="gray", aspect="auto")

    def draw_attribution(self, ax, a, x=None) -> None:
        """Draw ``|attribution|`` of one sample, per masking unit, on a matplotlib axis (``x``: the sample, for
        modalities that draw the attribution on it)."""
        ax.imshow(np.abs(np.asarray(a, dtype=float)).reshape(1, -1), cmap="hot", aspect="auto")
