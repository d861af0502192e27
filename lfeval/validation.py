"""Input checks shared by every public entry point (scikit-learn style): convert, validate, raise
:mod:`lfeval.errors` exceptions whose message names the argument and the fix.

>>> import numpy as np
>>> check_inputs(np.zeros((2, 1, 3)), name="x_batch").shape
torch.Size([2, 1, 3])
>>> check_inputs(np.zeros((0, 3)), name="x_batch")
Traceback (most recent call last):
...
lfeval.errors.InvalidInput: `x_batch` is an empty batch (shape (0, 3)); pass at least one sample.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch

from .errors import InvalidArgument, InvalidInput, ModelStateError
from .registry import unknown


def as_tensor(x, name: str = "x", dtype=torch.float32, device=None) -> torch.Tensor:
    """Return ``x`` (NumPy array or tensor) as a float tensor on ``device``.

    Raises :class:`InvalidInput` for objects that are not array-like.
    """
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, np.ndarray) or np.isscalar(x) or isinstance(x, (list, tuple)):
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"`{name}` is not a numeric array ({exc}).") from None
    else:
        raise InvalidInput(f"`{name}` must be a NumPy array or a torch tensor, got {type(x).__name__}.")
    if t.is_complex():
        raise InvalidInput(f"`{name}` must hold real numbers, got dtype {t.dtype}.")
    return t.to(device=device, dtype=dtype) if device is not None else t.to(dtype=dtype)


def to_numpy(x, dtype=np.float32) -> np.ndarray:
    """A contiguous NumPy copy of a tensor or array (detached, on the CPU), for the Quantus boundary."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = (x.float() if x.is_floating_point() and x.dtype.itemsize < 4 else x).numpy()
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)


def check_finite(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Raise :class:`InvalidInput` if ``x`` holds NaN or inf (one min/max pass: NaN and inf reach them)."""
    if x.is_floating_point() and x.numel() and not all(map(math.isfinite, _minmax(x))):
        n_bad = int((~torch.isfinite(x)).sum())
        raise InvalidInput(
            f"`{name}` contains {n_bad} NaN/inf value(s); clean or impute them before calling lfeval."
        )
    return x


def _minmax(x: torch.Tensor) -> tuple:
    lo, hi = torch.aminmax(x)
    return float(lo), float(hi)


def check_batch(x: torch.Tensor, name: str = "x", min_ndim: int = 2) -> torch.Tensor:
    """Check that ``x`` is a non-empty batch (first axis = samples) of finite values."""
    return check_finite(_check_shape(x, name, min_ndim), name)


def _check_shape(x: torch.Tensor, name: str, min_ndim: int = 2) -> torch.Tensor:
    if x.ndim < min_ndim:
        raise InvalidInput(
            f"`{name}` must have at least {min_ndim} dimensions (N, ...), got shape {tuple(x.shape)}."
        )
    if x.shape[0] == 0:
        raise InvalidInput(f"`{name}` is an empty batch (shape {tuple(x.shape)}); pass at least one sample.")
    return x


def check_inputs(x, encoder=None, name: str = "inputs", device=None) -> torch.Tensor:
    """A validated float batch: array-like, non-empty, finite and, given an :class:`lfeval.Encoder`, in
    the encoder's layout (its modality's sample shape, and its input shape when known), on its device (or
    ``device``) and in its data dtype (:meth:`lfeval.Encoder.place`); float32 without an encoder."""
    if encoder is None:
        t = as_tensor(x, name, device=device)
    else:
        t = as_tensor(x, name, dtype=encoder.data_dtype, device=device or encoder.device)
    t = check_batch(t, name)
    if encoder is not None:
        encoder.check_sample_shape(tuple(t.shape[1:]), name)
    return t


def check_labels(y, name: str = "y", n: int | None = None) -> torch.Tensor:
    """Class labels as a 1-D int64 tensor (integer-valued, finite), of length ``n`` if given."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError):
        arr = np.asarray([None])
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iuf" or (
            arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr)))):
        raise InvalidInput(f"`{name}` must be a non-empty 1-D array of integer class labels, got "
                           f"{type(y).__name__} of shape {arr.shape} and dtype {arr.dtype}.")
    if n is not None and len(arr) != n:
        raise InvalidInput(f"`{name}` has {len(arr)} labels for {n} samples.")
    return torch.as_tensor(arr.astype(np.int64))
def check_attributions(a: torch.Tensor, name: str = "a_batch") -> torch.Tensor:
    """Attributions a metric can rank: a non-empty batch of finite values that are not all zero and not all
    equal (the checks of Quantus' ``assert_attributions``, as lfeval errors, in one min/max pass)."""
    _check_shape(a, name)
    lo, hi = _minmax(a)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        check_finite(a, name)  # raises, counting the bad values
    if lo == hi:
        what = "all zero" if lo == 0 else f"all equal to {lo:g}"
        raise InvalidInput(f"`{name}` is {what}, so it ranks no feature above another; recompute the explanations "
                           "(an all-zero map often means a dead encoder or a baseline equal to the input).")
    return a


def check_eval_mode(model: torch.nn.Module, name: str = "model") -> None:
    """Raise :class:`ModelStateError` if ``model`` (or a submodule) is in train mode."""
    if any(m.training for m in model.modules()):
        raise ModelStateError(
            f"`{name}` is in train mode; call `{name}.eval()` first so dropout/batch-norm "
            "do not change the explanations."
        )


def check_module(model, name: str = "model") -> torch.nn.Module:
    """``model`` if it is a ``torch.nn.Module`` in eval mode, else a clear error."""
    if not isinstance(model, torch.nn.Module):
        raise InvalidArgument(f"`{name}` must be a torch.nn.Module (the encoder), got {type(model).__name__}.")
    check_eval_mode(model, name)
    return model


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer >= ``minimum`` (bools and floats refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidArgument(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_number(value, name: str, minimum: float = 0.0, strict: bool = False) -> float:
    """``value`` as a finite float >= ``minimum`` (> with ``strict``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) or \
            not np.isfinite(value) or value < minimum or (strict and value == minimum):
        raise InvalidArgument(f"`{name}` must be a finite number {'>' if strict else '>='} {minimum:g}, got {value!r}.")
    return float(value)


def check_device(device) -> torch.device:
    """A usable torch device (default CPU); requesting CUDA/MPS where there is none is a clear error."""
    if device is None:
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidArgument(f"`device` {device!r} is not a torch device; use 'cpu' or 'cuda'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgument(f"`device` {str(device)!r} requested, but this machine has no usable CUDA GPU; "
                              "use device='cpu'.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidArgument("`device` 'mps' requested, but MPS is not available here; use device='cpu'.")
    return device


def check_choice(value, choices: Iterable, name: str):
    """Return ``value`` if it is in ``choices``; else raise :class:`UnknownName` with the closest match."""
    choices = list(choices)
    if value in choices:
        return value
    raise unknown(value, choices, name)


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's first floating parameter or buffer (float32 for models without one)."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    for t in model.buffers():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for state-free models)."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")
