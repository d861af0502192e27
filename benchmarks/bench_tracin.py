"""TracIn at the floor: factorised (per-layer "ghost") TracIn vs lfeval's dense TracIn vs lfxai's loops.

A. digits, 1000 training x 1000 test digits (as bench_examples.py: a 60/40 split, the test digits drawn
   with replacement), the reconstruction autoencoder with 3 checkpoints. Three implementations, timed
   interleaved (best of --repeat):
     lfxai       lfxai 0.1.1's own TracIn.attribute (pip install --no-deps lfxai==0.1.1): a Python loop of
                 autograd.grad(create_graph=True) per example and checkpoint, then one einsum
     dense       lfeval's TracIn(algorithm="dense"), the algorithm before the factorisation: per-example
                 gradients (N, P) with torch.func.vmap, then (N x P)(P x N) products
     factorised  lfeval's TracIn() default: per-layer inner products from activations and output gradients
   and their agreement (max |difference| relative to the largest score, Pearson).
B. ResNet-18 (torchvision, random weights, 11.2M encoder parameters) on digits upscaled to 3x64x64 with a
   small decoder head, 2 checkpoints: factorised TracIn, the memory the dense version would need, and the
   random projections (TRAK-style) against the exact scores.

Run: .venv/bin/python benchmarks/bench_tracin.py [--n 1000] [--repeat 3] [--threads 1] [--resnet-n 500]
The machine must be otherwise idle for the seconds to mean anything; the ratios are from interleaved runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from timing import interleaved_best  # noqa: E402
from torch import nn  # noqa: E402

import lfeval  # noqa: E402
from lfeval.explain.examples import TracIn  # noqa: E402
from lfeval.memory import feature_budget  # noqa: E402


def pearson(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel())[0, 1])


def rel_diff(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).abs().max() / b.abs().max())


def lfxai_tracin(enc, x_tr, x_te, folder: Path):
    """lfxai's TracIn on lfeval's model: its checkpoint files, its loss (MSE of one example), its loop."""
    from lfxai.explanations.examples import TracIn as LfxaiTracIn

    model = enc.pretext_model
    files = []
    for i, ck in enumerate(enc.checkpoints):
        files.append(folder / f"checkpoint{i}.pt")
        torch.save(ck["state_dict"], files[-1])
    model.checkpoints_files = files  # what lfxai's attribute() reads
    lr = {ck["lr"] for ck in enc.checkpoints}
    assert len(lr) == 1, "lfxai takes one learning rate for all checkpoints"
    explainer = LfxaiTracIn(model, loss_f=nn.MSELoss(), save_dir=folder / "grads", X_train=x_tr)
    try:
        return explainer.attribute(x_te, list(range(len(x_tr))), learning_rate=lr.pop()).detach()
    finally:
        model.load_state_dict(enc.checkpoints[-1]["state_dict"])
        model.eval()


def part_a(args):
    ds = lfeval.data.load("digits", seed=0, test_size=0.4)
    enc = lfeval.models.train_encoder(ds, pretext="reconstruction", latent_dim=8, seed=0, checkpoints=3,
                                      cache_dir=".lfeval-cache/bench", display_progressbar=False)
    x_tr = ds.x_train[:args.n]
    x_te = ds.x_test[torch.randint(len(ds.x_test), (args.n,), generator=torch.Generator().manual_seed(0))]
    n_params = sum(p.numel() for p in enc.parameters())
    quiet = {"display_progressbar": False}
    with tempfile.TemporaryDirectory() as tmp:
        fns = {"factorised": lambda: TracIn(enc, **quiet).attribute(x_tr, x_te),
               "dense": lambda: TracIn(enc, algorithm="dense", **quiet).attribute(x_tr, x_te)}
        if not args.skip_lfxai:
            fns["lfxai"] = lambda: lfxai_tracin(enc, x_tr, x_te, Path(tmp))
        best, out = interleaved_best(fns, args.repeat)
    print(f"\nA. digits {args.n} x {args.n}, reconstruction autoencoder ({n_params} encoder parameters), "
          f"{len(enc.checkpoints)} checkpoints, {torch.get_num_threads()} thread(s), best of {args.repeat}")
    print(f"{'':12s}{'seconds':>9s}{'factorised is':>16s}{'max rel diff':>14s}{'Pearson':>9s}")
    ref = out["factorised"]
    for name in fns:
        speed = f"{best[name] / best['factorised']:.1f}x faster" if name != "factorised" else "-"
        diff = f"{rel_diff(ref, out[name]):.1e}" if name != "factorised" else "-"
        corr = f"{pearson(ref, out[name]):.6f}" if name != "factorised" else "-"
        print(f"{name:12s}{best[name]:9.2f}{speed:>16s}{diff:>14s}{corr:>9s}")
    print("goals: >= 20x faster than lfxai, >= 10x faster than the dense lfeval TracIn; equal to 1e-5")
    for k in args.projections:
        t, proj = interleaved_best({"p": lambda k=k: TracIn(enc, projection=k, **quiet).attribute(x_tr, x_te)}, 1)
        print(f"  projection={k}: {t['p']:.2f} s, Pearson vs exact {pearson(proj['p'], ref):.4f}")


class ResNetAE(nn.Module):
    """torchvision's ResNet-18 (random weights) as the encoder, a small decoder head (16 -> 3x16x16, x4)."""

    def __init__(self, latent_dim: int = 16):
        super().__init__()
        import torchvision

        self.encoder = torchvision.models.resnet18(weights=None, num_classes=latent_dim)
        self.head = nn.Sequential(nn.Linear(latent_dim, 3 * 16 * 16), nn.Unflatten(1, (3, 16, 16)),
                                  nn.Upsample(scale_factor=4), nn.Sigmoid())

    def forward(self, x):
        return self.head(self.encoder(x))


