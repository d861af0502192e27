"""Meta-evaluation against its floor: the work any correct implementation must do, timed in the same run.

The floor of a MetaQuantus meta-evaluation (default_test_suite: 4 tests x I iterations x K perturbations) is
  - the unperturbed explanations of every method and their scores, once;
  - the perturbation itself (a noisy copy of the encoder, or noisy inputs), once per test, iteration and k;
  - the K.I perturbed explanations of every method, and their scores.
It is computed here with no framework around it: explainer classes called on tensors (attribute_batch), and
the metric's maths on tensors (RepresentationShift's shift curves, PixelFlipping's flipping curve as one
batched forward pass of all steps, SimilarityRate's same-label rates). What the floor leaves out is what
lfeval adds: Quantus' metric plumbing, input checks, the keep decisions, the Wilcoxon tests and the IAC / IEC
aggregation.

Settings are the demo's (`lfeval run`): digits, the reconstruction encoder, 64 samples, I = 2, K = 3, the five
feature explainers for RepresentationShift and LabelFree(PixelFlipping), the five example methods for
SimilarityRate. Times are the best of --repeat interleaved runs; goal: lfeval <= 1.2x its floor.

Part 2 times the K model perturbations as one batched call (torch.func.functional_call + vmap over stacked
parameters) against a loop, for IntegratedGradients and for forward passes.

Run: .venv/bin/python benchmarks/bench_meta_floor.py [--repeat 3] [--metrics RepresentationShift ...]
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.func import functional_call, grad, vmap  # noqa: E402

from lfeval.config import RunConfig  # noqa: E402
from lfeval.explain.base import AuxiliaryFunction, get_explainer  # noqa: E402
from lfeval.explain.examples import EXAMPLE_METHODS, LOSS_BASED  # noqa: E402
from lfeval.meta import default_test_suite  # noqa: E402
from lfeval.metrics.catalogue import CATALOGUE, FEATURES, build_metric  # noqa: E402
from lfeval.metrics.functional import similarity_rates  # noqa: E402
from lfeval.pipeline import stages  # noqa: E402

METRICS = ("RepresentationShift", "PixelFlipping", "SimilarityRate")


# ---------------------------------------------------------------------------------------------- the floor
def explain_features(enc, x, method, seed):
    """One explainer on a tensor batch: what FeatureExplainer.attribute does once validated."""
    explainer = get_explainer(method)(enc)
    explainer.aux = AuxiliaryFunction(enc)
    with torch.no_grad():
        z = enc(x)
    base = enc.baseline_for(x) if explainer.uses_baseline else None
    return explainer.attribute_batch(x, z, base, seed).detach()


def explain_examples(rd, enc, x, method):
    kw = {"seed": rd.config.seed} if method == "simplex" else {}
    if method in LOSS_BASED and enc.pretext_model.task.needs_labels:
        kw.update(y_train=rd.y_train, y_test=enc.pretext_model(x).argmax(1))
    return EXAMPLE_METHODS[method](enc, display_progressbar=False, **kw).attribute(rd.x_train, x)


def pixel_flipping_floor(estimator, enc, x, a):
    """Flipping curve of g_x (LabelFree's inner similarity): all steps masked at once, one forward pass."""
    metric = estimator.metric
    n = len(x)
    flat = x.reshape(n, -1)
    ranks = torch.as_tensor(np.argsort(np.argsort(-a.reshape(n, -1).numpy(), axis=1), axis=1))
    steps = math.ceil(flat.shape[1] / metric.features_in_step)
    counts = torch.arange(1, steps + 1) * metric.features_in_step
    base = enc.baseline_for(x).reshape(n, -1)
    masked = torch.where(ranks[:, None, :] < counts[None, :, None], base[:, None], flat[:, None])
    with torch.no_grad():
        z = enc(x)
        zp = enc(masked.reshape(n * steps, *x.shape[1:])).view(n, steps, -1)
    curves = (zp * z[:, None]).sum(-1)
    return torch.trapezoid(curves, dx=1.0 / max(steps - 1, 1), dim=1)


def score(name, estimator, rd, enc, x, a):
    if name == "RepresentationShift":
        return estimator.auc(estimator.shift_curves(enc, x, a.abs()))
    if name == "PixelFlipping":
        return pixel_flipping_floor(estimator, enc, x, a)
    top, _ = similarity_rates(a, rd.y_train, rd.y[:len(x)], estimator.counts)
    return top.mean(1)


def floor(name, rd):
    c = rd.config
    enc = rd.encoder(c.pretexts[0])
    kind = FEATURES if FEATURES in CATALOGUE[name].kinds else "examples"
    estimator = build_metric(name, rd.metric_context(c.pretexts[0]), kind, c.metric_params.get(name))
    methods = (c.meta_explainers or c.explainers) if kind == FEATURES else c.example_methods
    x = rd.x[:c.meta_samples]

    def explain_and_score(model, inputs):
        for m in methods:
            a = explain_features(model, inputs, m, c.seed) if kind == FEATURES else explain_examples(rd, model,
                                                                                                     inputs, m)
            score(name, estimator, rd, model, inputs, a)

    torch.manual_seed(c.seed)
    np.random.seed(c.seed)
    suite = default_test_suite(seed=c.seed)
    explain_and_score(enc, x)  # the unperturbed work, once
    for test in suite.values():
        for _ in range(c.meta_iterations):
            for _ in range(c.meta_perturbations):
                model, inputs = test.perturb(enc, x)
                explain_and_score(model, inputs)


# ---------------------------------------------------------------------------------------------- vmap of K models
def vmap_experiment(rd, k: int, repeat: int):
    enc = rd.encoder(rd.config.pretexts[0])
    net, x = enc.module, rd.x[:rd.config.meta_samples]
    gen = torch.Generator().manual_seed(0)
    params = {n: p.detach() for n, p in net.named_parameters()}
    perturbed = [{n: p * (1 + 0.5 * torch.randn(p.shape, generator=gen)) for n, p in params.items()}
                 for _ in range(k)]
    stacked = {n: torch.stack([p[n] for p in perturbed]) for n in params}
    steps = 50
    alphas = torch.linspace(0, 1, steps).view(-1, 1, 1, 1, 1)
    path = (alphas * x).reshape(-1, *x.shape[1:])

    def ig_loop():
        out = []
        for p in perturbed:
            with torch.no_grad():
                z = functional_call(net, p, (x,)).repeat(steps, 1)
            xs = path.clone().requires_grad_()
            g = torch.autograd.grad((functional_call(net, p, (xs,)) * z).sum(), xs)[0]
            out.append(g.view(steps, *x.shape).mean(0) * x)
        return torch.stack(out)

    def ig_vmap():
        z = vmap(lambda p: functional_call(net, p, (x,)))(stacked)

        def one(p, zk):
            return grad(lambda xs: (functional_call(net, p, (xs,)) * zk.repeat(steps, 1)).sum())(path)

        return vmap(one)(stacked, z).view(k, steps, *x.shape).mean(1) * x

    big = x.repeat(6, 1, 1, 1)

    def fwd_loop():
        with torch.no_grad():
            return torch.stack([functional_call(net, p, (big,)) for p in perturbed])

    def fwd_vmap():
        with torch.no_grad():
            return vmap(lambda p: functional_call(net, p, (big,)))(stacked)

    print(f"\nK = {k} perturbed encoders as one vmapped call vs a loop (best of {repeat}, interleaved)")
    for what, loop, batched in (("IntegratedGradients (50 steps, 64 inputs)", ig_loop, ig_vmap),
                                (f"forward pass ({len(big)} inputs)", fwd_loop, fwd_vmap)):
        best, outputs = {"loop": math.inf, "vmap": math.inf}, {}
        for _ in range(repeat):
            for label, fn in (("loop", loop), ("vmap", batched)):
                start = time.perf_counter()
                outputs[label] = fn()
                best[label] = min(best[label], time.perf_counter() - start)
        diff = float((outputs["loop"] - outputs["vmap"]).abs().max())
        print(f"  {what}: loop {best['loop'] * 1e3:.1f} ms, vmap {best['vmap'] * 1e3:.1f} ms, "
              f"vmap / loop {best['vmap'] / best['loop']:.2f}, max |diff| {diff:.1e}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--metrics", nargs="+", default=list(METRICS))
    parser.add_argument("--cache-dir", default=".lfeval-cache", help="the weight cache (the demo's by default)")
    args = parser.parse_args()
    config = RunConfig(cache_dir=args.cache_dir, quiet=True, meta_metrics=args.metrics)
    rd = stages.RunData(config)
    rd.encoder(config.pretexts[0])  # trained (or loaded) before anything is timed
    print(f"meta-evaluation vs its floor: {config.meta_samples} digits, I = {config.meta_iterations}, "
          f"K = {config.meta_perturbations}, 4 tests, best of {args.repeat} interleaved runs")
    print(f"{'metric':<22}{'lfeval s':>10}{'floor s':>10}{'lfeval / floor':>16}")
    totals = {"lfeval": 0.0, "floor": 0.0}
    for name in args.metrics:
        best = {"lfeval": math.inf, "floor": math.inf}
        for _ in range(args.repeat):
            for label, fn in (("lfeval", lambda: stages.meta_evaluation(rd, name)), ("floor", lambda: floor(name, rd))):
                with stages.expected_warnings_silenced():
                    start = time.perf_counter()
                    rd.limited(fn)
                    best[label] = min(best[label], time.perf_counter() - start)
        for label in totals:
            totals[label] += best[label]
        print(f"{name:<22}{best['lfeval']:>10.2f}{best['floor']:>10.2f}{best['lfeval'] / best['floor']:>16.2f}")
    print(f"{'all':<22}{totals['lfeval']:>10.2f}{totals['floor']:>10.2f}{totals['lfeval'] / totals['floor']:>16.2f}"
          "   (goal <= 1.2)")
    rd.limited(lambda: vmap_experiment(rd, config.meta_perturbations, args.repeat))
