"""Intra-op threads, chosen deliberately: from the work's size, the cores this process may use and the load.

torch uses every core by default. On a machine where other processes compete for the cores, a
multi-threaded op waits for its slowest thread, and the waits cost far more than the threads gain:
5 training epochs of the digits autoencoder took 139 s with 2 threads next to two other torch jobs
and 2.2 s with 1. Small models on small batches gain nothing from more threads even on an idle machine.

:func:`limit` (a context manager) sets torch's intra-op threads (and the BLAS pool NumPy uses, through
threadpoolctl) for a block of work and restores the caller's settings on exit. Inside a :func:`scope`
(``lfeval run`` runs in one), explainers refine the choice per call for their own batch (:func:`for_work`).
:func:`choose` is the rule behind ``threads="auto"``:

1. an integer (the argument, else the ``LFEVAL_THREADS`` environment variable) is used as given;
2. else ``work / WORK_PER_THREAD`` threads (the work is an estimate of multiply-adds per call, e.g.
   :func:`work_of`), at least 1;
3. at most the cores of this process's CPU affinity (``os.sched_getaffinity``);
4. with ``adapt_to_load=True``, at most the cores left free by other processes: runnable threads of
   other processes, sampled from ``/proc`` (elsewhere the 1-minute load average).

Training uses ``adapt_to_load=False``: oneDNN's convolution weight gradients depend on the thread
count, so training's thread count must not depend on the load, or the same seed would give other
weights on a busy machine. Everything after training is the same to float noise at any thread count.

One road for the run's setting: the scope. ``lfeval run`` resolves ``threads`` once (:class:`lfeval.config.RunConfig`,
from the config file or ``--threads``) and enters :func:`scope` with it; nothing inside the run passes it as an
argument. Every consumer reads the scope: the stages' :func:`limit` and :func:`choose` (``threads=None``),
training (:func:`lfeval.models.train_encoder` with ``threads=None``) and the explainers' per-call
:func:`for_work`. A context variable rather than an argument, because the explainers run inside Quantus'
``explain_func`` calls, which no lfeval argument reaches, and because a library call outside a run must leave the
caller's threads alone (outside a scope, ``None`` means ``"auto"`` and :func:`for_work` does nothing). An explicit
value given to a public function is checked there (:func:`check_threads`); the scope's value is trusted, having
been checked once. A Ray task runs with the threads its executor gives it (one per CPU the cell asks for).

``OMP_WAIT_POLICY=PASSIVE`` makes idle OpenMP threads sleep instead of spinning, which matters when
the cores are shared; OpenMP reads it once, when torch loads. The ``lfeval`` command sets it (if unset)
before torch loads; a library import never changes the environment.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import time
import weakref
from typing import Optional, Union

import torch

from .errors import InvalidArgument

#: environment variable: "auto" or a positive integer; used where ``threads="auto"``
ENV = "LFEVAL_THREADS"
#: multiply-adds per call that make one more intra-op thread worth its synchronisation
WORK_PER_THREAD = 5e7

Threads = Union[str, int]


def check_threads(value, name: str = "threads") -> Threads:
    """``"auto"`` or a positive integer (a digit string is accepted, as from the environment)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if text.isdigit() and int(text) >= 1:
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return int(value)
    raise InvalidArgument(f"`{name}` must be 'auto' or a positive integer (intra-op threads), got {value!r}.")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _runnable_others() -> Optional[float]:
    """Runnable threads of other processes right now (Linux): /proc/loadavg's running count minus
    this process's running threads. None where /proc is not available."""
    try:
        with open("/proc/loadavg") as fh:
            running = int(fh.read().split()[3].split("/")[0])
        own = 0
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as fh:
                    own += fh.read().rsplit(")", 1)[1].split()[0] == "R"
            except OSError:  # the thread ended meanwhile
                continue
        return float(max(0, running - max(own, 1)))
    except (OSError, ValueError, IndexError):
        return None


