"""What a grid is made of: :class:`Cell` objects, their failures, and where a cell computes.

A grid is a list of cells: a function, its arguments and the names of the cells whose results it needs.
Devices, one rule: a cell that computes on CUDA declares one GPU (:func:`gpus_for`), and computes on the GPU
its executor gave it (:func:`cell_device`); objects sent to other processes travel on the CPU
(:func:`portable`), since a worker sees other GPUs than this process, renumbered from 0, or none.
"""

from __future__ import annotations

import copy
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable

import torch

from ..encoder import Encoder
from ..errors import CellsFailed
from ..validation import model_device

#: the GPU the executor gave the running cell (set by a Ray task given one; None elsewhere)
_GIVEN_GPU: ContextVar = ContextVar("lfeval_cell_gpu", default=None)


def gpus_for(device) -> int:
    """The GPUs a cell declares when it computes on ``device``: one for CUDA, none otherwise."""
    return 1 if torch.device(device).type == "cuda" else 0


def cell_device(device) -> torch.device:
    """Where a cell of a run configured for ``device`` computes: in a Ray task given a GPU, that GPU (Ray shows a
    task only its own GPUs, from ``cuda:0``, so the driver's ``cuda:1`` may be the worker's ``cuda:0``); else
    ``device`` itself."""
    device, given = torch.device(device), _GIVEN_GPU.get()
    return given if device.type == "cuda" and given is not None else device


def portable(module):
    """``module`` (a module or tensor; anything else is returned as it is) as it can travel to another process:
    itself when it is on the CPU, else a CPU copy (an :class:`lfeval.Encoder`'s training checkpoints included);
    the receiver moves it to :func:`cell_device`."""
    if isinstance(module, torch.Tensor):
        return module.cpu()
    if not isinstance(module, torch.nn.Module):
        return module
    checkpoints = module.checkpoints if isinstance(module, Encoder) else []
    on_cpu = model_device(module).type == "cpu" and all(
        t.device.type == "cpu" for ck in checkpoints for t in ck.get("state_dict", {}).values())
    if on_cpu:
        return module
    if isinstance(module, Encoder):
        out = module.copy().cpu()
        out.checkpoints = [{**ck, "state_dict": {k: v.cpu() for k, v in ck.get("state_dict", {}).items()}}
                           for ck in checkpoints]
        return out
    return copy.deepcopy(module).cpu()


@dataclass(frozen=True)
class Cell:
    """One independent unit of a grid: ``fn(*args)``, or ``fn(*args, needed={name: result})`` when it
    needs the results of other cells (named in ``needs``; they run first).

    ``fn`` must be a module-level function (workers import it by name); ``args`` may hold handles
    returned by :meth:`Executor.share`. ``num_cpus`` / ``num_gpus`` are the resources it declares
    (``num_gpus=gpus_for(device)``).
    """

    name: str
    fn: Callable
    args: tuple = ()
    needs: tuple = ()
    num_cpus: float = 1
    num_gpus: float = 0


@dataclass(frozen=True)
class CellFailure:
    """A cell that failed (after its retries): its name and its error, as text."""

    name: str
    error: str


def cells_failed(failures: list, total: int, where: str) -> CellsFailed:
    """The error that ends a grid with failed cells: every failed cell by name, with its error."""
    lines = "\n".join(f"  {f.name}: {f.error}" for f in failures)
    return CellsFailed(f"{len(failures)} of {total} cell(s) failed; the other cells finished and are stored in "
                       f"{where}, and a rerun computes only the missing ones:\n{lines}", failures)


def call_cell(fn: Callable, args: tuple, names: tuple, values: tuple):
    """Run one cell: ``fn(*args)`` plus ``needed={name: value}`` when it needs other cells' results."""
    if names:
        return fn(*args, needed=dict(zip(names, values)))
    return fn(*args)


__all__ = ["Cell", "CellFailure", "call_cell", "cell_device", "cells_failed", "gpus_for", "portable"]
