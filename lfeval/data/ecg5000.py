"""ECG5000 heartbeats (UCR archive) from text files under ``root``, with the paper's split.

Crabbé & van der Schaar (2022, §4.1) train the ECG autoencoder on normal heartbeats and
explain abnormal ones: lfeval pools the UCR train and test files, puts every normal beat
(class 1) in ``x_train`` and every abnormal beat (classes 2-5) in ``x_test``. Labels are
``class - 1`` (0 = normal). Beats are min-max scaled into [0, 1] with the training range,
test beats clipped. The baseline is the mean normal beat (paper §4.1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetUnavailable, InvalidInput
from ..validation import check_finite
from .base import Dataset

_NAMES = [("ECG5000_TRAIN.txt", "ECG5000_TEST.txt"), ("ECG5000_TRAIN.tsv", "ECG5000_TEST.tsv")]


def _find(root: Path):
    for folder in (root, root / "ECG5000"):
        for train, test in _NAMES:
            if (folder / train).exists() and (folder / test).exists():
                return folder / train, folder / test
    return None


def _read(path: Path) -> np.ndarray:
    try:
        table = np.loadtxt(path, dtype=np.float64, ndmin=2)  # whitespace (.txt) and tabs (.tsv) alike
    except ValueError as exc:
        raise InvalidInput(f"Cannot parse {path}: {exc}. Expected the UCR text format (label, then 140 values).")
    if table.shape[1] < 2:
        raise InvalidInput(f"{path} has {table.shape[1]} column(s); expected a label and the beat's values.")
    return table


def load_ecg5000(root=None, seed: int = 0) -> Dataset:
    """ECG5000 as (N, 140, 1) time series (time-major) in [0, 1]: normal beats train, abnormal beats test."""
    found = _find(Path(root).expanduser()) if root is not None else None
    if found is None:
        where = root if root is not None else "<root>"
        raise DatasetUnavailable(
            f"ECG5000 is not on disk: expected {where}/ECG5000_TRAIN.txt and {where}/ECG5000_TEST.txt (or the "
            ".tsv files of the 2018 UCR archive, or an ECG5000/ subfolder). lfeval does not download at run "
            "time: copy the UCR archive's ECG5000 files under `root`."
        )
    table = np.concatenate([_read(found[0]), _read(found[1])])
    labels = torch.as_tensor(table[:, 0]).round().long() - 1
    beats = check_finite(torch.as_tensor(table[:, 1:], dtype=torch.float32), f"ECG5000 files in {found[0].parent}")
    normal = labels == 0
    if not normal.any() or normal.all():
        raise InvalidInput("ECG5000 files need both normal (class 1) and abnormal (classes 2-5) beats.")
    x_tr, x_te = beats[normal], beats[~normal]
    lo, hi = x_tr.min(), x_tr.max()
    x_tr, x_te = ((x_tr - lo) / (hi - lo)).unsqueeze(-1), ((x_te - lo) / (hi - lo)).clamp(0, 1).unsqueeze(-1)
    return Dataset(
        name="ecg5000",
        x_train=x_tr,
        y_train=labels[normal],
        x_test=x_te,
        y_test=labels[~normal],
        baseline=x_tr.mean(0),
        modality="time_series",
        classes=["normal", "R-on-T PVC", "PVC", "SP or EB", "UB"],
        info={"root": str(found[0].parent), "scale": (float(lo), float(hi))},
    )
