"""The serial executor and :func:`get_executor`, which picks the executor of a backend.

The pieces of a grid are in :mod:`lfeval.execution.cells`, the executor base in
:mod:`lfeval.execution.base`, and the Ray executor in :mod:`lfeval.execution.ray_backend`.
"""

from __future__ import annotations

import time
from typing import Optional

from ..errors import InvalidArgument
from ..validation import check_choice
from .base import Executor, _Finished
from .cells import Cell, call_cell
from .ray_backend import RayExecutor

BACKENDS = ("serial", "ray")


class SerialExecutor(Executor):
    """Every cell in this process, one after the other, in the given order; the first error is raised
    as it is (the cells finished before it are already stored)."""

    name = "serial"
    in_order = True

    def __init__(self):
        self._queue = []

    def _submit(self, cell: Cell, needed: dict) -> None:
        self._queue.append((cell, needed))

    def _busy(self) -> int:
        return len(self._queue)

    def _next(self) -> _Finished:
        cell, needed = self._queue.pop(0)
        start, cpu = time.perf_counter(), time.process_time()
        result = call_cell(cell.fn, cell.args, tuple(needed), tuple(needed.values()))
        return _Finished(cell, True, result, time.perf_counter() - start, handle=result,
                         cpu_seconds=time.process_time() - cpu)


def check_backend(backend, address) -> None:
    """Check ``backend`` / ``address`` (the arguments of :func:`get_executor`) before any work starts."""
    check_choice(backend, BACKENDS, "backend")
    if address is not None:
        if not isinstance(address, str) or not address.strip():
            raise InvalidArgument(f"`address` must be a Ray cluster address such as '10.0.0.5:6379' or 'auto', got "
                                  f"{address!r}.")
        if backend != "ray":
            raise InvalidArgument(f"`address` ({address!r}) joins a Ray cluster: it needs backend='ray' "
                                  f"(got backend={backend!r}).")


def get_executor(backend: str = "serial", address: Optional[str] = None, **options) -> Executor:
    """The executor of ``backend``: ``"serial"`` (this process) or ``"ray"`` (a local Ray started on this
    machine, or the cluster at ``address``; needs ``pip install lfeval[ray]``)."""
    check_backend(backend, address)
    if backend == "serial":
        return SerialExecutor()
    return RayExecutor(address=address, **options)
