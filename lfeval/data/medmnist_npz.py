"""MedMNIST 2D data sets (``"medmnist:<flag>"``), read by the medmnist package from ``<root>/<flag>.npz``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetUnavailable, InvalidArgument
from ..validation import check_choice
from .base import Dataset


def _flags_2d() -> list:
    import medmnist

    return [f for f, info in medmnist.INFO.items() if not f.endswith("3d")]


def load_medmnist(root=None, seed: int = 0, flag: str = "dermamnist", size=None) -> Dataset:
    """A 2D MedMNIST set: train split -> ``x_train``, test split -> ``x_test`` (the val split is unused).

    Images (N, 1, s, s) for grey sets, (N, 3, s, s) for RGB ones, scaled from uint8 into [0, 1];
    labels (N,). Multi-label sets (chestmnist) are refused: lfeval's label-based scores need one
    class per sample. ``size`` picks ``<flag>_<size>.npz`` (64, 128, 224) instead of the 28x28 file.
    """
    import medmnist

    check_choice(flag, _flags_2d(), "MedMNIST flag")
    info = medmnist.INFO[flag]
    if "multi-label" in info["task"]:
        raise InvalidArgument(
            f"MedMNIST {flag!r} is multi-label ({info['task']}); pick a single-label flag such as 'dermamnist'."
        )
    size_flag = "" if size in (None, 28) else f"_{size}"
    expected = f"{flag}{size_flag}.npz"
    if root is None or not (Path(root).expanduser() / expected).exists():
        where = f"{root}/{expected}" if root is not None else f"<root>/{expected}"
        raise DatasetUnavailable(
            f"MedMNIST {flag!r} is not on disk: expected {where}. lfeval does not download at run time; get "
            f"the file with `medmnist.{info['python_class']}(split='train', root=..., download=True)` on a machine "
            "with internet, copy it under `root`, then call lfeval.data.load('medmnist:" + flag + "', root=...)."
        )
    cls = getattr(medmnist, info["python_class"])
    root = str(Path(root).expanduser())
    train = cls(split="train", root=root, download=False, size=size)
    test = cls(split="test", root=root, download=False, size=size)

    def images(a) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(a)).to(torch.float32) / 255.0
        return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()

    def labels(a) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a)).reshape(len(a), -1)[:, 0].long()

    x_tr = images(train.imgs)
    return Dataset(
        name=f"medmnist:{flag}",
        x_train=x_tr,
        y_train=labels(train.labels),
        x_test=images(test.imgs),
        y_test=labels(test.labels),
        baseline=torch.zeros(x_tr.shape[1:]),
        modality="image",
        classes=[info["label"][k] for k in sorted(info["label"], key=int)],
        info={"root": root, "flag": flag, "size": size or 28},
    )
