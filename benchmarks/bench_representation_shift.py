"""RepresentationShift vs the forward-pass floor and vs the paper's per-sample procedure.

On 1000 digits (8x8 and upsampled 28x28), 6 mask fractions, label-free IG attributions:
  lfeval  - RepresentationShift (rank + compare in torch, a few large forward passes)
  floor   - the same (K + 1) * N forward passes alone, inputs prebuilt
  paper   - lfxai's procedure (experiments/mnist.py, consistency_feature_importance): for each fraction, a
            Python loop over samples builds the top-k masks, then per test batch (100) the original and
            the masked inputs are encoded and the shift is computed
Prints times, ratios and the max deviation from the paper's numbers.

Run: .venv/bin/python benchmarks/bench_representation_shift.py
"""

import time

import numpy as np
import torch

import lfeval
from lfeval.metrics import RepresentationShift

FRACTIONS = (0.05, 0.1, 0.2, 0.5, 0.8, 1.0)


def paper_procedure(enc, x, a, fractions, baseline=0.0, batch_size=100):
    x, imp = torch.as_tensor(x), torch.as_tensor(a).abs().sum(1)
    n_pix = imp[0].numel()
    curves = np.zeros((len(x), len(fractions)))
    for k, frac in enumerate(fractions):
        masks = torch.zeros(len(x), n_pix, dtype=torch.bool)
        for i in range(len(x)):  # the paper's per-sample mask loop
            top = torch.argsort(imp[i].flatten(), descending=True, stable=True)[: max(1, round(frac * n_pix))]
            masks[i, top] = True
        masks = masks.view(len(x), 1, *imp.shape[1:])
        for start in range(0, len(x), batch_size):  # then a shift per batch
            xb, mb = x[start:start + batch_size], masks[start:start + batch_size]
            with torch.no_grad():
                curves[start:start + batch_size, k] = (enc(xb) - enc(torch.where(mb, baseline, xb))).pow(2).sum(1)
    return curves


def floor(enc, x, n_frac, chunk=512):
    inputs = x.repeat_interleave(n_frac, 0)
    with torch.no_grad():
        enc(x)
        for i in range(0, len(inputs), chunk):
            enc(inputs[i:i + chunk])


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


if __name__ == "__main__":
    torch.set_num_threads(2)
    print(f"{'data':<10}{'lfeval s':>10}{'floor s':>10}{'paper s':>10}{'lfeval/floor':>14}{'paper/lfeval':>14}"
          f"{'max |diff|':>12}{'rel diff':>10}")
    for size in (8, 28):
        ds = lfeval.data.load("digits", seed=0, size=size, test_size=0.6)
        enc = lfeval.models.train_encoder(ds, pretext="reconstruction", latent_dim=8, epochs=30, seed=0,
                                          cache_dir=".lfeval-cache/bench", display_progressbar=False)
        x = ds.x_test[:1000]
        a = lfeval.explain(enc, x, method="IntegratedGradients")
        metric = RepresentationShift(fractions=FRACTIONS)
        t_lf, _ = best_of(lambda: metric(model=enc, x_batch=x.numpy(), a_batch=a, batch_size=len(x)))
        curves = metric.curves
        t_floor, _ = best_of(lambda: floor(enc, x, len(FRACTIONS)))
        t_paper, ref = best_of(lambda: paper_procedure(enc, x, a, FRACTIONS), repeat=1)
        diff = np.abs(curves - ref).max()
        print(f"{ds.name:<10}{t_lf:>10.3f}{t_floor:>10.3f}{t_paper:>10.2f}{t_lf / t_floor:>14.2f}"
              f"{t_paper / t_lf:>14.1f}{diff:>12.2e}{diff / np.abs(ref).max():>10.1e}")
