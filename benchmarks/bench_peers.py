"""Every explainer x every metric of the catalogue on one data set, with the MetaQuantus meta-consistency (MC) of
each metric: the paper's methods and metrics next to the peers' (RELAX, COCOA, insertion/LeRF, COCOA's curves,
label-free example consistency).

One encoder is explained (``--pretext``, default reconstruction; the other pretext encoders are the references
of PretextCorrelation). Feature explainers x feature metrics and example methods x example metrics are scored
with ``lfeval.evaluate`` on the first ``--n`` test inputs, as ``lfeval run`` does; each metric is then
meta-evaluated with ``LabelFreeMetaEvaluation`` (the default label-free test suite, ``--iterations`` x
``--perturbations``, on the first ``--meta-samples`` inputs) over all the methods of its kind. Explanations are
memoised on (encoder parameters, inputs, options), so the perturbed encoders and inputs that every metric's
meta-evaluation draws (the same, seeded) are explained once, not once per metric.

Settings that keep the grid affordable on 2 CPU cores (listed in the output): RELAX 1000 masks, CEM 50 FISTA
iterations x 3 c-steps with 10 k-means prototypes of the training latents (label-free), ShapleyValueSampling
10 permutations, COCOA with IntegratedGradients (16 steps) on the k-means cluster corpus.

Run: .venv/bin/python benchmarks/bench_peers.py [digits|mnist|...] [--root DIR] [--pretext P] [--n 64] ...
Prints the tables (markdown); ``--out DIR`` also writes peers_<data>_{scores,meta}.csv.
"""

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tables import markdown
from tqdm.auto import tqdm

import lfeval
from lfeval.errors import LfevalError
from lfeval.explain import examples as example_mod
from lfeval.explain.base import explainer_names
from lfeval.meta import LabelFreeMetaEvaluation, default_test_suite
from lfeval.metrics import CATALOGUE, score_direction
from lfeval.metrics.catalogue import EXAMPLES, FEATURES, MetricContext, build_metric
from lfeval.models import PRETEXTS
from lfeval.pipeline.stages import expected_warnings_silenced

EXAMPLE_METHODS = ("cosine", "dknn", "simplex", "tracin", "influence")


def options(x_train) -> dict:
    return {"IntegratedGradients": {"n_steps": 32}, "RELAX": {"n_masks": 1000, "batch_size": 8192},
            "COCOA": {"x_train": x_train, "inner": "IntegratedGradients", "n_steps": 16},
            "CEM-PP": {"x_train": x_train, "iterations": 50, "c_steps": 3},
            "CEM-PN": {"x_train": x_train, "iterations": 50, "c_steps": 3},
            "ShapleyValueSampling": {"n_samples": 10}}


def example_explain(x_train, y_train):
    """Example importance over ``x_train`` (Quantus signature); loss-based methods of a classification-pretext
    encoder use the training labels and the explained inputs' predicted classes, as ``lfeval run`` does."""

    def explain(model, inputs, targets=None, method="cosine", **kwargs):
        full = model.pretext_model if isinstance(model, lfeval.Encoder) else None
        if method in example_mod.LOSS_BASED and full is not None and full.task.needs_labels:
            with torch.no_grad():
                kwargs = {"y_train": y_train, "y_test": full(torch.as_tensor(np.asarray(inputs))).argmax(1), **kwargs}
        return example_mod.explain_func(model, inputs, method=method, x_train=x_train, display_progressbar=False,
                                        **kwargs)

    return explain


def _digest(model, inputs, kwargs) -> tuple:
    net = model.module if isinstance(model, lfeval.Encoder) else model
    h = hashlib.sha1()
    for t in net.state_dict().values():
        h.update(t.detach().cpu().numpy().tobytes())
    x = np.ascontiguousarray(np.asarray(inputs.cpu() if isinstance(inputs, torch.Tensor) else inputs))
    opts = tuple(sorted((k, repr(v)) for k, v in kwargs.items() if k not in lfeval.explain.base.QUANTUS_KEYS))
    return h.hexdigest(), hashlib.sha1(x.tobytes()).hexdigest(), x.shape, opts


