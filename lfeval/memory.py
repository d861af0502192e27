"""How many inputs go through the model at once: enough for a fast batched pass, few enough that memory does
not grow with the input size (a 224x224 RGB image is 2,352 times an 8x8 digit).

Every chunked loop in lfeval (attributions, masked and imputed inputs, latents) asks :func:`rows_per_pass` for
its chunk: the requested size, capped so that one pass holds at most ``LFEVAL_PASS_BUDGET`` input values
(default 2**22, i.e. 16 MB of float32 inputs; the activations of the model scale with it). Small inputs keep
the requested size, so results on digits and MNIST do not change.

>>> rows_per_pass(64, 256), rows_per_pass(3 * 224 * 224, 256)
(256, 27)
"""

from __future__ import annotations

import os

DEFAULT_BUDGET = 2 ** 22


def pass_budget() -> int:
    """Input values per forward pass (``LFEVAL_PASS_BUDGET`` overrides the default 2**22)."""
    value = os.environ.get("LFEVAL_PASS_BUDGET")
    try:
        return max(1, int(value)) if value else DEFAULT_BUDGET
    except ValueError:
        from .errors import InvalidArgument

        raise InvalidArgument(f"LFEVAL_PASS_BUDGET must be an integer number of input values, got {value!r}.") from None


def rows_per_pass(sample_numel: int, requested: int, per_row: int = 1) -> int:
    """``requested`` rows, capped so that ``rows * per_row * sample_numel`` fits the pass budget (at least 1)."""
    return max(1, min(int(requested), pass_budget() // max(1, int(sample_numel) * int(per_row))))
