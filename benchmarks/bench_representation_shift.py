"""RepresentationShift vs the forward-pass floor and vs the paper's own code (lfxai 0.1.1).

On 1000 test digits (8x8, and upsampled to 28x28 with ``lfeval.data.load("digits", size=28)``), the paper's six
mask fractions (5, 10, 20, 50, 80, 100%), label-free IG attributions:

  lfeval b64 / b1000   RepresentationShift() called with batch_size=64 / 1000 (defaults: M = floor(p * d),
                       the digits baseline 0, automatic chunks)
  lfeval, per-sample   the same with a per-sample baseline (a callable returning zeros): f(baseline) cannot be
  baseline             shared, so it runs all (K + 1) * N forward passes, like the floor
  floor                the (K + 1) * N = 7000 forward passes alone on prebuilt inputs, in one pass and in chunks
                       of 32 ... 1024; the fastest of these is the floor
  64 digits            RepresentationShift() on 64 digits in one call, against the fastest floor of its 448
                       forward passes (there, Quantus' per-call work is not negligible)
  lfxai                the mask loop of lfxai's experiments/mnist.py::consistency_feature_importance around
                       lfxai's own ``lfxai.utils.feature_attribution.generate_masks`` (imported from the installed
                       package); the loop itself is transcribed, since experiments/ is not part of the package:
                       mask_size = int(pert_percentage * W**2 / 100), generate_masks, then per test batch of 200
                       encoder(images) and encoder(mask * images), squared L2 shift

Timings are interleaved (one run of every contender per round) and the best of N rounds is kept, because other
jobs share the CPU. Prints times, ratios and the agreement with lfxai (per-sample curves and the batch means
the paper plots).

Needs lfxai 0.1.1 beside lfeval, without its dependencies (only its torch/numpy modules are imported):
    .venv/bin/pip install --no-deps lfxai==0.1.1
Run: .venv/bin/python benchmarks/bench_representation_shift.py [--threads 2] [--repeats 7] [--clock wall|cpu]
"""

import argparse
import math
import time

import numpy as np
import torch
from lfxai.utils.feature_attribution import generate_masks
from timing import interleaved_best

import lfeval
from lfeval.metrics import RepresentationShift

PERCENTAGES = [5, 10, 20, 50, 80, 100]  # lfxai's pert_percentages
CHUNKS = (32, 64, 128, 256, 512, 1024)


def lfxai_procedure(encoder, images: torch.Tensor, attr: np.ndarray, batch_size: int = 200):
    """consistency_feature_importance's loop (transcribed) with lfxai's generate_masks (imported).

    Returns the per-sample shifts (N, K) and the per-batch means the paper records, (n_batches, K)."""
    W = images.shape[-1]
    per_sample, batch_means = [], []
    for pert_percentage in PERCENTAGES:
        mask_size = int(pert_percentage * W**2 / 100)
        masks = generate_masks(attr, mask_size)
        shifts, means = [], []
        for batch_id in range(math.ceil(len(images) / batch_size)):
            batch = images[batch_id * batch_size: batch_id * batch_size + batch_size]
            mask = masks[batch_id * batch_size: batch_id * batch_size + len(batch)]
            original_reps = encoder(batch)
            pert_reps = encoder(mask * batch)
            shift = torch.sum((original_reps - pert_reps) ** 2, dim=-1)
            means.append(torch.mean(shift).item())  # lfxai's rep_shift
            shifts.append(shift.detach())
        per_sample.append(torch.cat(shifts))
        batch_means.append(means)
    return torch.stack(per_sample, 1).numpy(), np.array(batch_means).T


def floor_fn(encoder, inputs: torch.Tensor, chunk: int):
    def run():
        with torch.no_grad():
            for i in range(0, len(inputs), chunk):
                encoder(inputs[i:i + chunk])
    return run


