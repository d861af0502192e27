"""Intra-op threads: 1, 2 and auto (lfeval.threads), on an idle machine and next to one busy process.

Workloads (the demo's sizes, digits):
  training     train_encoder(reconstruction, 5 epochs, no cache) with threads=1 / 2 / "auto"
  IG           lfeval.explain(IntegratedGradients) of the 128 explained digits, as `lfeval run` calls it
               (its thread scope: the explainer picks threads for its 128 x 50 encoder passes)
  SimilarityRate meta-evaluation
               the demo's meta stage for SimilarityRate (five example methods, 64 digits, I = 2, K = 3)
  demo         `lfeval run --threads n` in a fresh process, with an empty weight cache (cold `make demo`)
Columns: idle, and loaded = one competing single-threaded busy process (`while True: pass`) that this script
starts and stops itself. Runs are interleaved (for each repeat: idle then loaded, each thread setting in turn)
and the best of --repeat is kept. The last columns give auto / the best fixed choice (goal: <= 1.2 in every cell).

The machine must be otherwise idle: the "idle" column is only idle if nothing else runs.
Run: .venv/bin/python benchmarks/bench_threads.py [--repeat 3] [--demo-repeat 1] [--skip-demo]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the lfeval command sets it

import torch  # noqa: E402

import lfeval  # noqa: E402
from lfeval.config import RunConfig  # noqa: E402
from lfeval.pipeline import stages  # noqa: E402
from lfeval.threads import choose, limit, other_load, scope  # noqa: E402

SETTINGS = (1, 2, "auto")
ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def load(loaded: bool):
    """One competing busy process while ``loaded``."""
    if not loaded:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(1.0)
    try:
        yield
    finally:
        proc.kill()
        proc.wait()
        time.sleep(1.0)


def workloads(cache: str, skip_demo: bool) -> dict:
    config = RunConfig(cache_dir=cache, quiet=True)
    rd = stages.RunData(config)
    rd.encoder(config.pretexts[0])
    ds = rd.ds

    def training(n):
        lfeval.models.train_encoder(ds, "reconstruction", epochs=5, seed=0, display_progressbar=False, threads=n)
        return choose(n, work=lfeval.threads.work_of(rd.encoder("reconstruction").pretext_model, ds.input_shape, 64),
                      adapt_to_load=False)

    enc = rd.encoder("reconstruction")
    ig_work = lfeval.threads.work_per_example(enc, ds.input_shape) * len(rd.x) * 50

    def ig(n):  # as in lfeval run: the stage's threads, refined by the explainer for its batch
        with scope(n), limit(n, work=rd.work):
            lfeval.explain(enc, rd.x_np, method="IntegratedGradients")
        return choose(n, work=ig_work)

    def meta(n):
        with scope(n), limit(n, work=rd.work) as used, stages.expected_warnings_silenced():
            stages.meta_evaluation(rd, "SimilarityRate")
        return used

    def demo(n):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            env.pop("OMP_WAIT_POLICY", None)  # the command sets it itself
            subprocess.run([sys.executable, "-m", "lfeval.cli", "run", "--threads", str(n), "--quiet", "--out", tmp,
                            "--config", _demo_config(tmp)], check=True, env=env, cwd=tmp, stdout=subprocess.DEVNULL)
        return "-"

    jobs = {"training (5 epochs)": training, "IG attributions (128)": ig, "SimilarityRate meta-evaluation": meta}
    if not skip_demo:
        jobs["demo, cold (lfeval run)"] = demo
    return jobs


def _demo_config(tmp: str) -> str:
    path = Path(tmp) / "demo.toml"
    path.write_text(f'cache_dir = "{Path(tmp) / "cache"}"\n')
    return str(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--demo-repeat", type=int, default=1)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--cache-dir", default=".lfeval-cache/bench-threads")
    args = parser.parse_args()
    jobs = workloads(args.cache_dir, args.skip_demo)
    best = {(job, loaded, n): math.inf for job in jobs for loaded in (False, True) for n in SETTINGS}
    chosen = {}
    for rep in range(max(args.repeat, args.demo_repeat)):
        for loaded in (False, True):
            with load(loaded):
                print(f"repeat {rep + 1}, {'loaded' if loaded else 'idle'}: other processes' load "
                      f"{other_load(samples=20):.2f}, 1-min load average {os.getloadavg()[0]:.2f}", flush=True)
                for job, fn in jobs.items():
                    if rep >= (args.demo_repeat if job.startswith("demo") else args.repeat):
                        continue
                    for n in SETTINGS:
                        start = time.perf_counter()
                        chosen[(job, loaded, n)] = fn(n)
                        best[(job, loaded, n)] = min(best[(job, loaded, n)], time.perf_counter() - start)
    print(f"\nbest of {args.repeat} (demo: {args.demo_repeat}), seconds; {lfeval.threads.available_cores()} cores, "
          f"torch {torch.__version__}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    head = "".join(f"{f'{n} {cond}':>14s}" for cond in ("idle", "loaded") for n in SETTINGS)
    print(f"{'workload':<32s}{head}{'auto/best idle':>16s}{'auto/best loaded':>18s}  auto chose (idle, loaded)")
    for job in jobs:
        cells = "".join(f"{best[(job, loaded, n)]:>14.2f}" for loaded in (False, True) for n in SETTINGS)
        ratios = [best[(job, loaded, "auto")] / min(best[(job, loaded, 1)], best[(job, loaded, 2)])
                  for loaded in (False, True)]
        picks = (chosen.get((job, False, "auto")), chosen.get((job, True, "auto")))
        print(f"{job:<32s}{cells}{ratios[0]:>16.2f}{ratios[1]:>18.2f}  {picks}")
    print("goal: auto <= 1.2 x the best fixed choice in every cell")


if __name__ == "__main__":
    main()
