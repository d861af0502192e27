"""Benchmark grids on Ray against the serial backend, side by side on the same grid.

Grid: ``lfeval.meta.benchmark`` on digits, the five pretext encoders x 2 metrics (RepresentationShift and
LabelFree(PixelFlipping)), 48 test inputs, 3 explainers, iterations 1, K = 2: 10 cells. Ways, interleaved and
best of ``--repeat`` (the machine may be shared):

  serial-1t   backend="serial", torch 1 thread
  serial-2t   backend="serial", torch 2 threads (both cores through torch's intra-op threads)
  ray-2w      backend="ray" on a local Ray with 2 CPUs: 2 workers of 1 thread, already started (warm)

Also measured: starting the local Ray; the first Ray grid (cold: each worker imports torch and lfeval once);
the per-task overhead (empty cells through the Ray executor, one at a time and pipelined, and with the
shared encoders as arguments); and, from the measured cell time and overhead, what 100 and 10,000 cells would
take on N nodes of 2 cores.

Run: .venv/bin/python benchmarks/bench_ray.py [--repeat 3] [--n 48] [--tasks 200]
"""

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path

import quantus
import torch

import lfeval
from lfeval.execution import Cell, SerialExecutor
from lfeval.execution.ray_backend import RayExecutor
from lfeval.meta import benchmark
from lfeval.metrics import LabelFree, RepresentationShift


def noop(*args):
    """An empty cell: what Ray adds around any cell."""
    return 0


def busy(n: int) -> int:
    """A CPU-bound cell in plain Python (no threads): probes how many cores the machine gives us."""
    total = 0
    for i in range(n):
        total += i
    return total


def grid_setup(n: int):
    ds = lfeval.data.load("digits", seed=0)
    encoders = {p: lfeval.models.train_encoder(ds, pretext=p, latent_dim=8, seed=0, checkpoints=3,
                                               cache_dir=".lfeval-cache/tests", display_progressbar=False)
                for p in lfeval.models.PRETEXTS}
    grid = {"digits": {"x": ds.x_test[:n].numpy(), "encoders": encoders}}
    metrics = {"RS": RepresentationShift(fractions=(0.2, 0.5), baseline=0.0),
               "PF": LabelFree(quantus.PixelFlipping(features_in_step=16, disable_warnings=True))}
    methods = {"Saliency": {}, "IntegratedGradients": {"n_steps": 16}, "Random": {}}
    return grid, metrics, methods


def timed_grid(setup, backend: str, threads: int, root: Path):
    grid, metrics, methods = setup
    out = Path(tempfile.mkdtemp(dir=root))
    torch.set_num_threads(threads)
    start = time.perf_counter()
    table = benchmark(grid, metrics, methods, out, iterations=1, nr_perturbations=2, display_progressbar=False,
                      backend=backend)
    seconds = time.perf_counter() - start
    shutil.rmtree(out)
    return seconds, table


def overhead(ex, cells: list) -> float:
    """Seconds per cell for ``cells`` run through ``ex`` (results handed to a no-op store)."""
    start = time.perf_counter()
    failures = ex.run(cells, lambda *a: None, progress=False)
    assert not failures, failures
    return (time.perf_counter() - start) / len(cells)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--tasks", type=int, default=200)
    args = parser.parse_args()
    setup = grid_setup(args.n)
    cells = len(setup[0]["digits"]["encoders"]) * len(setup[1])
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))

    ex = RayExecutor(num_cpus=2)  # the local Ray that backend="ray" would start; benchmark() reuses it
    start = time.perf_counter()
    ex.connect()
    ray_start = time.perf_counter() - start
    cold, reference = timed_grid(setup, "ray", 1, root)

    times = {"serial-1t": [], "serial-2t": [], "ray-2w": []}
    for _ in range(args.repeat):
        for way in times:
            seconds, table = timed_grid(setup, "serial" if way.startswith("serial") else "ray",
                                        2 if way == "serial-2t" else 1, root)
            assert table.equals(reference), f"{way} differs from the first Ray grid"
            times[way].append(seconds)
    best = {k: min(v) for k, v in times.items()}

    torch.set_num_threads(1)
    serial_ex = SerialExecutor()
    empty = [Cell(f"e{i}", noop) for i in range(args.tasks)]
    one_at_a_time = sum(overhead(ex, [Cell(f"s{i}", noop)]) for i in range(20)) / 20
    pipelined = overhead(ex, empty)
    shared = ex.share(setup[0]["digits"]["encoders"])  # the five encoders, put once
    with_encoders = overhead(ex, [Cell(f"w{i}", noop, (shared,)) for i in range(args.tasks)])
    serial_empty = overhead(serial_ex, empty)
    alone = min(overhead(ex, [Cell("b", busy, (10_000_000,))]) for _ in range(3))
    pair = min(2 * overhead(ex, [Cell(f"b{i}", busy, (10_000_000,)) for i in range(2)]) for _ in range(3))
    ex.close()
    shutil.rmtree(root, ignore_errors=True)

    print(f"grid: {cells} cells (5 encoders x 2 metrics), n={args.n}, best of {args.repeat} interleaved\n")
    print(f"{'way':<12}{'seconds':>10}{'per cell':>10}{'vs serial-1t':>14}")
    for way, seconds in best.items():
        print(f"{way:<12}{seconds:>10.2f}{seconds / cells:>10.2f}{best['serial-1t'] / seconds:>13.2f}x")
    print(f"\ncores available to this run: {2 * alone / pair:.2f} of 2 (one busy cell {alone:.2f} s, two at once "
          f"{pair:.2f} s; on an idle machine 2.00)")
    print(f"local Ray start: {ray_start:.1f} s; first (cold) Ray grid: {cold:.1f} s "
          f"(+{cold - best['ray-2w']:.1f} s: two workers import torch and lfeval)")
    print(f"per-task overhead (empty cells, {args.tasks} per batch): one at a time {one_at_a_time * 1e3:.1f} ms "
          f"(round trip); pipelined {pipelined * 1e3:.2f} ms/cell; pipelined with the 5 shared encoders as argument "
          f"{with_encoders * 1e3:.2f} ms/cell (deserialized once per worker); serial executor "
          f"{serial_empty * 1e6:.0f} us/cell")

    t_cell = best["serial-1t"] / cells  # one cell on one core
    o = with_encoders  # per-task overhead, pipelined, with a realistic shared argument
    cold_start = ray_start + (cold - best["ray-2w"])
    print(f"\nprojection: T = start ({cold_start:.0f} s: Ray + a worker's imports) + max(ceil(cells / (2 N)) x "
          f"(t_cell {t_cell:.2f} s + o {o * 1e3:.1f} ms), cells x o: the driver's own rate); serial = cells x t_cell")
    print(f"{'cells':>7}{'serial':>12}" + "".join(f"{f'N={n}':>12}" for n in (1, 4, 16, 64)))
    for n_cells in (100, 10_000):
        row = [n_cells * t_cell] + [cold_start + max(math.ceil(n_cells / (2 * n)) * (t_cell + o), n_cells * o)
                                    for n in (1, 4, 16, 64)]
        print(f"{n_cells:>7}" + "".join(f"{_fmt(s):>12}" for s in row))


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


if __name__ == "__main__":
    main()
