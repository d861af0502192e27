"""Example importance: lfeval (batched torch.func) vs the paper's per-example procedures.

1000 training digits x 1000 test digits (drawn with replacement from the 719-digit test split of a
60/40 split; digits has 1797 images), reconstruction autoencoder with 3 TracIn checkpoints.

Reference procedures (a faithful copy of lfxai's loops, lfxai itself pins old dependencies):
  TracIn     per-example autograd gradients (a Python loop over examples), then dot products
  Influence  per test example: LiSSA over all encoder parameters (depth 100, scale 1000, damping 1e-3,
             batches of 64), then dot products with per-example train gradients
  SimplEx    per test example: Adam on the softmax pre-weights (1000 steps), same initial rows
The slow references run on the first R test examples and their time is scaled to 1000.

Run: .venv/bin/python benchmarks/bench_examples.py
"""

import time

import numpy as np
import torch

import lfeval
from lfeval.explain.examples import InfluenceFunctions, SimplEx, TracIn

N_TRAIN, N_TEST = 1000, 1000


def grads_loop(model, enc, x):
    rows = []
    for i in range(len(x)):
        model.zero_grad()
        model.example_loss(x[i:i + 1]).sum().backward()
        rows.append(torch.cat([p.grad.flatten().clone() for p in enc.parameters()]))
    return torch.stack(rows)


def tracin_reference(enc, x_tr, x_te):
    model = enc.pretext_model
    out = torch.zeros(len(x_te), len(x_tr))
    for ck in enc.checkpoints:
        model.load_state_dict(ck["state_dict"])
        out += ck["lr"] * grads_loop(model, enc, x_te) @ grads_loop(model, enc, x_tr).T
    model.load_state_dict(enc.checkpoints[-1]["state_dict"])
    return out


def influence_reference(enc, x_tr, x_te, depth=100, scale=1000.0, damping=1e-3, batch=64, seed=0):
    model = enc.pretext_model
    params = list(enc.parameters())
    g_tr = grads_loop(model, enc, x_tr)
    gen = torch.Generator().manual_seed(seed)
    out = torch.zeros(len(x_te), len(x_tr))
    for j in range(len(x_te)):  # lfxai: one LiSSA run per test example
        model.zero_grad()
        v = torch.autograd.grad(model.example_loss(x_te[j:j + 1]).sum(), params)
        h = [t.clone() for t in v]
        for _ in range(depth):
            idx = torch.randint(len(x_tr), (batch,), generator=gen)
            grads = torch.autograd.grad(model.example_loss(x_tr[idx]).mean(), params, create_graph=True)
            hvp = torch.autograd.grad(grads, params, grad_outputs=h)
            h = [vv + (1 - damping) * hh - hv / scale for vv, hh, hv in zip(v, h, hvp)]
        s_test = torch.cat([t.flatten() for t in h]) / scale
        out[j] = g_tr @ s_test
    return out


def simplex_reference(enc, x_tr, x_te, n_steps=1000, lr=0.1, seed=0, n_total=N_TEST):
    with torch.no_grad():
        h_tr, h_te = enc(x_tr), enc(x_te)
    init = torch.randn(n_total, len(x_tr), generator=torch.Generator().manual_seed(seed))[: len(x_te)]
    out = []
    for i in range(len(x_te)):  # one optimisation per test example
        pre = init[i:i + 1].clone().requires_grad_(True)
        opt = torch.optim.Adam([pre], lr=lr)
        for _ in range(n_steps):
            opt.zero_grad()
            (torch.softmax(pre, 1) @ h_tr - h_te[i:i + 1]).pow(2).sum().backward()
            opt.step()
        out.append(torch.softmax(pre.detach(), 1))
    return torch.cat(out)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def pearson(a, b):
    return float(np.corrcoef(np.asarray(a).ravel(), np.asarray(b).ravel())[0, 1])


if __name__ == "__main__":
    torch.set_num_threads(2)
    ds = lfeval.data.load("digits", seed=0, test_size=0.4)
    enc = lfeval.models.train_encoder(ds, pretext="reconstruction", latent_dim=8, seed=0, checkpoints=3,
                                      cache_dir=".lfeval-cache/bench", display_progressbar=False)
    x_tr = ds.x_train[:N_TRAIN]
    pick = torch.randint(len(ds.x_test), (N_TEST,), generator=torch.Generator().manual_seed(0))
    x_te = ds.x_test[pick]
    quiet = {"display_progressbar": False}

    rows, total = [], 0.0
    for method in ("cosine", "dknn"):
        t, _ = timed(lambda: lfeval.examples.importance(enc, x_tr, x_te, method))
        total += t
        rows.append((method, t, None, None, "-"))

    t, ours = timed(lambda: TracIn(enc, **quiet).attribute(x_tr, x_te))
    total += t
    r = 50
    t_ref, ref = timed(lambda: tracin_reference(enc, x_tr, x_te[:r]))
    # the reference's train-gradient loop is paid once; its test loop scales with the number of test examples
    t_ref_test, _ = timed(lambda: [grads_loop(enc.pretext_model, enc, x_te[:r]) for _ in enc.checkpoints])
    t_ref_full = t_ref + t_ref_test * (N_TEST / r - 1)
    rows.append(("tracin", t, t_ref_full, pearson(ours[:r], ref), "same algorithm"))

    t, ours = timed(lambda: SimplEx(enc, **quiet).attribute(x_tr, x_te))
    total += t
    r = 10
    t_ref, ref = timed(lambda: simplex_reference(enc, x_tr, x_te[:r]))
    rows.append(("simplex", t, t_ref * N_TEST / r, pearson(ours[:r], ref), "same algorithm"))

    t, ours = timed(lambda: InfluenceFunctions(enc, **quiet).attribute(x_tr, x_te))
    total += t
    r = 5
    t_ref, ref = timed(lambda: influence_reference(enc, x_tr, x_te[:r]))
    rows.append(("influence", t, t_ref * N_TEST / r, pearson(ours[:r], ref),
                 "exact, last layer vs LiSSA, all parameters"))

    print(f"{'method':<11}{'lfeval s':>10}{'reference s':>13}{'speed-up':>10}{'Pearson':>9}  note")
    for name, t, t_ref, corr, note in rows:
        ref_s = f"{t_ref:>13.1f}" if t_ref else f"{'-':>13}"
        speed = f"{t_ref / t:>10.0f}" if t_ref else f"{'-':>10}"
        corr_s = f"{corr:>9.4f}" if corr is not None else f"{'-':>9}"
        print(f"{name:<11}{t:>10.2f}{ref_s}{speed}{corr_s}  {note}")
    print(f"all five methods, lfeval: {total:.1f} s")
