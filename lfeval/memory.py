"""How many inputs go through the model at once: enough for a fast batched pass, few enough that memory does
not grow with the input size (a 224x224 RGB image is 2,352 times an 8x8 digit).

Every chunked loop in lfeval (attributions, masked and imputed inputs, latents) asks :func:`rows_per_pass` for
its chunk: the requested size, capped so that one pass holds at most :func:`pass_budget` input values.

- CPU (and any device but CUDA): 2**22 values, i.e. 16 MB of float32 inputs (the activations of the model scale
  with it). Small inputs keep the requested size, so results on digits and MNIST do not change.
- CUDA: ``GPU_FRACTION * available bytes / (BYTES_PER_VALUE * ACTIVATION_FACTOR)`` = half the memory PyTorch can
  still use on the device (``torch.cuda.mem_get_info``'s free bytes plus the allocator's reserved but unused
  cache) over 4 bytes per float32 value times 256 bytes of activations per input byte. ResNet-18 needs about
  80 MB of activations per 224x224 image for a backward pass, ~130x its 0.6 MB of input; 256 leaves room for
  deeper models and the gradients. An H200 with 139 GiB free: 72.9 M values, 484 such images per pass (~39 GB
  of activations), 9 GradientShap inputs of 50 samples.
- ``LFEVAL_PASS_BUDGET`` (input values per pass) overrides both.

Should a CUDA pass still run out of memory, :func:`run_in_chunks` empties the cache and halves the rows down to
one, then raises :class:`lfeval.errors.OutOfMemory`. Every chunked loop is batch-invariant, so the chunking never
changes a result.

>>> rows_per_pass(64, 256), rows_per_pass(3 * 224 * 224, 256)
(256, 27)
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import torch

from .errors import InvalidArgument, OutOfMemory
from .validation import check_device, model_device

DEFAULT_BUDGET = 2 ** 22  #: input values per pass on the CPU
GPU_FRACTION = 0.5  #: share of the available CUDA memory one pass may fill
FEATURE_BYTES = 2 ** 30  #: bytes of precomputed features kept at once on the CPU (:func:`feature_budget`)
FEATURE_FRACTION = 0.25  #: share of the available CUDA memory they may fill
BYTES_PER_VALUE = 4  #: float32
ACTIVATION_FACTOR = 256  #: bytes of activations (forward and backward) per input byte

#: the out-of-memory errors of torch (``torch.OutOfMemoryError`` since 2.5, ``torch.cuda.OutOfMemoryError`` before)
OOM_ERRORS = tuple({e for e in (getattr(torch, "OutOfMemoryError", None),
                                getattr(torch.cuda, "OutOfMemoryError", None)) if e is not None})


def _as_device(device) -> torch.device:
    """``device`` (a torch.device, its name, a tensor, a module: its parameters' device, or None: the CPU)."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.Tensor):
        return device.device
    if isinstance(device, torch.nn.Module):
        return model_device(device)
    return check_device(device)  # a name that is no device, or CUDA where there is none: a clear error


def _env_budget() -> Optional[int]:
    value = os.environ.get("LFEVAL_PASS_BUDGET")
    try:
        return max(1, int(value)) if value else None
    except ValueError:
        raise InvalidArgument(f"LFEVAL_PASS_BUDGET must be an integer number of input values, got {value!r}.") from None


def available_bytes(device) -> int:
    """Bytes PyTorch can still allocate on a CUDA ``device``: free device memory plus its cache's unused part."""
    device = _as_device(device)
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free) + max(0, int(cached))


def pass_budget(device=None) -> int:
    """Input values per forward pass on ``device`` (the module docstring's rule; ``LFEVAL_PASS_BUDGET`` overrides)."""
    env = _env_budget()
    if env is not None:
        return env
    if _as_device(device).type != "cuda":
        return DEFAULT_BUDGET
    return max(1, int(GPU_FRACTION * available_bytes(device) / (BYTES_PER_VALUE * ACTIVATION_FACTOR)))


def feature_budget(device=None) -> int:
    """Bytes of precomputed per-example features a method keeps at once on ``device`` (TracIn's test-side
    features): 1 GiB on the CPU (and any device but CUDA), a quarter of what PyTorch can still use on a CUDA
    device, beside the passes' half (34.75 GiB on an H200 with 139 GiB free)."""
    if _as_device(device).type != "cuda":
        return FEATURE_BYTES
    return max(1, int(FEATURE_FRACTION * available_bytes(device)))


def rows_per_pass(sample_numel: int, requested: int, per_row: int = 1, device=None) -> int:
    """``requested`` rows, capped so that ``rows * per_row * sample_numel`` fits ``pass_budget(device)`` (>= 1)."""
    return max(1, min(int(requested), pass_budget(device) // max(1, int(sample_numel) * int(per_row))))


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is, or was raised from or while handling, a torch out-of-memory error."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OOM_ERRORS):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


#: what to do about an out-of-memory error
OOM_FIX = ("Free GPU memory (other processes, tensors kept alive), pass a smaller `batch_size` or fewer samples per "
           "input (`n_samples`, `n_steps`), or set the environment variable LFEVAL_PASS_BUDGET to fewer input values "
           "per pass.")


def run_in_chunks(compute: Callable[[slice], object], n: int, rows: int, combine: Optional[Callable] = None):
    """``combine([compute(slice(i, i + rows)), ...])`` over ``n`` rows (default ``torch.cat``; one chunk's output
    is returned as it is). On an out-of-memory error the cache is emptied and the failed chunk and the rest run
    with half its rows, down to 1; then :class:`lfeval.errors.OutOfMemory`. For batch-invariant ``compute``."""
    if n <= 0:
        return compute(slice(0, 0))
    out, start, rows = [], 0, max(1, int(rows))
    while start < n:
        stop = min(start + rows, n)
        try:
            out.append(compute(slice(start, stop)))
            start = stop
            continue
        except Exception as error:  # noqa: BLE001 - only out-of-memory errors are handled
            if not is_out_of_memory(error):
                raise
            if stop - start == 1:
                raise OutOfMemory("Out of GPU memory even with 1 row per pass (the error it raised is chained "
                                  f"below). {OOM_FIX}") from error
        rows = max(1, (stop - start) // 2)  # the error and its frames are released here, then the cache
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if combine is None:
        return out[0] if len(out) == 1 else torch.cat(out)
    return combine(out)


def encode_chunks(encoder, x: torch.Tensor, chunk_size: int = 512) -> torch.Tensor:
    """f(x) in forward passes of ``chunk_size`` rows (fewer for large inputs: :func:`lfeval.memory.rows_per_pass`;
    halved on a GPU out-of-memory error: :func:`lfeval.memory.run_in_chunks`), on the encoder's device."""
    device = encoder if isinstance(encoder, torch.nn.Module) else x.device  # a module: its parameters' device
    step = rows_per_pass(x[0].numel(), chunk_size, device=device)
    return run_in_chunks(lambda rows: encoder(x[rows]), len(x), step)
