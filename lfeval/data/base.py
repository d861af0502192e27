"""The :class:`Dataset` container returned by :func:`lfeval.data.load`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import torch

from ..errors import InvalidArgument
from ..modalities import get_modality

Baseline = Union[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


@dataclass
class Dataset:
    """A train/test split of real data, ready for encoders and explainers.

    Attributes
    ----------
    name : str
        The name it was loaded under (``"digits"``, ``"mnist"``, ``"medmnist:dermamnist"``...).
    x_train, x_test : torch.Tensor, float32 in [0, 1]
        Images (N, C, H, W), tabular (N, 1, D) or time series (N, C, T).
    y_train, y_test : torch.Tensor, int64, shape (N,), or None
        Labels. lfeval never uses them to explain, only to train the classification
        pretext and to score (e.g. :class:`lfeval.metrics.SimilarityRate`). A data set without
        labels has None for both (:attr:`has_labels`).
    baseline : tensor or callable
        The masking baseline the paper uses for this data (zeros for digit images, the
        mean normal beat for ECG5000, a Gaussian blur for CIFAR-10). A tensor broadcasts
        to one input; a callable maps a batch (N, ...) to a batch of baselines.
    modality : lfeval.modalities.Modality
        Image, tabular or time series (a name is converted; the object equals its name, so
        ``ds.modality == "image"`` holds). It owns the layout, the masking unit and the plot kind.
    classes : list of str
        Class names, index = label.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    baseline: Baseline
    modality: str
    classes: list = field(default_factory=list)
    info: dict = field(default_factory=dict)
    feature_names: Optional[list] = None

    def __post_init__(self):
        self.modality = get_modality(self.modality)
        if (self.y_train is None) != (self.y_test is None):
            raise InvalidArgument("A Dataset has labels for both splits or for neither; got them for one only.")

    @property
    def has_labels(self) -> bool:
        return self.y_train is not None

    @property
    def input_shape(self) -> tuple:
        """Shape of one input, without the batch axis."""
        return tuple(self.x_train.shape[1:])

    @property
    def n_classes(self) -> int:
        if not self.has_labels:
            return 0
        return int(max(self.y_train.max(), self.y_test.max()) + 1)

    def baseline_for(self, x: torch.Tensor) -> torch.Tensor:
        """The baseline for a batch ``x``, shaped like ``x``."""
        if callable(self.baseline):
            return self.baseline(x)
        return self.baseline.to(x.device, x.dtype).expand_as(x)

    def fingerprint(self) -> str:
        """A hash of the data, used to key caches of trained models."""
        h = hashlib.sha256()
        for t in (self.x_train, self.y_train, self.x_test, self.y_test):
            if t is None:
                h.update(b"no labels")
                continue
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, modality={self.modality!r}, train={tuple(self.x_train.shape)}, "
            f"test={tuple(self.x_test.shape)}, classes={self.n_classes})"
        )
