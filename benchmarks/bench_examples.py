"""Example importance: lfeval (batched torch / torch.func) vs the paper's own code (lfxai 0.1.1).

1000 training digits x 1000 test digits (drawn with replacement from the 719-digit test split of a 60/40 split;
digits has 1797 images), reconstruction autoencoder (71.5k encoder parameters) with 3 TracIn checkpoints.

The references are lfxai's own classes, imported from the installed package (``lfxai.explanations.examples``),
on the same encoder: the full model ``enc.pretext_model`` (it has the ``.encoder`` lfxai differentiates), the
loss ``torch.nn.MSELoss()`` of the paper's MNIST experiments (the mean squared reconstruction error, lfeval's
per-example loss), and the checkpoints saved to files for lfxai's ``checkpoints_files``:

  dknn       NearestNeighbours.attribute(x_test, train_idx, batch_size=500)
  simplex    SimplEx.attribute(x_test, train_idx, batch_size=50): one Adam run (zero pre-weights, lr 1e-3,
             1000 steps) per batch of 50 test examples
  tracin     TracIn.attribute(x_test, train_idx, learning_rate=lr): per-example autograd gradients
             (create_graph=True) at each checkpoint, then one product (about 4 GB at 1000 x 1000)
  influence  InfluenceFunctions.attribute_loader(...), the path the experiments run: per training example,
             LiSSA over all encoder parameters (depth 100, scale 1000, damping 1e-3, batches of 200 drawn with
             replacement), gradients saved to files, then one torch.load + dot product per (test, train) pair.
             lfxai's in-memory ``attribute`` does not run in 0.1.1 (it passes a list to
             ``hessian_vector_product``, which calls ``.flatten()`` on it). Its cost is linear in the number of
             training examples R: it is timed at two R and extrapolated to 1000.
  lfeval's influence runs twice: its default (exact solve, last encoder layer) and solver="lissa",
  params="all", lissa_batch=200 (lfxai's estimator; vmapped over test vectors, timed once on 20 of them and
  scaled to 1000)

Timings are interleaved best-of-N rounds (other jobs share the CPU). Agreement: Pearson correlation and the
max abs difference relative to the largest |score| of the reference.

Needs lfxai 0.1.1 beside lfeval, without its dependencies (only its torch/numpy/tqdm modules are imported):
    .venv/bin/pip install --no-deps lfxai==0.1.1
Run: .venv/bin/python benchmarks/bench_examples.py [--threads 2] [--repeats 3]
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from lfxai.explanations.examples import InfluenceFunctions as LfxaiInfluence
from lfxai.explanations.examples import NearestNeighbours as LfxaiDkNN
from lfxai.explanations.examples import SimplEx as LfxaiSimplEx
from lfxai.explanations.examples import TracIn as LfxaiTracIn
from timing import interleaved_best
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

import lfeval
from lfeval.explain.examples import InfluenceFunctions, SimplEx, TracIn

N_TRAIN, N_TEST = 1000, 1000
QUIET = {"display_progressbar": False}


def agreement(ours, ref):
    """Pearson, max |ours - ref| / max |ref|, and the same after fitting one scale factor to ours."""
    ours, ref = np.asarray(ours, dtype=np.float64).ravel(), np.asarray(ref, dtype=np.float64).ravel()
    corr = float(np.corrcoef(ours, ref)[0, 1])
    scale = float(ours @ ref / (ours @ ours))
    top = np.abs(ref).max()
    return corr, float(np.abs(ours - ref).max() / top), float(np.abs(scale * ours - ref).max() / top)


def lfxai_influence(model, x_tr, x_te, n_train: int, tmp: Path, seed: int = 0, batch_size: int = 200):
    """lfxai's InfluenceFunctions.attribute_loader on the first ``n_train`` training examples (as the experiments:
    DataLoaders of one example, a replacement sampler of depth * batch_size examples)."""
    torch.manual_seed(seed)
    labels = torch.zeros(len(x_tr), dtype=torch.long)
    train = DataLoader(TensorDataset(x_tr[:n_train], labels[:n_train]))
    test = DataLoader(TensorDataset(x_te, torch.zeros(len(x_te), dtype=torch.long)))
    full = TensorDataset(x_tr, labels)
    replacement = DataLoader(full, batch_size, sampler=RandomSampler(full, replacement=True,
                                                                     num_samples=100 * batch_size))
    explainer = LfxaiInfluence(model, torch.nn.MSELoss(), tmp / f"if_grads_{n_train}")
    return explainer.attribute_loader(torch.device("cpu"), train, test, train_loader_replacement=replacement,
                                      recursion_depth=100, damp=1e-3, scale=1000)


def main(threads: int, repeats: int, influence_r=(4, 12), lissa_n=20):
    torch.set_num_threads(threads)
    ds = lfeval.data.load("digits", seed=0, test_size=0.4)
    enc = lfeval.models.train_encoder(ds, pretext="reconstruction", latent_dim=8, seed=0, checkpoints=3,
                                      cache_dir=".lfeval-cache/bench", display_progressbar=False)
    x_tr = ds.x_train[:N_TRAIN]
    pick = torch.randint(len(ds.x_test), (N_TEST,), generator=torch.Generator().manual_seed(0))
    x_te = ds.x_test[pick]
    idx = list(range(N_TRAIN))
    model = enc.pretext_model
    final_state = {k: v.clone() for k, v in model.state_dict().items()}
    lrs = {float(ck["lr"]) for ck in enc.checkpoints}
    lr = lrs.pop() if len(lrs) == 1 else 1.0  # one learning rate: lfxai's scalar then matches lfeval's weights
    tmp = Path(tempfile.mkdtemp(prefix="lfxai_bench_"))
    model.checkpoints_files = []
    for i, ck in enumerate(enc.checkpoints):
        torch.save(ck["state_dict"], tmp / f"checkpoint{i}.pt")
        model.checkpoints_files.append(tmp / f"checkpoint{i}.pt")

    def lfxai_tracin():
        out = LfxaiTracIn(model, torch.nn.MSELoss(), tmp / "tracin", X_train=x_tr).attribute(x_te, idx,
                                                                                               learning_rate=lr)
        model.load_state_dict(final_state)
        return out.detach()

    fns = {
        "cosine": lambda: lfeval.examples.importance(enc, x_tr, x_te, "cosine"),
        "dknn": lambda: lfeval.examples.importance(enc, x_tr, x_te, "dknn"),
        "lfxai dknn": lambda: LfxaiDkNN(model, X_train=x_tr).attribute(x_te, idx, batch_size=500).detach(),
        "simplex": lambda: SimplEx(enc, **QUIET).attribute(x_tr, x_te),
        "lfxai simplex": lambda: LfxaiSimplEx(model, X_train=x_tr).attribute(x_te, idx, batch_size=50),
        "tracin": lambda: TracIn(enc, **QUIET).attribute(x_tr, x_te),
        "lfxai tracin": lfxai_tracin,
        "influence": lambda: InfluenceFunctions(enc, **QUIET).attribute(x_tr, x_te),
    }
    print(f"torch threads {threads}, best of {repeats} interleaved rounds; checkpoint learning rates "
          f"{[float(ck['lr']) for ck in enc.checkpoints]}")
    best, outs = interleaved_best(fns, repeats)

    runs = {}
    for r in influence_r:  # linear in the number of training examples: time two, extrapolate to 1000
        start = time.perf_counter()
        runs[r] = lfxai_influence(model, x_tr, x_te, r, tmp)
        runs[r] = (time.perf_counter() - start, runs[r])
    (r0, (t0, _)), (r1, (t1, ref_inf)) = sorted(runs.items())
    per_train = (t1 - t0) / (r1 - r0)
    t_inf = t0 + per_train * (N_TRAIN - r0)
    model.load_state_dict(final_state)
    del model.checkpoints_files
    shutil.rmtree(tmp)  # lfxai's gradient files (about 300 MB per influence run)
    # lfeval's LiSSA over all parameters, as lfxai's (batches of 200): it vmaps the HVPs over the test vectors,
    # (n_test x 200) examples per step, so it runs once, on the first lissa_n test examples, scaled to 1000
    start = time.perf_counter()
    outs["influence lissa"] = InfluenceFunctions(enc, solver="lissa", params="all", lissa_batch=200,
                                                 **QUIET).attribute(x_tr, x_te[:lissa_n])
    best["influence lissa"] = (time.perf_counter() - start) * N_TEST / lissa_n

    rows = [("cosine", None, None), ("dknn", "lfxai dknn", None), ("simplex", "lfxai simplex", None),
            ("tracin", "lfxai tracin", None),
            ("influence", None, ("lfxai influence", t_inf, ref_inf, r1)),
            ("influence lissa", None, ("lfxai influence", t_inf, ref_inf, r1))]
    print(f"\n{'lfeval method':<17}{'lfeval s':>9}{'lfxai s':>10}{'speed-up':>10}{'Pearson':>9}{'max|diff|/max':>15}"
          f"{'scaled':>10}")
    for name, ref_name, extra in rows:
        t = best[name]
        if ref_name is not None:
            t_ref = best[ref_name]
            corr, diff, scaled = agreement(outs[name], outs[ref_name])
        elif extra is not None:
            ref_name, t_ref, ref, r = extra
            ours = outs[name][:, :r]
            corr, diff, scaled = agreement(ours, ref[:len(ours)])
        else:
            print(f"{name:<17}{t:>9.3f}{'-':>10}{'-':>10}{'-':>9}{'-':>15}{'-':>10}")
            continue
        print(f"{name:<17}{t:>9.3f}{t_ref:>10.3f}{t_ref / t:>10.1f}{corr:>9.4f}{diff:>15.2e}{scaled:>10.2e}")
    print(f"lfxai influence: attribute_loader timed at R = {r0} ({t0:.1f} s) and R = {r1} ({t1:.1f} s) training "
          f"examples, {per_train:.2f} s per training example, extrapolated to {N_TRAIN}: {t_inf:.0f} s; "
          f"agreement on the R = {r1} columns")
    print(f"lfeval influence lissa: timed once on {lissa_n} test examples and scaled to {N_TEST}; agreement on "
          f"{lissa_n} x {r1}")
    with torch.no_grad():  # SimplEx's objective: how well the convex weights rebuild the test latents
        h_tr, h_te = enc(x_tr), enc(x_te)
        for name in ("simplex", "lfxai simplex"):
            err = (outs[name] @ h_tr - h_te).pow(2).sum(1)
            print(f"{name}: mean ||w H_train - h_test||^2 = {err.mean():.3e} "
                  f"(mean ||h_test||^2 = {h_te.pow(2).sum(1).mean():.3f})")
    total = sum(best[k] for k in ("cosine", "dknn", "simplex", "tracin", "influence"))
    print(f"all five methods (influence exact), lfeval: {total:.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    main(args.threads, args.repeats)
