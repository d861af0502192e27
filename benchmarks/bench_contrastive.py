"""Contrastive explanations (CEM): lfeval's batched FISTA vs the same algorithm run one sample at a time.

100 digits test images (seed-0 split). Two models:
  classifier  the classification-pretext model (encoder + linear head), decision = argmax of the logits
  encoder     the reconstruction encoder (latent_dim 8), decision = nearest of 10 k-means prototypes of
              the training latents (label-free)
The reconstruction autoencoder (encoder + decoder) provides the gamma term in both cases.

Hyperparameters are the paper's MNIST values: kappa 0.1, beta 0.1, gamma 100, c_init 10, 9 binary-search
steps over c, lr 1e-2. FISTA runs lfeval's default 200 iterations per step (the paper uses 1000).

  batched     ContrastiveExplainer.explain on all 100 images: one FISTA loop, c as an (N,) tensor.
  per-sample  The same explainer called on x[i:i+1] for each image, one instance per call as in the
              authors' code (IBM/Contrastive-Explanation-Method) and in alibi's CEM. It runs without
              lfeval's row padding (row_block = 1), as the public code does, and its time is the reference.
              It runs on the first R images (--reference) and its time is scaled linearly to all n. Every
              image costs the same c_steps x iterations FISTA steps, so the scaling is exact up to noise.
  exact       The per-sample runs repeated on the first E images (--exact) with lfeval's padding
              (row_block = 4). A sample's float32 arithmetic then does not depend on the batch size, and
              the results must equal the batched ones.

Run: .venv/bin/python benchmarks/bench_contrastive.py [--n 100] [--reference 25] [--exact 8] [--iterations 200]
                                                     [--threads 2]
"""

import argparse
import time

import torch

import lfeval
from lfeval.explain.contrastive import ROW_BLOCK, ContrastiveExplainer, fit_prototypes


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def one_at_a_time(explainer, x, row_block):
    saved, explainer.row_block = explainer.row_block, row_block
    try:
        runs = [explainer.explain(x[i:i + 1]) for i in range(len(x))]
    finally:
        explainer.row_block = saved
    return {f: torch.cat([getattr(r, f) for r in runs]) for f in ("delta", "found", "c", "distance")}


def max_diff(batch, alone, n):
    return float((batch.delta[:n] - alone["delta"]).abs().max())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100, help="test images")
    parser.add_argument("--reference", type=int, default=25, help="images run one at a time (time scaled to n)")
    parser.add_argument("--exact", type=int, default=8, help="images re-run per sample with lfeval's padding")
    parser.add_argument("--iterations", type=int, default=200, help="FISTA iterations per c step")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = lfeval.data.load("digits", seed=0)
    cache = ".lfeval-cache/bench"
    clf = lfeval.models.train_encoder(ds, pretext="classification", latent_dim=8, seed=0, cache_dir=cache,
                                      display_progressbar=False).pretext_model.eval()
    enc = lfeval.models.train_encoder(ds, pretext="reconstruction", latent_dim=8, seed=0, cache_dir=cache,
                                      display_progressbar=False)
    ae = enc.pretext_model.eval()
    t_proto, prototypes = timed(lambda: fit_prototypes(enc, ds.x_train, n_prototypes=10, seed=0))
    print(f"k-means prototypes (1257 training latents, K = 10): {t_proto:.2f} s")
    x = ds.x_test[:args.n]
    hp = dict(kappa=0.1, beta=0.1, gamma=100.0, c_init=10.0, c_steps=9, iterations=args.iterations, lr=1e-2)

    rows = []
    for task, model, opts in (("classifier", clf, {}), ("encoder", enc, {"prototypes": prototypes})):
        for mode in ("PP", "PN"):
            explainer = ContrastiveExplainer(model, autoencoder=ae, mode=mode, **opts, **hp)
            ContrastiveExplainer(model, autoencoder=ae, mode=mode, **opts, c_steps=1, iterations=3).explain(x[:5])
            t_batch, batch = timed(lambda: explainer.explain(x))
            t_ref, ref = timed(lambda: one_at_a_time(explainer, x[:args.reference], row_block=1))
            t_ref *= args.n / args.reference
            exact = one_at_a_time(explainer, x[:args.exact], row_block=ROW_BLOCK)
            n_c = int((batch.c[:args.reference] != ref["c"]).sum())
            both = batch.found[:args.reference] & ref["found"]
            dist = (float(batch.distance[:args.reference][both].mean()), float(ref["distance"][both].mean()))
            rows.append((task, mode, int(batch.found.sum()), int(batch.found[:args.reference].sum()),
                         int(ref["found"].sum()), t_batch, t_ref,
                         max_diff(batch, exact, args.exact), max_diff(batch, ref, args.reference), n_c, dist))
            print(f"  {task} {mode}: batched {t_batch:.1f} s, per-sample {t_ref:.1f} s", flush=True)

    print(f"\n{args.n} images, {hp['c_steps']} c steps x {args.iterations} iterations, {args.threads} thread(s), "
          f"reference on {args.reference} images")
    print(f"{'task':<11}{'mode':<5}{'found':>7}{'found R: batch/1x1':>20}{'batched s':>11}{'per-sample s':>14}"
          f"{'speed-up':>10}{'diff exact':>12}{'diff unpadded':>15}{'c differs':>11}{'EN dist':>17}")
    for task, mode, found, found_r, found_ref, tb, tr, d_exact, d_ref, n_c, dist in rows:
        print(f"{task:<11}{mode:<5}{found:>7}{found_r:>14} /{found_ref:>4}{tb:>11.2f}{tr:>14.1f}{tr / tb:>10.1f}"
              f"{d_exact:>12.1e}{d_ref:>15.2e}{n_c:>11}{dist[0]:>9.3f} /{dist[1]:>6.3f}")
    print(f"per-sample s: {args.reference} images one at a time, scaled to {args.n}; the columns after it are on "
          f"those {args.reference} images.\n"
          f"diff exact: max |delta| difference, batched vs per-sample with padding, first {args.exact} images; "
          "diff unpadded: vs the unpadded per-sample reference; c differs: images whose final c differs;\n"
          "EN dist: mean beta*|delta|_1 + |delta|_2^2 of the kept solutions, batched / unpadded per-sample, "
          "over images found by both")
