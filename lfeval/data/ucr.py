"""UCR/UEA time-series classification archives through aeon (``"ucr:<Name>"``), offline first.

aeon ships several archives inside its wheel (GunPoint, ItalyPowerDemand, ArrowHead, OSULeaf, ACSF1,
BasicMotions, ...): ``lfeval.data.load("ucr:GunPoint")`` reads them with no network. Any other archive is
read from ``root`` (the UCR 2018 ``<Name>_TRAIN.tsv``/``.txt`` files or aeon's ``.ts`` files, in ``root`` or
``root/<Name>``), or fetched by aeon's own loader with ``download=True`` for users with internet.

Series are laid out (N, C, T) (channel first, as aeon and Quantus read them), min-max scaled into [0, 1]
with the training range (test values clipped). Labels are the sorted class names' indices. The default
baseline is the mean training series (masking a time step replaces it with its average value).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetUnavailable, InvalidInput
from ..validation import check_finite
from .base import Dataset

#: archive files per split, in the order they are looked for
_SUFFIXES = (".tsv", ".txt", ".ts")


def _aeon_data_dir() -> Path:
    import aeon.datasets

    return Path(os.path.dirname(aeon.datasets.__file__)) / "data"


def shipped() -> list:
    """Names of the classification archives that ship inside aeon's wheel (readable offline)."""
    base = _aeon_data_dir()
    return sorted(p.name for p in base.iterdir() if (p / f"{p.name}_TRAIN.ts").exists())


def _find(name: str, root: Path):
    for folder in (root, root / name):
        for suffix in _SUFFIXES:
            train, test = folder / f"{name}_TRAIN{suffix}", folder / f"{name}_TEST{suffix}"
            if train.exists() and test.exists():
                return train, test
    return None


def _read_table(path: Path) -> tuple:
    """A UCR 2018 text file: one series per row, the class label first (tabs, spaces or commas)."""
    try:
        text = path.read_text().replace(",", " ")
        table = np.loadtxt(text.splitlines(), dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise InvalidInput(f"Cannot parse {path}: {exc}. Expected the UCR text format (label, then the values).")
    if table.shape[1] < 2:
        raise InvalidInput(f"{path} has {table.shape[1]} column(s); expected a label and the series' values.")
    return table[:, 1:][:, None, :], table[:, 0].astype(str)


def _read(path: Path) -> tuple:
    if path.suffix == ".ts":
        from aeon.datasets import load_from_ts_file

        x, y = load_from_ts_file(str(path))
        if not isinstance(x, np.ndarray):
            raise InvalidInput(f"{path} holds series of unequal length; lfeval needs equal-length series.")
        return x.astype(np.float64), np.asarray(y).astype(str)
    return _read_table(path)


def read_archive(name: str, root=None, download: bool = False) -> tuple:
    """``(x_train, y_train, x_test, y_test)`` as arrays (N, C, T) and label strings, from aeon's shipped
    copy, ``root`` or (``download=True``) aeon's loader; :class:`DatasetUnavailable` otherwise."""
    found = _find(name, Path(root).expanduser()) if root is not None else None
    if found is None:
        local = _aeon_data_dir() / name
        if (local / f"{name}_TRAIN.ts").exists():
            found = local / f"{name}_TRAIN.ts", local / f"{name}_TEST.ts"
    if found is not None:
        (x_tr, y_tr), (x_te, y_te) = _read(found[0]), _read(found[1])
        return x_tr, y_tr, x_te, y_te
    if download:
        from aeon.datasets import load_classification

        target = str(Path(root).expanduser()) if root is not None else None
        x_tr, y_tr = load_classification(name, split="train", extract_path=target)
        x_te, y_te = load_classification(name, split="test", extract_path=target)
        return (np.asarray(x_tr, dtype=np.float64), np.asarray(y_tr).astype(str), np.asarray(x_te, dtype=np.float64),
                np.asarray(y_te).astype(str))
    where = root if root is not None else "<root>"
    raise DatasetUnavailable(
        f"UCR archive {name!r} is not on disk: expected {where}/{name}_TRAIN.tsv and {where}/{name}_TEST.tsv (or "
        f".txt/.ts files, or a {name}/ subfolder). aeon ships only {', '.join(shipped())}. lfeval does not "
        "download at run time; copy the archive under `root`, or pass download=True on a machine with internet."
    )


def scale(x_train: np.ndarray, x_test: np.ndarray) -> tuple:
    """Min-max into [0, 1] with the training range (one range for the whole archive); test values clipped."""
    lo, hi = float(x_train.min()), float(x_train.max())
    span = hi - lo if hi > lo else 1.0
    return (x_train - lo) / span, np.clip((x_test - lo) / span, 0.0, 1.0), (lo, hi)


def load_ucr(root=None, seed: int = 0, name: str = "GunPoint", download: bool = False, limit_train=None,
             limit_test=None) -> Dataset:
    """A UCR/UEA archive as (N, C, T) series in [0, 1] with its own train/test split (see the module doc)."""
    x_tr, y_tr, x_te, y_te = read_archive(name, root, download)
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise InvalidInput(f"UCR {name!r}: train series {x_tr.shape[1:]} and test series {x_te.shape[1:]} differ.")
    x_tr, x_te, span = scale(x_tr, x_te)
    classes = sorted({str(c) for c in set(y_tr) | set(y_te)}, key=lambda c: (len(c), c))
    index = {c: i for i, c in enumerate(classes)}
    x_train = check_finite(torch.as_tensor(x_tr, dtype=torch.float32), f"UCR {name} train series")
    x_test = check_finite(torch.as_tensor(x_te, dtype=torch.float32), f"UCR {name} test series")
    y_train = torch.as_tensor([index[c] for c in y_tr], dtype=torch.long)
    y_test = torch.as_tensor([index[c] for c in y_te], dtype=torch.long)
    x_train, y_train, x_test, y_test = x_train[:limit_train], y_train[:limit_train], x_test[:limit_test], \
        y_test[:limit_test]
    return Dataset(name=f"ucr:{name}", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   baseline=x_train.mean(0), modality="time_series", classes=classes,
                   info={"root": None if root is None else str(root), "scale": span})