def other_load(samples: int = 5, interval: float = 0.004) -> float:
    """The number of cores other processes keep busy: the mean of ``samples`` readings of their
    runnable threads; where /proc is missing, the 1-minute load average minus this process's own
    average CPU use."""
    readings = []
    for i in range(samples):
        value = _runnable_others()
        if value is None:
            break
        readings.append(value)
        if i + 1 < samples:
            time.sleep(interval)
    if readings:
        return sum(readings) / len(readings)
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0
    own = time.process_time() / max(time.monotonic() - _START, 1.0)
    return max(0.0, load - own)


_START = time.monotonic()
#: (time, value) of the last load reading: per-call choices reuse it for LOAD_TTL seconds
_LAST_LOAD = [-math.inf, 0.0]
LOAD_TTL = 1.0


def _recent_load() -> float:
    now = time.monotonic()
    if now - _LAST_LOAD[0] > LOAD_TTL:
        _LAST_LOAD[:] = [now, other_load()]
    return _LAST_LOAD[1]


def choose(threads: Optional[Threads] = None, work: Optional[float] = None, adapt_to_load: bool = True,
           cores: Optional[int] = None, load: Optional[float] = None) -> int:
    """The intra-op thread count for a block of work (the rule is in the module docstring).

    Parameters
    ----------
    threads : "auto", int or None
        An integer is returned as is. "auto" first reads ``LFEVAL_THREADS``. None: the enclosing :func:`scope`'s
        setting (:func:`current`), else "auto".
    work : float, optional
        Multiply-adds per call (:func:`work_of`); None = large.
    adapt_to_load : bool
        Leave the cores other processes use to them (False for training; see the module docstring).
    cores, load : optional
        The available cores and the other processes' load; measured when None.

    Examples
    --------
    >>> choose("auto", work=1e6, cores=8, load=0.0)  # a small model: one thread
    1
    >>> choose("auto", work=1e12, cores=2, load=1.0)  # large work, one of two cores busy
    1
    >>> choose("auto", work=1e12, cores=2, load=0.0)
    2
    """
    threads = resolve(threads)
    if threads == "auto" and os.environ.get(ENV, "").strip():
        threads = check_threads(os.environ[ENV], ENV)
    if threads != "auto":
        return threads
    cores = available_cores() if cores is None else int(cores)
    n = cores
    if work is not None:
        if not (isinstance(work, (int, float)) and math.isfinite(work) and work >= 0):
            raise InvalidArgument(f"`work` must be a non-negative number of multiply-adds, got {work!r}.")
        n = min(n, max(1, math.ceil(work / WORK_PER_THREAD)))
    if adapt_to_load and n > 1:
        load = _recent_load() if load is None else float(load)
        n = min(n, int(math.floor(cores - load + 0.5)))
    return max(1, n)


def _blas_controller():
    global _CONTROLLER
    if _CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController

            _CONTROLLER = ThreadpoolController()
        except Exception:  # noqa: BLE001 - threadpoolctl is optional: without it only torch is limited
            _CONTROLLER = False
    return _CONTROLLER


_CONTROLLER = None


@contextlib.contextmanager
def limit(threads: Optional[Threads] = None, work: Optional[float] = None, adapt_to_load: bool = True,
          blas: bool = True):
    """Run a block with :func:`choose`'s thread count; restore the caller's settings on exit.

    ``threads=None`` is the enclosing :func:`scope`'s setting (``lfeval run``'s), else ``"auto"``.

    Sets ``torch.set_num_threads`` and, with ``blas=True``, NumPy's BLAS pool (threadpoolctl). Yields
    the thread count.

    Examples
    --------
    >>> import torch, lfeval
    >>> before = torch.get_num_threads()
    >>> with lfeval.threads.limit(1) as n:
    ...     (n, torch.get_num_threads())
    (1, 1)
    >>> torch.get_num_threads() == before
    True
    """
    n = choose(threads, work=work, adapt_to_load=adapt_to_load)
    old = torch.get_num_threads()
    controller = _blas_controller() if blas else None
    with contextlib.ExitStack() as stack:
        if controller:
            stack.enter_context(controller.limit(limits=n, user_api="blas"))
        if n != old:
            torch.set_num_threads(n)
        try:
            yield n
        finally:
            if torch.get_num_threads() != old:
                torch.set_num_threads(old)


