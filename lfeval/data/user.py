"""Your own data: arrays in an ``.npz`` file (``"npz:PATH"``), an image folder (``"folder:PATH"``, torchvision's
``ImageFolder`` layout) and a CSV table (``"csv:PATH"``).

Each becomes an :class:`lfeval.data.Dataset` checked like the built-in sets: finite values in [0, 1] (or
``scale="minmax"`` to scale them with the training range), the same sample shape in both splits, labels
(optional) as integer classes of the right length. Without labels, ``y_train``/``y_test`` are None and the
label-needing parts (SimilarityRate, the classification pretext, the probe) say so instead of running.

>>> import numpy as np, tempfile, os, lfeval
>>> path = os.path.join(tempfile.mkdtemp(), "mine.npz")
>>> np.savez(path, x_train=np.random.rand(20, 1, 6), x_test=np.random.rand(5, 1, 6))
>>> ds = lfeval.data.load("npz:" + path)
>>> ds.modality.name, tuple(ds.x_train.shape), ds.has_labels
('tabular', (20, 1, 6), False)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetUnavailable, InvalidArgument, InvalidInput
from ..modalities import default_modality, get_modality
from ..validation import check_choice, check_labels, check_number
from .base import Dataset
from .tabular import minmax_scale

SCALES = ("none", "minmax")
BASELINES = ("zeros", "mean")


def _file(path, what: str) -> Path:
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise DatasetUnavailable(f"{what} {str(p)!r} does not exist; give the path of your file after the prefix, "
                                 f"e.g. '{what.split()[0].lower()}:/data/mine'.")
    return p


def _finish(name, x_train, x_test, y_train, y_test, modality, scale, baseline, **fields) -> Dataset:
    """Scale, check and wrap arrays (N, *sample) into a Dataset."""
    scale = check_choice(scale, SCALES, "scale")
    baseline_rule = check_choice(baseline, BASELINES, "baseline") if isinstance(baseline, str) else baseline
    x_train = torch.as_tensor(np.asarray(x_train, dtype=np.float32))
    x_test = torch.as_tensor(np.asarray(x_test, dtype=np.float32))
    if x_train.ndim < 2 or len(x_train) == 0 or len(x_test) == 0:
        raise InvalidInput(f"{name}: x_train and x_test must be non-empty batches (N, ...), got shapes "
                           f"{tuple(x_train.shape)} and {tuple(x_test.shape)}.")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise InvalidInput(f"{name}: x_train samples {tuple(x_train.shape[1:])} and x_test samples "
                           f"{tuple(x_test.shape[1:])} differ; both splits must hold inputs of one encoder.")
    for split, x in (("x_train", x_train), ("x_test", x_test)):
        if not bool(torch.isfinite(x).all()):
            raise InvalidInput(f"{name}: {split} holds NaN/inf values; clean or impute them first.")
    modality = default_modality(tuple(x_train.shape[1:])) if modality is None else get_modality(modality)
    shape = modality.canonical_shape(tuple(x_train.shape[1:]))
    x_train, x_test = x_train.reshape(len(x_train), *shape), x_test.reshape(len(x_test), *shape)
    modality.check_sample_shape(shape, f"{name} samples")
    if scale == "minmax":
        lo, hi = x_train.min(), x_train.max()
        span = hi - lo if hi > lo else torch.tensor(1.0)
        x_train, x_test = (x_train - lo) / span, ((x_test - lo) / span).clamp(0, 1)
    elif float(min(x_train.min(), x_test.min())) < 0 or float(max(x_train.max(), x_test.max())) > 1:
        raise InvalidInput(
            f"{name}: inputs span [{float(min(x_train.min(), x_test.min())):.3g}, "
            f"{float(max(x_train.max(), x_test.max())):.3g}], but lfeval's data live in [0, 1] (masking baselines "
            "and perturbations assume it). Pass scale='minmax' (data_options) to scale with the training range, or "
            "scale the arrays yourself; an encoder that expects normalised inputs takes `normalize` in its config."
        )
    if (y_train is None) != (y_test is None):
        raise InvalidInput(f"{name}: labels are given for one split only; give y_train and y_test, or neither.")
    if y_train is not None:
        y_train, y_test = check_labels(y_train, "y_train", len(x_train)), check_labels(y_test, "y_test", len(x_test))
    if isinstance(baseline_rule, str):
        base = x_train.mean(0) if baseline_rule == "mean" else torch.zeros(shape)
    else:
        base = torch.full(shape, check_number(baseline_rule, "baseline", minimum=0.0))
    return Dataset(name=name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, baseline=base,
                   modality=modality, **fields)


def load_npz(root=None, seed: int = 0, path: str = "", modality=None, scale: str = "none",
             baseline="zeros") -> Dataset:
    """Arrays ``x_train``, ``x_test`` and optionally ``y_train``, ``y_test`` from an ``.npz`` file (read with
    ``allow_pickle=False``: an npz cannot run code). ``modality`` defaults to the one of the sample shape
    (:func:`lfeval.modalities.default_modality`); ``baseline`` is "zeros", "mean" (the mean training
    input) or a number."""
    p = _file(path, "NPZ file")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError) as exc:
        raise InvalidInput(f"Cannot read {p} as an npz of numeric arrays ({exc}).") from None
    missing = [k for k in ("x_train", "x_test") if k not in arrays]
    if missing:
        raise InvalidInput(f"{p} lacks {', '.join(missing)}; it holds {sorted(arrays)}. Save it with "
                           "np.savez(path, x_train=..., x_test=..., y_train=..., y_test=...).")
    return _finish(f"npz:{p}", arrays["x_train"], arrays["x_test"], arrays.get("y_train"), arrays.get("y_test"),
                   modality, scale, baseline, info={"path": str(p)})


def load_image_folder(root=None, seed: int = 0, path: str = "", size=None, grayscale: bool = False,
                      test_size: float = 0.2, limit=None) -> Dataset:
    """Images under ``PATH/<class>/*`` (torchvision's ``ImageFolder``), or ``PATH/train/<class>/*`` and
    ``PATH/test/<class>/*``; resized to ``size`` (an int or (h, w)), RGB or ``grayscale``, in [0, 1]. Without
    train/test folders a seeded stratified split holds out ``test_size``. Labels are the class folders."""
    from sklearn.model_selection import train_test_split
    from torchvision import datasets, transforms

    p = _file(path, "Image folder")
    steps = ([transforms.Grayscale()] if grayscale else [transforms.Lambda(lambda im: im.convert("RGB"))])
    if size is not None:
        steps.append(transforms.Resize(tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size))))
    transform = transforms.Compose(steps + [transforms.ToTensor()])

    def read(folder: Path):
        try:
            ds = datasets.ImageFolder(str(folder), transform=transform)
        except (FileNotFoundError, RuntimeError) as exc:
            raise InvalidInput(f"{folder} is not an image folder (<class>/<image> files): {exc}") from None
        images = [ds[i][0] for i in range(len(ds) if limit is None else min(limit, len(ds)))]
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) > 1:
            raise InvalidInput(f"Images in {folder} have different sizes {sorted(shapes)[:3]}; pass `size` "
                               "(data_options) to resize them.")
        return torch.stack(images), torch.as_tensor(ds.targets[:len(images)]), ds.classes

    if (p / "train").is_dir() and (p / "test").is_dir():
        (x_tr, y_tr, classes), (x_te, y_te, _) = read(p / "train"), read(p / "test")
    else:
        x, y, classes = read(p)
        if not 0 < test_size < 1:
            raise InvalidArgument(f"`test_size` must be in (0, 1), got {test_size!r}.")
        counts = np.bincount(y.numpy())
        stratify = y.numpy() if counts.min() >= 2 else None
        tr, te = train_test_split(np.arange(len(y)), test_size=test_size, random_state=seed, stratify=stratify)
        x_tr, y_tr, x_te, y_te = x[tr], y[tr], x[te], y[te]
    return _finish(f"folder:{p}", x_tr, x_te, y_tr, y_te, "image", "none", "zeros", classes=list(classes),
                   info={"path": str(p)})


def load_csv(root=None, seed: int = 0, path: str = "", label=None, test_size: float = 0.3,
             baseline="mean") -> Dataset:
    """A table of numeric feature columns (and an optional integer-or-text ``label`` column; "label" or
    "target" when present) as tabular rows (N, 1, D), min-max scaled with the training range, split by
    ``seed`` (stratified when labelled). The column names become the feature names shown in the report;
    the baseline is the mean training row (default) or zeros."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    p = _file(path, "CSV file")
    try:
        table = pd.read_csv(p)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise InvalidInput(f"Cannot read {p} as a CSV table ({exc}).") from None
    if label is None:
        label = next((c for c in ("label", "target") if c in table.columns), None)
    elif label not in table.columns:
        check_choice(label, list(table.columns), f"label column of {p.name}")
    features = [c for c in table.columns if c != label]
    text = [c for c in features if not pd.api.types.is_numeric_dtype(table[c])]
    if text or not features:
        raise InvalidInput(f"{p}: feature columns must be numeric; {text or 'none'} are not. Name the label column "
                           "with `label` (data_options) or encode the text columns first.")
    x = table[features].to_numpy(np.float32)
    if not 0 < test_size < 1:
        raise InvalidArgument(f"`test_size` must be in (0, 1), got {test_size!r}.")
    classes, y = None, None
    if label is not None:
        codes, classes = pd.factorize(table[label], sort=True)
        y = codes.astype(np.int64)
    stratify = y if y is not None and np.bincount(y).min() >= 2 else None
    tr, te = train_test_split(np.arange(len(x)), test_size=test_size, random_state=seed, stratify=stratify)
    if not np.isfinite(x).all():
        raise InvalidInput(f"{p}: feature columns hold NaN/inf values; clean or impute them first.")
    x_tr, x_te = minmax_scale(torch.as_tensor(x[tr]), torch.as_tensor(x[te]))
    return _finish(f"csv:{p}", x_tr[:, None], x_te[:, None], None if y is None else y[tr], None if y is None else y[te],
                   "tabular", "none", baseline, classes=[str(c) for c in classes] if classes is not None else [],
                   feature_names=[str(f) for f in features], info={"path": str(p), "label": label})
