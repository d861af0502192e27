"""Floating-point precision of the encoder's arithmetic on a GPU: exact float32 by default, TF32 or bfloat16
autocast when asked for speed.

torch runs cuDNN convolutions in TF32 by default (10-bit mantissa), so a CUDA attribution of a conv encoder
differs from the CPU's by about 1e-3 of its largest value. lfeval's entry points (every explainer, example
method, metric, meta-evaluation, training and ``lfeval run``) run under :func:`applied`, which sets the
precision chosen with :func:`use` (default ``"highest"``: TF32 off) for their duration and restores the
caller's flags afterwards. The measured cost and error of each mode are in benchmarks/README.md (GPU).

- ``"highest"``: IEEE float32 everywhere; CUDA equals the CPU within 1e-4 of the largest value.
- ``"tf32"``: TF32 in cuDNN convolutions, RNNs and matmuls (Ampere and later).
- ``"bf16"``: the encoder's forward pass under ``torch.autocast(dtype=torch.bfloat16)`` (latents returned as
  float32), and so is each training step's forward pass and loss (weights and Adam stay float32); TF32
  elsewhere. On the CPU TF32 does not exist and ``"bf16"`` autocasts there too (slower, for
  checking).

>>> import lfeval
>>> with lfeval.precision.use("tf32"):
...     current()
'tf32'
>>> current()
'highest'
"""

from __future__ import annotations

import contextlib
import functools
from contextvars import ContextVar

import torch

from .errors import OutOfMemory
from .memory import OOM_ERRORS, OOM_FIX
from .validation import check_choice

PRECISIONS = ("highest", "tf32", "bf16")
_CURRENT: ContextVar = ContextVar("lfeval_precision", default="highest")


def current() -> str:
    """The precision in force (:func:`use` sets it; default ``"highest"``)."""
    return _CURRENT.get()


def _flags() -> list:
    """The (object, attribute) pairs of torch's TF32 switches: the fp32_precision API (torch >= 2.9), whose
    settings must not be mixed with the legacy ``allow_tf32`` flags, else the legacy ones."""
    backends = torch.backends
    if hasattr(backends.cuda.matmul, "fp32_precision") and hasattr(backends.cudnn, "conv"):
        return [(backends.cuda.matmul, "fp32_precision"), (backends.cudnn.conv, "fp32_precision"),
                (backends.cudnn.rnn, "fp32_precision")]
    return [(backends.cuda.matmul, "allow_tf32"), (backends.cudnn, "allow_tf32")]


def _value(attr: str, tf32: bool):
    if attr == "allow_tf32":
        return tf32
    return "tf32" if tf32 else "ieee"


@contextlib.contextmanager
def applied():
    """Apply the current precision's TF32 switches until the block ends, then restore the caller's. A CUDA
    out-of-memory error that no chunked loop could absorb leaves as :class:`lfeval.errors.OutOfMemory`, whose
    message names the fix (``LFEVAL_PASS_BUDGET``, a smaller ``batch_size``)."""
    tf32 = current() != "highest"
    flags = _flags()
    saved = [getattr(obj, attr) for obj, attr in flags]
    try:
        for obj, attr in flags:
            setattr(obj, attr, _value(attr, tf32))
        yield
    except OOM_ERRORS as error:
        raise OutOfMemory(f"Out of GPU memory ({error}). {OOM_FIX}") from error
    finally:
        for (obj, attr), value in zip(flags, saved):
            setattr(obj, attr, value)


def precise(func):
    """Decorator: run ``func`` under :func:`applied` (lfeval's entry points)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with applied():
            return func(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def use(mode: str = "highest"):
    """Compute lfeval's calls in this block with precision ``mode`` (``"highest"``, ``"tf32"`` or ``"bf16"``)."""
    token = _CURRENT.set(check_choice(mode, PRECISIONS, "precision"))
    try:
        with applied():
            yield
    finally:
        _CURRENT.reset(token)


def autocast(device: torch.device, cache: bool = True):
    """The autocast context of an encoder's forward pass on ``device``: bfloat16 under ``"bf16"`` (CUDA, or the
    CPU, where it is slower but checks the same code paths), none otherwise. ``cache=False`` inside a CUDA graph
    capture (torch's rule: the weights' cached bfloat16 casts would outlive the capture)."""
    kind = torch.device(device).type
    if current() == "bf16" and kind in ("cuda", "cpu"):
        return torch.autocast(kind, dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


__all__ = ["PRECISIONS", "current", "applied", "precise", "use", "autocast"]