class Memo:
    """An explain function (Quantus signature) memoised on the encoder's parameters, the inputs and the options."""

    def __init__(self, explain, method_params: dict):
        self.explain, self.method_params, self.store, self.hits = explain, method_params, {}, 0

    def __call__(self, model, inputs, targets=None, **kwargs):
        kwargs = {**self.method_params.get(kwargs.get("method"), {}), **kwargs}
        key = _digest(model, inputs, kwargs)
        if key not in self.store:
            self.store[key] = np.asarray(self.explain(model=model, inputs=inputs, targets=None, **kwargs))
        else:
            self.hits += 1
        return self.store[key]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", default="digits")
    parser.add_argument("--root", default=None)
    parser.add_argument("--pretext", default="reconstruction")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--meta-samples", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--perturbations", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for the scores and meta CSVs (default: print only)")
    args = parser.parse_args()
    torch.set_num_threads(2)

    ds = lfeval.data.load(args.data, root=args.root, seed=args.seed)
    encoders = {p: lfeval.models.train_encoder(ds, pretext=p, latent_dim=8, epochs=100, seed=args.seed, checkpoints=3,
                                               cache_dir=".lfeval-cache/bench", display_progressbar=False)
                for p in PRETEXTS}
    enc = encoders[args.pretext]
    x, y = ds.x_test[:args.n].numpy(), ds.y_test[:args.n].numpy()
    x_train, y_train = ds.x_train[:args.n_train], ds.y_train[:args.n_train]
    features = Memo(lfeval.explain, options(x_train.numpy()))
    examples = Memo(example_explain(x_train, y_train), {})
    ctx = MetricContext(n_features=ds.modality.n_features(ds.input_shape), seed=args.seed, y_train=y_train.numpy(),
                        x_train=x_train.numpy(), references={p: e for p, e in encoders.items() if p != args.pretext},
                        explain_func=features, example_explain_func=examples,
                        patch_size=ds.modality.patch_size(ds.input_shape))
    kinds = {FEATURES: (list(explainer_names()), features), EXAMPLES: (list(EXAMPLE_METHODS), examples)}

    rows, meta_rows, seconds, failed, errors = [], [], {}, {}, set()
    with expected_warnings_silenced(), np.errstate(all="ignore"):
        for kind, (methods, func) in kinds.items():
            names = [n for n, e in CATALOGUE.items() if kind in e.kinds]
            for name in tqdm(names, desc=f"{kind}: scores"):
                start = time.perf_counter()
                for method in methods:
                    metric = build_metric(name, ctx, kind)
                    np.random.seed(args.seed)
                    torch.manual_seed(args.seed)
                    try:
                        out = lfeval.evaluate({name: metric}, {method: func}, enc, x, agg_func=np.asarray,
                                              y_batch=y if kind == EXAMPLES else None, return_as_df=False,
                                              explain_func_kwargs={"seed": args.seed} if kind == FEATURES else {})
                        score = float(np.nanmean(np.asarray(out[method][name], dtype=float)))
                    except LfevalError as exc:  # e.g. CEM refuses MaxSensitivity's inputs outside [0, 1]
                        failed.setdefault((kind, name), []).append(method)
                        errors.add(f"{method} x {name}: {str(exc).split('. ')[0]}")
                        score = float("nan")
                    rows.append({"kind": kind, "metric": name, "method": method, "score": score,
                                 "direction": score_direction(metric)})
                seconds[(kind, name)] = time.perf_counter() - start
            for name in tqdm(names, desc=f"{kind}: meta-evaluation"):
                start = time.perf_counter()
                metric = build_metric(name, ctx, kind)
                labels = y[:args.meta_samples] if "labels" in CATALOGUE[name].needs else None
                usable = [m for m in methods if m not in failed.get((kind, name), [])]
                meta = LabelFreeMetaEvaluation(default_test_suite(seed=args.seed),
                                               {m: {"seed": args.seed} if kind == FEATURES else {} for m in usable},
                                               iterations=args.iterations, nr_perturbations=args.perturbations,
                                               explain_func=func, seed=args.seed, display_progressbar=False)
                try:
                    meta(metric, enc, x[:args.meta_samples], score_labels=labels)
                except (LfevalError, IndexError, ValueError) as exc:  # ROAD scores a batch, not each sample
                    errors.add(f"meta-evaluation of {name}: {type(exc).__name__}: {str(exc).split('. ')[0]}")
                    continue
                for test, r in meta.summary().iterrows():
                    meta_rows.append({"kind": kind, "metric": name, "test": test, **r.to_dict()})
                seconds[(kind, name)] += time.perf_counter() - start

    scores, meta = pd.DataFrame(rows), pd.DataFrame(meta_rows)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        scores.to_csv(out / f"peers_{args.data}_scores.csv", index=False)
        meta.to_csv(out / f"peers_{args.data}_meta.csv", index=False)
    print(f"data {ds.name}, {args.pretext} encoder, {args.n} inputs scored, meta-evaluation on {args.meta_samples} "
          f"inputs, {args.iterations} iteration(s) x {args.perturbations} perturbations; memo hits "
          f"{features.hits + examples.hits}; options {options('x_train')}")
    for message in sorted(errors):
        print(f"not scored or not meta-evaluated: {message}")
    for kind in kinds:
        wide = scores[scores["kind"] == kind].pivot(index="metric", columns="method", values="score")
        wide = wide.loc[[n for n in CATALOGUE if n in wide.index], kinds[kind][0]]
        mc = meta[meta["kind"] == kind].pivot(index="metric", columns="test", values="MC")
        wide["direction"] = scores[scores["kind"] == kind].groupby("metric")["direction"].first()
        wide["MC model"], wide["MC input"] = mc.get("Model"), mc.get("Input")
        wide["seconds"] = [seconds[(kind, n)] for n in wide.index]
        print()
        print(markdown(wide.rename_axis("metric")))


if __name__ == "__main__":
    main()
