"""The executor base: :class:`Executor` runs the cells of a grid and hands each result to the caller.

An executor runs the cells and hands each result to the caller's ``on_done`` in the calling process, which
stays the only writer of the results. ``share`` places a large input (data, encoder weights) where every cell
can read it: the object itself in a serial run, the Ray object store (once) in a Ray run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from tqdm.auto import tqdm

from ..errors import InvalidArgument
from .cells import Cell, CellFailure


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


__all__ = ["Executor"]