_SCOPE: contextvars.ContextVar = contextvars.ContextVar("lfeval_threads_scope", default=None)


def current() -> Optional[Threads]:
    """The enclosing :func:`scope`'s setting (``"auto"`` or an integer), or None outside a scope."""
    return _SCOPE.get()


def resolve(threads: Optional[Threads] = None) -> Threads:
    """An explicit ``threads`` checked (:func:`check_threads`); None: the enclosing :func:`scope`'s setting,
    trusted as it was checked on entering the scope, else ``"auto"``."""
    if threads is None:
        setting = _SCOPE.get()
        return "auto" if setting is None else setting
    return check_threads(threads)


@contextlib.contextmanager
def scope(threads: Threads = "auto"):
    """Let lfeval's heavy calls inside the block choose their own thread count for their work (see
    :func:`for_work`); ``lfeval run`` runs in one. Outside a scope, library calls leave torch's settings alone."""
    token = _SCOPE.set(check_threads(threads))
    try:
        yield
    finally:
        _SCOPE.reset(token)


@contextlib.contextmanager
def for_work(work: float):
    """Inside a :func:`scope`: :func:`limit` with the scope's setting and this call's ``work``; outside, nothing.

    Explainers call it with their batch's size (an IntegratedGradients call on 128 digits runs 6400 encoder
    passes and gains from a second thread; a Saliency call on the same batch does not)."""
    if _SCOPE.get() is None:
        yield None
        return
    with limit(None, work=work) as n:
        yield n


_PER_EXAMPLE = weakref.WeakKeyDictionary()


def work_per_example(module: torch.nn.Module, input_shape: tuple, key: Optional[torch.nn.Module] = None) -> float:
    """:func:`work_of` one input, cached per module (or ``key``, e.g. the network an Encoder wraps) and shape."""
    cached = _PER_EXAMPLE.setdefault(module if key is None else key, {})
    key = tuple(input_shape)
    if key not in cached:
        cached[key] = work_of(module, key)
    return cached[key]


def work_of(module: torch.nn.Module, input_shape: tuple, batch: int = 1) -> float:
    """Multiply-adds of one forward pass of ``module`` on ``batch`` inputs of ``input_shape``, as threads can share
    them: Linear and convolutions counted from one zero input; a recurrent layer counts **one time step**, since
    its steps run one after another and intra-op threads can only share a step's small product (a 150-step LSTM
    autoencoder at batch 8 trained 9x slower with 2 threads than with 1, idle machine, 2 cores); other layers
    count their parameters."""
    leaves = [m for m in module.modules() if not list(m.children())]
    total = [0.0]

    def hook(mod, inputs, out):
        out = out[0] if isinstance(out, tuple) else out
        if isinstance(mod, torch.nn.Linear):
            total[0] += mod.in_features * out.numel()
        elif isinstance(mod, torch.nn.modules.conv._ConvNd):
            total[0] += out.numel() * mod.weight[0].numel()
        elif isinstance(mod, torch.nn.RNNBase):  # one step: per direction and layer, the gates' products
            total[0] += sum(p.numel() for n, p in mod.named_parameters() if n.startswith("weight"))
        else:
            total[0] += sum(p.numel() for p in mod.parameters(recurse=False))

    modes = {m: m.training for m in module.modules()}
    handles = []
    try:
        handles += [m.register_forward_hook(hook) for m in leaves]  # TorchScript modules refuse hooks
        param = next(module.parameters(), None)
        device = param.device if param is not None else "cpu"
        module.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):  # a sampling layer must not move the seed
            module(torch.zeros(1, *input_shape, device=device))
    except Exception:  # noqa: BLE001 - a module that cannot be hooked or run on zeros: count its parameters
        total[0] = float(sum(p.numel() for p in module.parameters()))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.train(mode)
    return total[0] * batch


__all__ = ["ENV", "WORK_PER_THREAD", "check_threads", "available_cores", "other_load", "choose", "limit", "scope",
           "current", "resolve", "for_work", "work_of", "work_per_example"]
