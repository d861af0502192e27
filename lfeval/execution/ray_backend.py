"""Cells as Ray tasks (``backend="ray"``; ``pip install lfeval[ray]``).

* **Where**: without an address, a local Ray on this machine (one CPU slot per available core, on the
  loopback interface only) that is stopped at the end; with one, the existing cluster at that address
  (every node needs lfeval and its dependencies installed). A Ray already connected in this process
  (``ray.init`` called by the user) is used as it is.
* **What each task gets**: large inputs (data, encoders) are put in the object store once by
  :meth:`RayExecutor.share`, and each worker process deserializes one once (it keeps the last
  ``WORKER_CACHE`` of them); each cell declares its CPUs (and a GPU when it computes on CUDA,
  :func:`lfeval.execution.cells.gpus_for`) and runs with as many torch threads as CPUs, on the GPU Ray gave
  it (:func:`lfeval.execution.cells.cell_device`).
* **Faults**: a task whose worker dies (killed, out of memory, node lost) or that raises an unexpected
  exception is retried ``retries`` times; an :class:`lfeval.errors.LfevalError` (a bad input, the same on
  every try) is reported at once. A cell that fails is reported by name and the other cells go on.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import OrderedDict
from typing import Optional

import torch

from ..errors import ExtraMissing, InvalidArgument, LfevalError
from .base import Executor, _Finished
from .cells import _GIVEN_GPU, Cell, call_cell

MIN_RAY = (2, 60)
INSTALL = "pip install 'lfeval[ray]'"
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def require_ray(local: bool = True):
    """Import Ray, or raise :class:`ExtraMissing` naming the extra. Before the first import, a local
    Ray is set to stay on the loopback interface and to send no usage statistics; Ray never replaces
    this process's ``print`` (it does so for its own progress bars, which lfeval does not use)."""
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
        if local:  # Ray's single-machine mode: every address is 127.0.0.1
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise ExtraMissing(f"backend='ray' needs Ray, an optional extra of lfeval: {INSTALL} (Ray >= "
                           f"{'.'.join(map(str, MIN_RAY))}), or use backend='serial'.") from None
    version = tuple(int(p) for p in ray.__version__.split(".")[:2] if p.isdigit())
    if version < MIN_RAY:
        raise ExtraMissing(f"backend='ray' needs Ray >= {'.'.join(map(str, MIN_RAY))}, found {ray.__version__}: "
                           f"{INSTALL} --upgrade.")
    return ray


def available_cpus() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


#: shared objects a worker process keeps deserialized (the most recently used ones)
WORKER_CACHE = 16
_cache = OrderedDict()  # in a worker: object id -> the deserialized object


class _Shared:
    """A handle to an object in Ray's object store. Nested in the task's arguments, so Ray does not
    deserialize it for every task; :func:`_resolve` does, once per worker process."""

    def __init__(self, ref):
        self.ref = ref


def _resolve(value):
    if not isinstance(value, _Shared):
        return value
    import ray

    key = value.ref.hex()
    if key not in _cache:
        _cache[key] = ray.get(value.ref)
        while len(_cache) > WORKER_CACHE:
            _cache.popitem(last=False)
    _cache.move_to_end(key)
    return _cache[key]


class _Raised:
    """An lfeval error raised by a cell, returned (not raised) so that Ray does not retry it."""

    def __init__(self, text: str):
        self.text = text


def _given_gpu():
    """The CUDA device of the first GPU Ray gave this task (Ray lists only those in CUDA_VISIBLE_DEVICES, so it
    is usually ``cuda:0``), or None."""
    import ray

    ids = [str(i) for i in ray.get_gpu_ids()]
    if not ids:
        return None
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return torch.device("cuda", visible.index(ids[0]) if ids[0] in visible else int(ids[0]))


