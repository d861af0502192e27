"""RELAX: lfeval (all inputs x masks in large batches, sums as matrix products) vs relax-xai 0.0.5 (one image at a
time, a Python loop over the masks for the running mean and variance).

On 100 digits test images (8x8, and upsampled to 28x28), reconstruction autoencoder, 3000 masks per image (the
paper's default: relax-xai's 30 batches of 100), 7 cells, p = 0.5.
  relax-xai   relax_xai.relax.RELAX(image, encoder, batch_size=100, num_batches=30).forward(), per image
  lfeval      lfeval.explain(method="RELAX", n_masks=3000, batch_size=B) for the whole batch
Both on 1 thread, interleaved, best of 2. Agreement: relax-xai fed lfeval's masks on the first 10
images (max |importance difference|).

Run: .venv/bin/python benchmarks/bench_relax.py
"""

import time

import torch
from relax_xai import relax as relax_module

import lfeval
from lfeval.explain.relax import RELAX, relax_masks

N, MASKS, BLOCK = 100, 3000, 100
BATCH_SIZES, REPEAT = (100, 256, 1024, 8192), 2


def relax_xai(enc, x):
    out = []
    for i in range(len(x)):
        with torch.no_grad():
            r = relax_module.RELAX(x[i:i + 1], enc, batch_size=BLOCK, num_batches=MASKS // BLOCK)
            r.forward()
        out.append(r.importance.clone())
    return torch.stack(out)


def agreement(enc, x, seed=0):
    ours = RELAX(enc).attribute(x, n_masks=MASKS, seed=seed, batch_size=8192)[:, 0]
    masks = relax_masks(MASKS, tuple(x.shape[2:]), seed=seed)
    original = relax_module.mask_generator
    try:
        diffs = []
        for i in range(len(x)):
            blocks = iter(masks.split(BLOCK))
            relax_module.mask_generator = lambda *args, **kw: iter([next(blocks)])
            with torch.no_grad():
                r = relax_module.RELAX(x[i:i + 1], enc, batch_size=BLOCK, num_batches=MASKS // BLOCK)
                r.forward()
            diffs.append(float((r.importance - ours[i]).abs().max()))
    finally:
        relax_module.mask_generator = original
    return max(diffs)


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(f"{'data':<12}{'batch_size':>11}{'lfeval s':>10}{'relax-xai s':>13}{'speed-up':>10}{'max |diff|':>12}")
    for size in (8, 28):
        ds = lfeval.data.load("digits", seed=0, size=size, test_size=0.6)
        enc = lfeval.models.train_encoder(ds, pretext="reconstruction", latent_dim=8, epochs=30, seed=0,
                                          cache_dir=".lfeval-cache/bench", display_progressbar=False)
        x = ds.x_test[:N]
        diff = agreement(enc, x[:10])
        t_ref, t = float("inf"), dict.fromkeys(BATCH_SIZES, float("inf"))
        for _ in range(REPEAT):  # interleaved, best of REPEAT: the machine's 2 cores are shared
            torch.manual_seed(0)
            t_ref = min(t_ref, best_of(lambda: relax_xai(enc, x), repeat=1))
            for b in BATCH_SIZES:
                t[b] = min(t[b], best_of(lambda: lfeval.explain(enc, x, method="RELAX", n_masks=MASKS, batch_size=b),
                                         repeat=1))
        for b in BATCH_SIZES:
            print(f"{ds.name:<12}{b:>11}{t[b]:>10.2f}{t_ref:>13.2f}{t_ref / t[b]:>10.1f}{diff:>12.1e}")
