"""Timing helpers shared by the benchmark scripts (run as ``python benchmarks/<script>.py``, so this folder is on
``sys.path``)."""

import time


def timed(fn, clock=time.perf_counter) -> tuple:
    """``(fn(), seconds)`` of one call."""
    start = clock()
    out = fn()
    return out, clock() - start


def interleaved_best(fns: dict, repeats: int, clock=time.perf_counter) -> tuple:
    """Best-of-``repeats`` seconds of each function, one run of every function per round (other jobs share the
    CPU, so a slow spell hits all of them alike); and each function's last output."""
    best, outs = {k: float("inf") for k in fns}, {}
    for _ in range(repeats):
        for name, fn in fns.items():
            outs[name], seconds = timed(fn, clock)
            best[name] = min(best[name], seconds)
    return best, outs