def main(threads: int, repeats: int, clock: str = "wall", n: int = 1000):
    torch.set_num_threads(threads)
    fractions = tuple(p / 100 for p in PERCENTAGES)
    timer = time.perf_counter if clock == "wall" else time.process_time
    print(f"torch threads {threads}, {clock} clock, best of {repeats} interleaved rounds, {n} digits")
    for size in (8, 28):
        ds = lfeval.data.load("digits", seed=0, size=size, test_size=0.6)
        enc = lfeval.models.train_encoder(ds, pretext="reconstruction", latent_dim=8, epochs=30, seed=0,
                                          cache_dir=".lfeval-cache/bench", display_progressbar=False)
        x = ds.x_test[:n]
        a = lfeval.explain(enc, x, method="IntegratedGradients")
        xn = x.numpy()
        metric = RepresentationShift()
        per_sample = RepresentationShift(baseline=lambda batch: torch.zeros_like(batch))
        inputs = torch.cat([x, x.repeat_interleave(len(fractions), 0)])
        fns = {"lfeval b64": lambda: metric(model=enc, x_batch=xn, a_batch=a, batch_size=64),
               "lfeval b1000": lambda: metric(model=enc, x_batch=xn, a_batch=a, batch_size=1000),
               "lfeval per-sample baseline": lambda: per_sample(model=enc, x_batch=xn, a_batch=a, batch_size=1000),
               "floor whole": floor_fn(enc, inputs, len(inputs))}
        fns.update({f"floor {c}": floor_fn(enc, inputs, c) for c in CHUNKS})
        x64, a64 = xn[:64], a[:64]
        fns["lfeval 64 digits"] = lambda: metric(model=enc, x_batch=x64, a_batch=a64)
        inputs64 = torch.cat([x[:64], x[:64].repeat_interleave(len(fractions), 0)])
        fns.update({f"floor 64 digits {c}": floor_fn(enc, inputs64, c) for c in (*CHUNKS, len(inputs64))})
        fns["lfxai"] = lambda: lfxai_procedure(enc, x, a)
        best, _ = interleaved_best(fns, repeats, timer)

        metric(model=enc, x_batch=xn, a_batch=a)
        ours = metric.curves
        ref, ref_means = lfxai_procedure(enc, x, a)
        our_means = np.array([ours[i:i + 200].mean(0) for i in range(0, n, 200)])
        rounded = RepresentationShift(mask_count="round")
        rounded(model=enc, x_batch=xn, a_batch=a)
        gap20 = rounded.curves[:, 2].mean() / ours[:, 2].mean() - 1

        floor_name = min((k for k in best if k.startswith("floor") and "64 digits" not in k), key=best.get)
        floor = best[floor_name]
        print(f"\n{ds.name} ({size}x{size}), floor = {floor_name} ({floor * 1e3:.1f} ms)")
        for name, t in best.items():
            if "64 digits" not in name:
                print(f"  {name:<28}{t * 1e3:>10.1f} ms{t / floor:>8.2f}x floor")
        floor64 = min(t for k, t in best.items() if k.startswith("floor 64 digits"))
        print(f"  64 digits: lfeval {best['lfeval 64 digits'] * 1e3:.2f} ms, floor {floor64 * 1e3:.2f} ms, "
              f"{best['lfeval 64 digits'] / floor64:.2f}x")
        print(f"  lfxai / lfeval b64 {best['lfxai'] / best['lfeval b64']:.1f}, "
              f"lfxai / lfeval b1000 {best['lfxai'] / best['lfeval b1000']:.1f}")
        print(f"  agreement with lfxai: per-sample max |diff| {np.abs(ours - ref).max():.2e} "
              f"(max shift {np.abs(ref).max():.3g}), batch means max |diff| {np.abs(our_means - ref_means).max():.2e}, "
              f"Pearson {np.corrcoef(ours.ravel(), ref.ravel())[0, 1]:.6f}")
        print(f"  mean shift at 20%: floor {ours[:, 2].mean():.4f}, round {rounded.curves[:, 2].mean():.4f} "
              f"({100 * gap20:+.1f}%); masks {int(0.2 * size * size)} vs {round(0.2 * size * size)} pixels")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: perf_counter; cpu: the process's CPU time (with --threads 1, time spent waiting "
                             "for a core shared with other jobs is left out)")
    args = parser.parse_args()
    main(args.threads, args.repeats, args.clock)
