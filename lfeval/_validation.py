"""Shared input checks (scikit-learn style): convert, validate, raise clear errors."""

from __future__ import annotations

import difflib
from typing import Iterable

import numpy as np
import torch

from .errors import InvalidInput, ModelStateError, UnknownName


def as_tensor(x, name: str = "x", dtype=torch.float32, device=None) -> torch.Tensor:
    """Return ``x`` (NumPy array or tensor) as a float tensor on ``device``.

    Raises :class:`InvalidInput` for objects that are not array-like.
    """
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, np.ndarray) or np.isscalar(x) or isinstance(x, (list, tuple)):
        t = torch.as_tensor(np.asarray(x))
    else:
        raise InvalidInput(f"`{name}` must be a NumPy array or a torch tensor, got {type(x).__name__}.")
    return t.to(device=device, dtype=dtype) if device is not None else t.to(dtype=dtype)


def check_finite(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Raise :class:`InvalidInput` if ``x`` holds NaN or inf."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise InvalidInput(
            f"`{name}` contains {n_bad} NaN/inf value(s); clean or impute them before calling lfeval."
        )
    return x


def check_batch(x: torch.Tensor, name: str = "x", min_ndim: int = 2) -> torch.Tensor:
    """Check that ``x`` is a non-empty batch (first axis = samples) of finite values."""
    if x.ndim < min_ndim:
        raise InvalidInput(
            f"`{name}` must have at least {min_ndim} dimensions (N, ...), got shape {tuple(x.shape)}."
        )
    if x.shape[0] == 0:
        raise InvalidInput(f"`{name}` is an empty batch (shape {tuple(x.shape)}); pass at least one sample.")
    return check_finite(x, name)


def check_eval_mode(model: torch.nn.Module, name: str = "model") -> None:
    """Raise :class:`ModelStateError` if ``model`` (or a submodule) is in train mode."""
    if any(m.training for m in model.modules()):
        raise ModelStateError(
            f"`{name}` is in train mode; call `{name}.eval()` first so dropout/batch-norm "
            "do not change the explanations."
        )


def check_choice(value, choices: Iterable, name: str):
    """Return ``value`` if it is in ``choices``; else raise :class:`UnknownName` with the closest match."""
    choices = list(choices)
    if value in choices:
        return value
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownName(f"Unknown {name} {value!r}.{hint} Valid values: {', '.join(map(repr, choices))}.")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for parameter-free models)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
