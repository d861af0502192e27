"""What ``lfeval run`` writes: the CSV tables, the PNG plots and the self-contained ``report.html``.

:func:`write_tables` writes the CSVs from the stage results; :func:`render` draws the plots and
writes ``report.html`` from the CSVs and the stored stages, for ``lfeval run`` and ``lfeval report``
alike. Ranks follow lfeval's one convention: 1 = best.
"""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..errors import RunIncomplete
from ..metrics.catalogue import CATALOGUE, EXAMPLES, FEATURES
from ..report import Section, normalise_scores, plots, rank_explainers, write_report
from ..report.ranking import control_wins, mean_rank_metrics
from .summary import RANK_CONVENTION, control_flags, control_names, left_out_sentence, summary_sentences

OVERALL = "all"
#: the tables of a run: name -> keyword arguments of pandas.read_csv
TABLES = {"encoders": {"index_col": 0}, "scores": {}, "ranks": {}, "meta": {}, "pretext": {}}


def control_methods(scores: pd.DataFrame) -> list:
    """The methods of a long scores table that are controls, read from the explainer registries: a feature
    explainer or example method whose class sets ``control = True`` (the Random explainer; a user's may too)."""
    from ..explain.base import EXPLAINERS, explainer_names
    from ..explain.examples import EXAMPLE_METHODS

    explainer_names()  # registers the built-in explainers
    registry = {FEATURES: EXPLAINERS, EXAMPLES: EXAMPLE_METHODS}
    pairs = scores[["kind", "method"]].drop_duplicates().itertuples(index=False) if len(scores) else ()
    return list(dict.fromkeys(m for kind, m in pairs
                              if getattr(registry.get(kind, {}).get(m), "control", False) is True))


def rank_table(scores: pd.DataFrame, directions: dict, controls=()) -> pd.DataFrame:
    """Ranks of the methods of each kind, per encoder and overall, as the Quantus tutorial ranks them.

    Per encoder: each metric's mean scores are min-max normalised (1 = best, using the metric's
    direction) and ranked (rank 1 = best, ties averaged). Overall (pretext ``"all"``): the
    normalised scores are averaged over encoders, then ranked. A ``mean_rank`` row per method
    holds the mean of its ranks over metrics (lowest = best). Long format: kind, pretext, method,
    metric, normalised, rank, control, control_wins.

    ``controls``: the control methods (:func:`control_methods`). Where a control ties or beats every other
    method on a metric (:func:`lfeval.report.ranking.control_wins`; overall: on the averaged normalised
    scores), that metric's rows get ``control_wins`` True and it is left out of the ``mean_rank`` (rank and
    normalised) of that encoder, unless every metric is flagged there (then all count). ``control`` marks
    the control methods' rows.
    """
    rows, controls = [], list(controls)

    def add(kind, pretext, table, dirs):
        norm = normalise_scores(table, dirs)
        ranks = rank_explainers(table, dirs, controls=controls)
        flags = control_wins(table, dirs, controls)
        kept = mean_rank_metrics(flags)
        for method in table.index:
            control = method in controls
            for metric in table.columns:
                rows.append((kind, pretext, method, metric, norm.loc[method, metric], ranks.loc[method, metric],
                             control, bool(flags[metric])))
            rows.append((kind, pretext, method, "mean_rank", norm.loc[method, kept].mean(),
                         ranks.loc[method, "mean_rank"], control, False))
        return norm

    for kind, group in scores.groupby("kind", sort=False):
        norms = []
        for pretext in dict.fromkeys(group["pretext"]):
            table = wide(group, kind, pretext, "score")
            norms.append(add(kind, pretext, table, {m: directions[m] for m in table.columns}))
        overall = sum(norms) / len(norms)
        add(kind, OVERALL, overall, {m: "higher" for m in overall.columns})
    return pd.DataFrame(rows, columns=["kind", "pretext", "method", "metric", "normalised", "rank", "control",
                                       "control_wins"])


