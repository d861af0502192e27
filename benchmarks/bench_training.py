"""Time to train all five pretext encoders on digits (latent_dim=8), with their probe accuracy.

Run: .venv/bin/python benchmarks/bench_training.py   (goal: <= 60 s in total on 2 CPU cores)
"""

import time

import torch

import lfeval
from lfeval.models import PRETEXTS, probe_accuracy, train_encoder

if __name__ == "__main__":
    torch.set_num_threads(2)
    ds = lfeval.data.load("digits", seed=0)
    total = 0.0
    print(f"{'pretext':<16}{'epochs':>8}{'seconds':>10}{'probe acc':>11}")
    for p in PRETEXTS:
        start = time.perf_counter()
        enc = train_encoder(ds, pretext=p, latent_dim=8, seed=0, display_progressbar=False)
        dt = time.perf_counter() - start
        total += dt
        print(f"{p:<16}{len(enc.history['val_loss']):>8}{dt:>10.1f}{probe_accuracy(enc, ds):>11.3f}")
    print(f"{'total':<16}{'':>8}{total:>10.1f}")