def mse(forward, x, y=None, extra=None):
    return (forward(x) - x).pow(2).flatten(1).mean(1)


def part_b(args):
    torch.manual_seed(0)
    ds = lfeval.data.load("digits", seed=0)

    def up(x):
        return F.interpolate(x, size=(64, 64), mode="bilinear").repeat(1, 3, 1, 1)

    n = args.resnet_n
    x_tr, x_te = up(ds.x_train[:n]), up(ds.x_test[:n])
    model = ResNetAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    checkpoints = []
    for step in range(4):  # two checkpoints, two Adam steps apart (batch-norm statistics move in train mode)
        model.train()
        idx = torch.randint(len(x_tr), (32,), generator=gen)
        loss = mse(model, x_tr[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 2:
            checkpoints.append({"state_dict": {k: v.clone() for k, v in model.state_dict().items()}, "lr": 1e-3})
    model.eval()
    enc = lfeval.Encoder(model.encoder, modality="image", input_shape=(3, 64, 64), pretext_model=model, loss=mse,
                         checkpoints=checkpoints).eval()
    n_params = sum(p.numel() for p in model.encoder.parameters())
    quiet = {"display_progressbar": False}
    print(f"\nB. ResNet-18 encoder ({n_params / 1e6:.1f}M parameters), 3x64x64 inputs, {n} x {n}, "
          f"{len(checkpoints)} checkpoints, {torch.get_num_threads()} thread(s)")
    small = TracIn(enc, **quiet).attribute(x_tr[:6], x_te[:4])
    dense_small = TracIn(enc, algorithm="dense", chunk_size=2, **quiet).attribute(x_tr[:6], x_te[:4])
    print(f"  exactness on 6 x 4: max rel diff factorised vs dense {rel_diff(small, dense_small):.1e}")
    start = time.perf_counter()
    m = TracIn(enc, **quiet)
    exact = m.attribute(x_tr, x_te)
    t_exact = time.perf_counter() - start
    dense_gb = n * n_params * 4 / 2 ** 30
    forms = {f: sum(v == f for v in m.layer_forms.values()) for f in sorted(set(m.layer_forms.values()))}
    print(f"  factorised (exact): {t_exact:.1f} s; layers {forms}; test features kept at once "
          f"{m.feature_bytes / 2 ** 20:.0f} MB (max_memory {feature_budget(m.device) / 2 ** 30:.2f} GiB, "
          f"{m.test_blocks} test block(s))")
    print(f"  dense: the {n} test gradients alone need {dense_gb:.1f} GB, and each chunk of 512 training gradients "
          f"{512 * n_params * 4 / 2 ** 30:.1f} GB more (this machine: "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2 ** 30:.0f} GB): not run")
    for k in args.projections:
        start = time.perf_counter()
        proj = TracIn(enc, projection=k, **quiet).attribute(x_tr, x_te)
        print(f"  projection={k}: {time.perf_counter() - start:.1f} s, Pearson vs exact {pearson(proj, exact):.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="training and test digits (part A)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", default="auto", help="intra-op threads: a number or auto (the free cores)")
    parser.add_argument("--skip-lfxai", action="store_true")
    parser.add_argument("--resnet-n", type=int, default=500, help="training and test images (part B); 0 skips it")
    parser.add_argument("--projections", type=int, nargs="*", default=[256, 4096])
    args = parser.parse_args()
    with lfeval.threads.limit(lfeval.threads.check_threads(args.threads)):
        part_a(args)
        if args.resnet_n:
            part_b(args)