def wide(table: pd.DataFrame, kind: str, pretext: str, value: str) -> pd.DataFrame:
    """methods x metrics of one kind and encoder, from a long scores or ranks table."""
    t = table[(table["kind"] == kind) & (table["pretext"] == pretext)]
    out = t.pivot(index="method", columns="metric", values=value)
    return out.loc[list(dict.fromkeys(t["method"])), list(dict.fromkeys(t["metric"]))]


def control_table(ranks: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Per encoder (and overall) where a control wins a metric: the metrics it ties or beats and what the
    mean rank is over, from ``ranks.csv`` (:func:`lfeval.pipeline.summary.control_flags`)."""
    n = ranks.loc[(ranks["kind"] == kind) & (ranks["metric"] != "mean_rank"), "metric"].nunique()
    names = control_names(ranks, kind)
    rows = {}
    for p, f in control_flags(ranks, kind).items():
        rows["overall" if p == OVERALL else p] = {
            "control": ", ".join(names), "control ties or beats every other method on": ", ".join(f["won"]),
            "mean rank over": (f"all {n} metrics (the control wins every one; nothing left out)" if f["all"]
                               else f"the other {n - len(f['won'])} of {n} metrics")}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("encoder")


def _save(fig, path: Path, caption: str, figures: list) -> None:
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    figures.append((path, caption))


def _metric_notes(names, directions: dict) -> str:
    """Each metric's catalogue text and its direction (read from the built metric)."""
    items = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(CATALOGUE[n].text)} "
                    f"{'Higher' if directions[n] == 'higher' else 'Lower'} is better.</li>" for n in names)
    return f"<ul>{items}</ul>"


def metric_kind(name: str) -> str:
    """The kind a metric is meta-evaluated on (as :func:`lfeval.pipeline.stages.meta_evaluation` picks it)."""
    return FEATURES if FEATURES in CATALOGUE[name].kinds else EXAMPLES


def write_tables(run_dir: Path, encoders: pd.DataFrame, scored: dict, pretext: pd.DataFrame,
                 meta: pd.DataFrame) -> None:
    """Write encoders/scores/ranks/meta/pretext CSVs from the stage results."""
    run_dir = Path(run_dir)
    scores = pd.concat([r["scores"] for r in scored.values()], ignore_index=True)
    directions = {k: v for r in scored.values() for k, v in r["directions"].items()}
    ranks = rank_table(scores, directions, controls=control_methods(scores)) if len(scores) else pd.DataFrame()
    encoders.to_csv(run_dir / "encoders.csv")
    scores.to_csv(run_dir / "scores.csv", index=False)
    ranks.to_csv(run_dir / "ranks.csv", index=False)
    meta.to_csv(run_dir / "meta.csv", index=False)
    pretext.to_csv(run_dir / "pretext.csv", index=False)


def read_tables(run_dir: Path) -> dict:
    """``{name: DataFrame}`` of the run's CSVs (an empty table for an empty file)."""
    run_dir, tables = Path(run_dir), {}
    for name, kwargs in TABLES.items():
        path = run_dir / f"{name}.csv"
        if not path.is_file():
            raise RunIncomplete(f"{run_dir} has no {path.name}: the run did not finish writing its tables. Run "
                                "`lfeval run` again with the same settings to finish it.")
        try:
            tables[name] = pd.read_csv(path, **kwargs)
        except pd.errors.EmptyDataError:
            tables[name] = pd.DataFrame()
    return tables


def write_outputs(run_dir: Path, config, rd, encoders: pd.DataFrame, attributions: dict, scored: dict,
                  pretext: pd.DataFrame, meta: pd.DataFrame) -> Path:
    """``lfeval run``'s outputs: the CSVs, then the plots and report.html (:func:`render`); returns its path."""
    write_tables(run_dir, encoders, scored, pretext, meta)
    return render(run_dir, config, rd, attributions, scored)


