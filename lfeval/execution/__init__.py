"""Run the independent cells of a grid serially or on Ray (``backend="serial" | "ray"``).

``lfeval.meta.benchmark`` and ``lfeval run`` cut their work into :class:`Cell` objects and hand them to
an executor from :func:`get_executor`. The calling process (the driver) receives every result and is
the only one that writes it to disk, in the same format whichever backend computed it, so a grid
started serially can finish on Ray and the other way round. A cell on CUDA declares one GPU
(:func:`gpus_for`) and computes on the one it was given (:func:`cell_device`).
"""

from .base import Executor
from .cells import Cell, CellFailure, cell_device, cells_failed, gpus_for, portable
from .executors import BACKENDS, SerialExecutor, check_backend, get_executor
from .ray_backend import RayExecutor

__all__ = ["BACKENDS", "Cell", "CellFailure", "Executor", "RayExecutor", "SerialExecutor", "cell_device",
           "cells_failed", "check_backend", "get_executor", "gpus_for", "portable"]
