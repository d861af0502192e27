"""Run the independent cells of a grid serially or on Ray (``backend="serial" | "ray"``).

``lfeval.meta.benchmark`` and ``lfeval run`` cut their work into :class:`Cell` objects and hand them to
an executor from :func:`get_executor`. The calling process (the driver) receives every result and is
the only one that writes it to disk, in the same format whichever backend computed it, so a grid
started serially can finish on Ray and the other way round.
"""

from .executors import BACKENDS, Cell, CellFailure, Executor, SerialExecutor, cells_failed, check_backend, get_executor

__all__ = ["BACKENDS", "Cell", "CellFailure", "Executor", "SerialExecutor", "cells_failed", "check_backend",
           "get_executor"]
