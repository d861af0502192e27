"""The paper's §4.2 pretext-sensitivity table and §4.3 VAE trend, on digits (or MNIST with --root).

§4.2: encoders (latent d = 4, as the paper) trained on reconstruction, denoising, inpainting and
classification with 5 seeds; Pearson correlation between every pair of tasks of |label-free
GradientShap| pooled over all test pixels (features) and of the DkNN matrix (examples), mean ± std
over seeds (lfeval.metrics.pretext_correlation_table).
§4.3: β-VAE and TC-VAE with β in {1, 5, 10}: mean off-diagonal Pearson correlation of the latent
units' saliency maps, entropy and active units (lfeval.metrics.UnitSaliencyCorrelation).

Run: .venv/bin/python benchmarks/bench_pretext.py [--seeds 5] [--root DIR --data mnist]
"""

import argparse
import time
import warnings

import numpy as np
import pandas as pd
import torch

import lfeval
from lfeval.metrics import UnitSaliencyCorrelation, pretext_correlation_table

TASKS = ("reconstruction", "denoising", "inpainting", "classification")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="digits")
    parser.add_argument("--root", default=None)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--n-train", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.simplefilter("ignore")
    ds = lfeval.data.load(args.data, root=args.root, seed=0)
    x, x_train = ds.x_test[: args.n_test], ds.x_train[: args.n_train]
    cache = ".lfeval-cache/bench"
    start = time.perf_counter()
    encoders = {t: [lfeval.models.train_encoder(ds, pretext=t, latent_dim=4, seed=s, cache_dir=cache,
                                                display_progressbar=False) for s in range(args.seeds)]
                for t in TASKS}
    print(f"{args.data}: trained {len(TASKS) * args.seeds} encoders in {time.perf_counter() - start:.0f} s")
    seeds = list(range(args.seeds))
    feats = pretext_correlation_table(encoders, x, kind="features", method="GradientShap", seeds=seeds)
    examples = pretext_correlation_table(encoders, x, kind="examples", x_train=x_train, seeds=seeds)
    table = feats[["task_a", "task_b"]].copy()
    table["features"] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(feats["mean"], feats["std"])]
    table["examples"] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(examples["mean"], examples["std"])]
    print(f"\n§4.2 pretext sensitivity (Pearson, mean ± std over {args.seeds} seeds)")
    print(table.to_string(index=False))

    rows = []
    for kind in ("beta-vae", "tc-vae"):
        for beta in (1, 5, 10):
            enc = lfeval.models.train_encoder(ds, pretext=kind, beta=float(beta), latent_dim=4, seed=0,
                                              cache_dir=cache, display_progressbar=False)
            metric = UnitSaliencyCorrelation(method="GradientShap")
            corr = metric(model=enc, x_batch=x.numpy())
            with torch.no_grad():
                mu = enc(x)
            rows.append({"model": kind, "beta": beta, "unit saliency correlation": np.nanmean(corr),
                         "entropy": metric.entropy.mean(), "active units (saliency)": metric.active_units.mean(),
                         "active units (var mu > 0.01)": int((mu.var(0) > 0.01).sum())})
    print("\n§4.3 disentangled VAEs (d = 4, seed 0)")
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