def _execute(fn, n_args: int, names: tuple, threads: int, gpu: bool, *values):
    """The Ray task: one cell with ``threads`` torch threads, on its GPU if it asked for one (see
    :func:`lfeval.execution.cells.cell_device`); returns (result, seconds)."""
    torch.set_num_threads(threads)
    token = _GIVEN_GPU.set(_given_gpu() if gpu else None)
    start = time.perf_counter()
    try:
        values = tuple(_resolve(v) for v in values)
        result = call_cell(fn, values[:n_args], names, values[n_args:])
    except LfevalError as exc:
        return _Raised(f"{type(exc).__name__}: {exc}"), time.perf_counter() - start
    finally:
        _GIVEN_GPU.reset(token)
    return result, time.perf_counter() - start


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class RayExecutor(Executor):
    """Each cell a Ray task (see the module docstring).

    Parameters
    ----------
    address : str, optional
        A running cluster to join (``"host:port"``, ``"auto"``, ``"ray://host:10001"``); ``None`` starts a
        local Ray with ``num_cpus`` slots (default: the available cores) and stops it at the end.
    retries : int
        How often a task whose worker died, or that raised an unexpected error, is retried.
    """

    name = "ray"

    def __init__(self, address: Optional[str] = None, retries: int = 3, num_cpus: Optional[int] = None):
        self.address, self.retries, self.num_cpus = address, retries, num_cpus
        self._ray = require_ray(local=address is None)
        self._remote = None
        self._started = False
        self._in_flight = {}  # result ref -> (cell, seconds ref)
        self._instant = []  # cells failed before they could be submitted
        self._shared = {}  # id(obj) -> (obj, ref): each object is put once

    # ------------------------------------------------------------------ the cluster
    def connect(self) -> None:
        """Start or join Ray (once)."""
        if self._remote is not None:
            return
        ray = self._ray
        quiet = {"log_to_driver": False, "configure_logging": False, "logging_level": logging.ERROR}
        if ray.is_initialized():
            if self.address not in (None, "auto"):
                current = ray.get_runtime_context().gcs_address
                if self.address.removeprefix("ray://") != current:
                    raise InvalidArgument(f"This process is already connected to the Ray cluster at {current}; "
                                          f"`address` {self.address!r} names another one. Pass address=None to use "
                                          "the connected cluster.")
        elif self.address is None:
            ray.init(address="local", num_cpus=self.num_cpus or available_cpus(), include_dashboard=False, **quiet)
            self._started = True
        else:
            host = self.address.removeprefix("ray://").rsplit(":", 1)[0]
            if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0" and host not in _LOOPBACK \
                    and self.address != "auto":
                raise InvalidArgument(f"This process started a local, loopback-only Ray before (or set "
                                      f"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0); join the cluster at {self.address!r} "
                                      "from a new Python process.")
            try:
                ray.init(address=self.address, **quiet)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise InvalidArgument(f"Cannot join the Ray cluster at `address` {self.address!r}: {_first_line(exc)}"
                                      ". Check that it is running (`ray status`) and reachable, or pass no address "
                                      "to start a local Ray.") from None
            self._started = True
        self._remote = ray.remote(_execute)

    def close(self) -> None:
        ray = self._ray
        for ref in list(self._in_flight):  # an interrupted grid: stop its tasks
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already finished or gone
                pass
        self._in_flight.clear()
        self._shared.clear()
        if self._started:
            ray.shutdown()
            self._started = False
        self._remote = None

    def share(self, obj):
        self.connect()
        key = id(obj)
        if key not in self._shared:
            self._shared[key] = (obj, _Shared(self._ray.put(obj)))
        return self._shared[key][1]

    # ------------------------------------------------------------------ cells
    def _submit(self, cell: Cell, needed: dict) -> None:
        self.connect()
        gpus = self._ray.cluster_resources().get("GPU", 0)
        if cell.num_gpus > gpus and self.address is None:  # a joined cluster may scale up to fit it
            self._instant.append(_Finished(cell, False, f"needs {cell.num_gpus} GPU(s) (it computes on CUDA); the "
                                                        f"Ray cluster has {gpus:g}. Compute on the CPU (device='cpu', "
                                                        "or an encoder on the CPU) or add GPU nodes."))
            return
        options = {"num_cpus": cell.num_cpus, "num_gpus": cell.num_gpus, "max_retries": self.retries,
                   "retry_exceptions": True, "num_returns": 2, "name": f"lfeval:{cell.name}"}
        threads = max(1, int(cell.num_cpus))
        result, seconds = self._remote.options(**options).remote(cell.fn, len(cell.args), tuple(needed), threads,
                                                                 cell.num_gpus > 0, *cell.args, *needed.values())
        self._in_flight[result] = (cell, seconds)

    def _busy(self) -> int:
        return len(self._in_flight) + len(self._instant)

    def _next(self) -> _Finished:
        if self._instant:
            return self._instant.pop(0)
        ray = self._ray
        (ref,), _ = ray.wait(list(self._in_flight), num_returns=1)
        cell, seconds_ref = self._in_flight.pop(ref)
        tries = f"after {self.retries + 1} tries"
        try:
            result, seconds = ray.get([ref, seconds_ref])
        except ray.exceptions.RayTaskError as exc:  # the cell's own code raised, on every try
            cause = exc.cause
            text = f"{type(cause).__name__}: {cause}" if cause is not None else _first_line(exc)
            return _Finished(cell, False, f"{text} ({tries})")
        except ray.exceptions.RayError as exc:  # its worker or node died on every try
            return _Finished(cell, False, f"{type(exc).__name__}: {_first_line(exc)} ({tries})")
        if isinstance(result, _Raised):
            return _Finished(cell, False, result.text)
        return _Finished(cell, True, result, seconds, handle=ref)