def render(run_dir: Path, config, rd, attributions: dict, scored: dict) -> Path:
    """Draw the plots and write report.html from the run's CSVs (:func:`read_tables`) and the stored
    attributions and scores stages (directions, curves); return the report's path. Recomputes nothing."""
    run_dir = Path(run_dir)
    plot_dir = run_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    t = read_tables(run_dir)
    encoders, scores, ranks, meta, pretext = (t[k] for k in ("encoders", "scores", "ranks", "meta", "pretext"))
    directions = {k: v for r in scored.values() for k, v in r["directions"].items()}

    sections = []
    intro = (f"Data set <b>{html.escape(rd.ds.name)}</b> ({len(rd.x)} explained test inputs, {len(rd.x_train)} "
             f"training examples for example importance), latent size {config.latent_dim}, seed {config.seed}. "
             "Explanations are label-free: feature attributions explain g<sub>x</sub>(x') = &lt;f(x), f(x')&gt; "
             "(Crabbé &amp; van der Schaar 2022, Eq. 3); labels only score. Tables: scores.csv, ranks.csv, "
             "meta.csv, pretext.csv.")
    text = ("One encoder per pretext task; the probe accuracy is a logistic regression on the latents (a sanity "
            "check of the representation, never used to explain; probe_split says which data it used). "
            "latent_spread is the latents' spread over inputs relative to their size and reconstruction_ratio the "
            "reconstruction error over that of the mean input: near 0 and near or above 1 mean a collapsed encoder.")
    collapsed = encoders[encoders["collapsed"].astype(bool)] if "collapsed" in encoders else encoders.iloc[:0]
    for name, row in collapsed.iterrows():
        text += (f"<p class='warning'><b>Warning: the {html.escape(str(name))} encoder looks collapsed</b>: "
                 f"{html.escape(str(row['diagnosis']))}. Its explanations and scores say little.</p>")
    sections.append(Section("Encoders", text, {"encoders": encoders}))

    kinds = [k for k in (FEATURES, EXAMPLES) if len(scores) and k in set(scores["kind"])]
    for kind in kinds:
        metric_names = list(dict.fromkeys(scores.loc[scores["kind"] == kind, "metric"]))
        figures = []
        overall_ranks = wide(ranks, kind, OVERALL, "rank")
        flags = control_flags(ranks, kind)
        overall_won = flags[OVERALL]["won"] if OVERALL in flags and not flags[OVERALL]["all"] else []
        if overall_ranks.shape[1] > 2:
            fig = plots.radar_chart(overall_ranks, title=f"Ranks of the {kind[:-1]} explainers",
                                    control_wins=overall_won)
            _save(fig, plot_dir / f"radar_{kind}.png", f"Radar chart of the overall ranks ({kind}; rank 1 = best, "
                  "drawn outermost)" + ("; metrics marked (control wins) are left out of the mean rank"
                                        if overall_won else ""), figures)
        tables = {"overall rank (normalised scores averaged over encoders; 1 = best)": overall_ranks.sort_values(
            "mean_rank", ascending=True, kind="stable")}
        if flags:
            tables["metrics a control ties or beats (left out of the mean rank)"] = control_table(ranks, kind)
        for p in config.encoder_names:
            tables[f"mean scores, {p} encoder"] = wide(scores, kind, p, "score")
        title = "Feature attributions" if kind == FEATURES else "Example importance"
        left_out = left_out_sentence(ranks, kind, OVERALL)
        text = ("Scores are means over the explained inputs (per-sample values and their standard errors are in "
                f"scores.csv). {RANK_CONVENTION}" + (f"<p>{left_out}</p>" if left_out else "")
                + _metric_notes(metric_names, directions))
        sections.append(Section(f"{title}: scores and ranking", text, tables, figures))

    figures, feature_tables = [], {}
    if attributions:
        for p, per_method in attributions.items():
            fig = plots.attribution_maps(rd.x_np, per_method, n=4, title=f"Label-free attributions, {p} encoder",
                                         modality=rd.ds.modality)
            _save(fig, plot_dir / f"attributions_{p}.png", f"Example attribution maps per method ({p} encoder)",
                  figures)
            if rd.ds.feature_names:  # named tabular features (a CSV's columns): mean |a| per feature and method
                feature_tables[f"mean |attribution| per feature, {p} encoder"] = pd.DataFrame(
                    {m: np.abs(np.asarray(a)).reshape(len(a), -1).mean(0) for m, a in per_method.items()},
                    index=pd.Index(rd.ds.feature_names, name="feature"))
    if figures:
        sections.append(Section("Feature attributions: maps", "Attribution maps show |a| of the first explained "
                                "inputs, per method.", feature_tables, figures=figures))

    curve_metrics = list(dict.fromkeys(m for r in scored.values() for m in r["curves"]))
    for metric in curve_metrics:  # every catalogue entry with a curve: one panel per encoder
        spec, figures = CATALOGUE[metric].curve, []
        per_encoder = {p: r["curves"][metric] for p, r in scored.items() if metric in r["curves"]}
        fig, axes = plots.panels(len(per_encoder))
        for i, (ax, (p, by_method)) in enumerate(zip(axes, per_encoder.items())):
            plots.metric_curves(by_method, title=p, xlabel=spec.xlabel, ylabel=spec.ylabel, ylim=spec.ylim, ax=ax,
                                legend=i == 0)
        fig.suptitle(spec.title, y=1.03)
        _save(fig, plot_dir / f"curves_{metric}.png", f"{metric} curves per encoder", figures)
        sections.append(Section(f"{metric}: curves", html.escape(spec.text), figures=figures))

    if len(pretext):
        figures = []
        mats = {}
        from ..metrics import correlation_matrix

        for kind, t in pretext.groupby("kind", sort=False):
            mats[f"{kind} ({t['method'].iloc[0]})"] = correlation_matrix(t)
        fig = plots.pretext_heatmaps(mats)
        _save(fig, plot_dir / "pretext_heatmaps.png", "Pearson correlation of explanations between pretext tasks",
              figures)
        runs = int(pretext["runs"].max())
        title = "Encoder agreement" if config.encoders else "Pretext sensitivity (paper §4.2)"
        sections.append(Section(title, (
            "Correlation of explanations of the same inputs by the run's encoders (trained on different pretext "
            "tasks, or yours), pooled over all test features (features) or the whole example-importance matrix "
            f"(examples), mean over {runs} run(s). Low values mean the explanation depends on the encoder."),
            {"encoder correlations" if config.encoders else "pretext correlations": pretext}, figures))

    if len(meta):
        figures = []
        for test, t in meta.groupby("test", sort=False):
            fig = plots.meta_area(t.set_index("metric"), title=f"MetaQuantus, {test} perturbation tests")
            _save(fig, plot_dir / f"meta_{test.lower()}.png", f"Meta-consistency areas ({test} tests)", figures)
        sections.append(Section("Meta-evaluation (MetaQuantus)", (
            "Each metric is scored again after perturbations of the encoder's parameters (Model) or of the inputs "
            "(Input) that keep the representation (Resilience: the metric should not change) or change it "
            "(Adversary: it should). IAC = intra-consistency (per-sample Wilcoxon), IEC = inter-consistency "
            "(ranking of explainers); MC is their mean, 1 = ideal (the grey square). Hedström et al. 2023."),
            {"meta-consistency": meta.set_index(["metric", "test"])}, figures))

    summary = summary_sentences(ranks, meta, kinds, {m: metric_kind(m) for m in dict.fromkeys(meta.get("metric", []))})
    return write_report(run_dir / "report.html", f"lfeval run: {config.name}", sections, intro=intro, summary=summary)
