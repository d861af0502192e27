"""Tabular data shaped (N, 1, D): scikit-learn's breast-cancer set (ships with scikit-learn)."""

from __future__ import annotations

import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from ..errors import InvalidArgument
from .base import Dataset


def minmax_scale(train: torch.Tensor, test: torch.Tensor) -> tuple:
    """Scale into [0, 1] with the training minimum and range per feature; clip the test split."""
    lo, hi = train.min(0, keepdim=True).values, train.max(0, keepdim=True).values
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return ((train - lo) / span).clamp(0, 1), ((test - lo) / span).clamp(0, 1)


def load_breast_cancer_dataset(root=None, seed: int = 0, test_size: float = 0.3) -> Dataset:
    """569 tumours x 30 features, seeded stratified split, min-max scaled with train statistics.

    Shape (N, 1, 30). The baseline is the mean training feature vector (masking a feature
    replaces it with its average, the usual tabular choice).
    """
    if not 0.0 < test_size < 1.0:
        raise InvalidArgument(f"`test_size` must be in (0, 1), got {test_size}.")
    bunch = load_breast_cancer()
    x = torch.tensor(bunch.data, dtype=torch.float32)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    tr, te = train_test_split(range(len(y)), test_size=test_size, random_state=seed, stratify=bunch.target)
    x_tr, x_te = minmax_scale(x[tr], x[te])
    return Dataset(
        name="breast_cancer",
        x_train=x_tr.unsqueeze(1),
        y_train=y[tr],
        x_test=x_te.unsqueeze(1),
        y_test=y[te],
        baseline=x_tr.mean(0, keepdim=True),
        modality="tabular",
        classes=list(bunch.target_names),
        info={"seed": seed, "test_size": test_size, "features": list(bunch.feature_names)},
    )
