"""scikit-learn's handwritten digits: the embedded default data set (no download)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ..errors import InvalidArgument
from .base import Dataset


def load_digits_dataset(root=None, seed: int = 0, test_size: float = 0.3, size: int = 8) -> Dataset:
    """1797 real 8x8 digits (UCI), scaled from 0..16 into [0, 1], shape (N, 1, size, size).

    Parameters
    ----------
    seed : int
        Seed of the stratified train/test split.
    test_size : float
        Fraction of samples in the test split (stratified by label).
    size : int
        8 keeps the native resolution; any larger value (e.g. 28) upsamples bilinearly so
        MNIST-sized models run on it.
    """
    if not 0.0 < test_size < 1.0:
        raise InvalidArgument(f"`test_size` must be in (0, 1), got {test_size}.")
    if int(size) < 8:
        raise InvalidArgument(f"`size` must be >= 8 (the native resolution), got {size}.")
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    idx_train, idx_test = train_test_split(
        range(len(y)), test_size=test_size, random_state=seed, stratify=bunch.target
    )
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    name = "digits" if size == 8 else f"digits{size}"
    return Dataset(
        name=name,
        x_train=x[idx_train],
        y_train=y[idx_train],
        x_test=x[idx_test],
        y_test=y[idx_test],
        baseline=torch.zeros(1, size, size),
        modality="image",
        classes=[str(c) for c in range(10)],
        info={"seed": seed, "test_size": test_size, "size": size},
    )
