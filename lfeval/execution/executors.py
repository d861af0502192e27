"""Cells, the executor base and the serial executor.

A grid is a list of :class:`Cell` objects: a function, its arguments and the names of the cells whose
results it needs. An executor runs them and hands each result to the caller's ``on_done`` in the
calling process, which stays the only writer of the results. ``share`` places a large input (data,
encoder weights) where every cell can read it: the object itself in a serial run, the Ray object
store (once) in a Ray run.

Devices, one rule: a cell that computes on CUDA declares one GPU (:func:`gpus_for`), and computes on the GPU
its executor gave it (:func:`cell_device`); objects sent to other processes travel on the CPU
(:func:`portable`), since a worker sees other GPUs than this process, renumbered from 0, or none.
"""

from __future__ import annotations

import copy
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm

from ..errors import CellsFailed, InvalidArgument
from ..validation import check_choice

BACKENDS = ("serial", "ray")
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
    from ..encoder import Encoder
    from ..validation import model_device

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


@dataclass
class _Finished:
    cell: Cell
    ok: bool
    value: object = None  # the result, or the error text
    seconds: float = 0.0
    handle: object = None  # what dependants receive (the result, or a reference to it)
    cpu_seconds: Optional[float] = None  # this process's CPU time, where the cell ran here


class Executor:
    """Runs the cells of a grid; subclasses say where (:class:`SerialExecutor`, ``RayExecutor``).

    Use as a context manager: resources (a Ray connection) are held between ``__enter__`` and
    ``__exit__`` and acquired only when a cell or a shared object first needs them.
    """

    name = "base"
    #: run cells strictly in the given order (the serial stage order); parallel backends run any ready cell
    in_order = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        """Release what the executor acquired."""

    def share(self, obj):
        """A handle to ``obj`` that cells take as an argument (``obj`` is sent to workers only once)."""
        return obj

    def _submit(self, cell: Cell, needed: dict) -> None:
        raise NotImplementedError

    def _next(self) -> _Finished:
        raise NotImplementedError

    def _busy(self) -> int:
        raise NotImplementedError

    def run(self, cells: list, on_done: Callable, given: Optional[dict] = None, desc: str = "cells",
            progress: bool = True, done: int = 0) -> list:
        """Run ``cells``; return the :class:`CellFailure` list (empty when every cell finished).

        ``on_done(cell, result, seconds, cpu_seconds)`` is called in this process as each cell finishes
        (it stores the result; ``cpu_seconds`` is None where the cell ran in another process). ``given``
        holds results that cells may need but that are not computed here (e.g. loaded from disk). A cell
        whose needed cell failed is not run and is reported as failed. One progress bar counts cells
        (starting at ``done``, the cells already finished) and failures.
        """
        given = dict(given or {})
        names = {c.name for c in cells}
        for cell in cells:
            unknown = [n for n in cell.needs if n not in names and n not in given]
            if unknown:
                raise InvalidArgument(f"Cell {cell.name!r} needs {unknown}, which are neither cells of the grid nor "
                                      "given results.")
        handles = {}  # name -> what a dependant receives
        pending, failed, failures = list(cells), set(), []
        bar = tqdm(total=len(cells) + done, initial=done, desc=desc, disable=not progress)
        try:
            while pending or self._busy():
                for cell in list(pending):
                    lost = [n for n in cell.needs if n in failed]
                    if lost:
                        pending.remove(cell)
                        failed.add(cell.name)
                        failures.append(CellFailure(cell.name, f"not run: it needs {', '.join(lost)}, which failed"))
                        bar.update(1)
                        bar.set_postfix(failed=len(failures))
                        continue
                    if not all(n in handles or n in given for n in cell.needs):
                        if self.in_order:
                            break
                        continue
                    for n in cell.needs:
                        if n not in handles:
                            handles[n] = self.share(given[n])
                    pending.remove(cell)
                    self._submit(cell, {n: handles[n] for n in cell.needs})
                if not self._busy():
                    if pending and all(not any(n in failed for n in c.needs) for c in pending):
                        raise InvalidArgument(f"Cells {[c.name for c in pending]} wait on each other (or, in a "
                                              "serial run, on a later cell); order them after the cells they need.")
                    continue  # the loop above reports the cells that lost a needed cell
                fin = self._next()
                if fin.ok:
                    on_done(fin.cell, fin.value, fin.seconds, fin.cpu_seconds)
                    handles[fin.cell.name] = fin.handle
                else:
                    failed.add(fin.cell.name)
                    failures.append(CellFailure(fin.cell.name, fin.value))
                bar.update(1)
                bar.set_postfix(failed=len(failures))
        finally:
            bar.close()
        return failures


def call_cell(fn: Callable, args: tuple, names: tuple, values: tuple):
    """Run one cell: ``fn(*args)`` plus ``needed={name: value}`` when it needs other cells' results."""
    if names:
        return fn(*args, needed=dict(zip(names, values)))
    return fn(*args)


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
    from .ray_backend import RayExecutor

    return RayExecutor(address=address, **options)
