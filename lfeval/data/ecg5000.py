"""ECG5000 heartbeats (UCR archive), read through the UCR door (:mod:`lfeval.data.ucr`), with the paper's split.

Crabbé & van der Schaar (2022, §4.1) train the ECG autoencoder on normal heartbeats and explain
abnormal ones: lfeval pools the UCR train and test files, puts every normal beat (class 1) in
``x_train`` and every abnormal beat (classes 2-5) in ``x_test``. Labels are ``class - 1`` (0 = normal).
Beats are (N, 1, 140) series min-max scaled into [0, 1] with the training range, test beats clipped.
The baseline is the mean normal beat (paper §4.1). ``lfeval.data.load("ucr:ECG5000", root=...)`` gives
the archive's own split instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidInput
from .base import Dataset
from .ucr import _find, read_archive, scale

#: ECG5000's class names, for the archive's labels 1..5 (lfeval's labels 0..4)
CLASSES = ["normal", "R-on-T PVC", "PVC", "SP or EB", "UB"]


def _labels(y, split: str, root) -> np.ndarray:
    """The archive's labels 1..5 of one file as lfeval's 0..4; InvalidInput naming the file and the bad labels."""
    found = _find("ECG5000", Path(root).expanduser()) if root is not None else None
    where = str(found[split == "TEST"]) if found is not None else f"ECG5000_{split}"
    try:
        values = np.asarray(y).astype(float)
    except ValueError:
        values = np.full(len(y), np.nan)
    ok = np.isfinite(values) & (values == np.round(values)) & (values >= 1) & (values <= len(CLASSES))
    if not ok.all():
        bad = sorted(set(np.asarray(y)[~ok].tolist()), key=str)
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise InvalidInput(f"{where} has labels outside ECG5000's classes 1-{len(CLASSES)} ({', '.join(CLASSES)}): "
                           f"{shown} in {int((~ok).sum())} row(s). Check that the file is ECG5000 and that its first "
                           "column is the class label.")
    return values.astype(int) - 1


def load_ecg5000(root=None, seed: int = 0, download: bool = False) -> Dataset:
    """ECG5000 as (N, 1, 140) series in [0, 1]: normal beats train, abnormal beats test (see the module doc)."""
    x_tr, y_tr, x_te, y_te = read_archive("ECG5000", root, download)
    beats = np.concatenate([x_tr, x_te])
    labels = np.concatenate([_labels(y_tr, "TRAIN", root), _labels(y_te, "TEST", root)])
    normal = labels == 0
    if not normal.any() or normal.all():
        raise InvalidInput("ECG5000 files need both normal (class 1) and abnormal (classes 2-5) beats.")
    train, test, span = scale(beats[normal], beats[~normal])
    x_train = torch.as_tensor(train, dtype=torch.float32)
    return Dataset(
        name="ecg5000",
        x_train=x_train,
        y_train=torch.as_tensor(labels[normal]),
        x_test=torch.as_tensor(test, dtype=torch.float32),
        y_test=torch.as_tensor(labels[~normal]),
        baseline=x_train.mean(0),
        modality="time_series",
        classes=list(CLASSES),
        info={"root": None if root is None else str(root), "scale": span},
    )
