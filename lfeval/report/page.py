"""The page of a run (``report.html``) and its plots, assembled from plain data: tables, curves and texts.

:class:`RunPage` holds what the page shows; :func:`write_run_page` draws the plots into ``plots/`` and writes the
page (:func:`lfeval.report.html.write_report`). The data are gathered by the main job
(:func:`lfeval.pipeline.outputs.render`, for ``lfeval run`` and ``lfeval report`` alike); nothing here reads a
config, a metric catalogue or a data set. Ranks follow lfeval's one convention: 1 = best.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ..metrics.catalogue import EXAMPLES, FEATURES
from . import plots
from .html import Section, write_report
from .pairs import PairPage, pair_section
from .plots import save_figure
from .ranking import wide
from .summary import RANK_CONVENTION, control_flags, control_names, left_out_sentence, summary_sentences

#: the ``pretext`` of the rows that rank over all encoders (``ranks.csv``)
OVERALL = "all"


@dataclass
class RunPage:
    """What a run's page shows, as plain data.

    Parameters
    ----------
    name : str
        The run's name (the page's title).
    data_name : str
        The data set's name.
    n_explained, n_train_examples, latent_dim, seed : int
        The explained test inputs, the training examples of example importance, the latent size and the seed.
    encoder_names : list
        The run's encoders, in order.
    user_encoders : bool
        Whether the user's own encoders are among them (the agreement section is titled for them).
    encoders, scores, ranks, meta, pretext : pandas.DataFrame
        The run's tables (``encoders.csv``, ``scores.csv``, ``ranks.csv``, ``meta.csv``, ``pretext.csv``).
    directions : dict
        ``{metric: "higher" | "lower"}``.
    metric_texts : dict
        ``{metric: its explanation}`` (plain text).
    curves : dict
        ``{metric: {encoder: {method: Curve}}}``, the metrics with curves.
    curve_specs : dict
        ``{metric: spec}``: each spec has ``title``, ``text``, ``xlabel``, ``ylabel`` and ``ylim``.
    inputs : numpy.ndarray
        The explained inputs (the attribution maps show the first ones).
    attributions : dict
        ``{encoder: {method: array}}`` of the explained inputs (empty: no maps).
    modality : object
        The inputs' modality (how the maps are drawn).
    feature_names : list, optional
        Named tabular features: a table of the mean ``|attribution|`` per feature.
    correlations : dict
        ``{label: encoders x encoders DataFrame}``: the heat maps of the pretext tables.
    meta_kinds : dict
        ``{metric: "features" | "examples" | "pairs"}`` of the meta-evaluated metrics.
    pairs : lfeval.report.pairs.PairPage, optional
        The pair explanations of a run with config ``pairs`` (the "Pair explanations" section and its curves).
    """

    name: str
    data_name: str
    n_explained: int
    n_train_examples: int
    latent_dim: int
    seed: int
    encoder_names: list
    user_encoders: bool
    encoders: pd.DataFrame
    scores: pd.DataFrame
    ranks: pd.DataFrame
    meta: pd.DataFrame
    pretext: pd.DataFrame
    directions: dict = field(default_factory=dict)
    metric_texts: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)
    curve_specs: dict = field(default_factory=dict)
    inputs: Optional[np.ndarray] = None
    attributions: dict = field(default_factory=dict)
    modality: object = None
    feature_names: Optional[list] = None
    correlations: dict = field(default_factory=dict)
    meta_kinds: dict = field(default_factory=dict)
    pairs: Optional[PairPage] = None

    @property
    def kinds(self) -> list:
        """The kinds of explanation the scores hold, features first."""
        return [k for k in (FEATURES, EXAMPLES) if len(self.scores) and k in set(self.scores["kind"])]


def control_table(ranks: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Per encoder (and overall) where a control wins a metric: the metrics it ties or beats and what the
    mean rank is over, from ``ranks.csv`` (:func:`lfeval.report.summary.control_flags`)."""
    n = ranks.loc[(ranks["kind"] == kind) & (ranks["metric"] != "mean_rank"), "metric"].nunique()
    names = control_names(ranks, kind)
    rows = {}
    for p, f in control_flags(ranks, kind).items():
        rows["overall" if p == OVERALL else p] = {
            "control": ", ".join(names), "control ties or beats every other method on": ", ".join(f["won"]),
            "mean rank over": (f"all {n} metrics (the control wins every one; nothing left out)" if f["all"]
                               else f"the other {n - len(f['won'])} of {n} metrics")}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("encoder")


def metric_notes(names, texts: dict, directions: dict) -> str:
    """Each metric's text and its direction, as an HTML list."""
    items = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(texts[n])} "
                    f"{'Higher' if directions[n] == 'higher' else 'Lower'} is better.</li>" for n in names)
    return f"<ul>{items}</ul>"


def intro(page: RunPage) -> str:
    """The paragraph under the title: the data, the sizes and what the explanations explain."""
    return (f"Data set <b>{html.escape(page.data_name)}</b> ({page.n_explained} explained test inputs, "
            f"{page.n_train_examples} training examples for example importance), latent size {page.latent_dim}, "
            f"seed {page.seed}. Explanations are label-free: feature attributions explain g<sub>x</sub>(x') = "
            "&lt;f(x), f(x')&gt; (Crabbé &amp; van der Schaar 2022, Eq. 3); labels only score. Tables: scores.csv, "
            "ranks.csv, meta.csv, pretext.csv.")


def encoders_section(encoders: pd.DataFrame) -> Section:
    """The encoders table, with a warning per collapsed encoder."""
    text = ("One encoder per pretext task; the probe accuracy is a logistic regression on the latents (a sanity "
            "check of the representation, never used to explain; probe_split says which data it used). "
            "latent_spread is the latents' spread over inputs relative to their size and reconstruction_ratio the "
            "reconstruction error over that of the mean input: near 0 and near or above 1 mean a collapsed encoder.")
    collapsed = encoders[encoders["collapsed"].astype(bool)] if "collapsed" in encoders else encoders.iloc[:0]
    for name, row in collapsed.iterrows():
        text += (f"<p class='warning'><b>Warning: the {html.escape(str(name))} encoder looks collapsed</b>: "
                 f"{html.escape(str(row['diagnosis']))}. Its explanations and scores say little.</p>")
    return Section("Encoders", text, {"encoders": encoders})


def ranking_section(page: RunPage, kind: str, plot_dir: Path) -> Section:
    """Scores and ranks of one kind of explanation: the radar chart of the overall ranks, the overall ranking,
    where a control wins, and the mean scores per encoder."""
    scores, ranks = page.scores, page.ranks
    metric_names = list(dict.fromkeys(scores.loc[scores["kind"] == kind, "metric"]))
    figures = []
    overall_ranks = wide(ranks, kind, OVERALL, "rank")
    flags = control_flags(ranks, kind)
    overall_won = flags[OVERALL]["won"] if OVERALL in flags and not flags[OVERALL]["all"] else []
    if overall_ranks.shape[1] > 2:
        fig = plots.radar_chart(overall_ranks, title=f"Ranks of the {kind[:-1]} explainers", control_wins=overall_won)
        save_figure(fig, plot_dir / f"radar_{kind}.png", f"Radar chart of the overall ranks ({kind}; rank 1 = best, "
              "drawn outermost)" + ("; metrics marked (control wins) are left out of the mean rank"
                                    if overall_won else ""), figures)
    tables = {"overall rank (normalised scores averaged over encoders; 1 = best)": overall_ranks.sort_values(
        "mean_rank", ascending=True, kind="stable")}
    if flags:
        tables["metrics a control ties or beats (left out of the mean rank)"] = control_table(ranks, kind)
    for p in page.encoder_names:
        tables[f"mean scores, {p} encoder"] = wide(scores, kind, p, "score")
    title = "Feature attributions" if kind == FEATURES else "Example importance"
    left_out = left_out_sentence(ranks, kind, OVERALL)
    text = ("Scores are means over the explained inputs (per-sample values and their standard errors are in "
            f"scores.csv). {RANK_CONVENTION}" + (f"<p>{left_out}</p>" if left_out else "")
            + metric_notes(metric_names, page.metric_texts, page.directions))
    return Section(f"{title}: scores and ranking", text, tables, figures)


def attribution_section(page: RunPage, plot_dir: Path) -> Optional[Section]:
    """Attribution maps per encoder (and, for named tabular features, the mean ``|a|`` per feature); None
    without attributions."""
    figures, feature_tables = [], {}
    for p, per_method in page.attributions.items():
        fig = plots.attribution_maps(page.inputs, per_method, n=4, title=f"Label-free attributions, {p} encoder",
                                     modality=page.modality)
        save_figure(fig, plot_dir / f"attributions_{p}.png", f"Example attribution maps per method ({p} encoder)",
                    figures)
        if page.feature_names:  # named tabular features (a CSV's columns): mean |a| per feature and method
            feature_tables[f"mean |attribution| per feature, {p} encoder"] = pd.DataFrame(
                {m: np.abs(np.asarray(a)).reshape(len(a), -1).mean(0) for m, a in per_method.items()},
                index=pd.Index(page.feature_names, name="feature"))
    if not figures:
        return None
    return Section("Feature attributions: maps", "Attribution maps show |a| of the first explained inputs, per "
                   "method.", feature_tables, figures=figures)


def curve_section(metric: str, per_encoder: dict, spec, plot_dir: Path) -> Section:
    """One metric's curves, a panel per encoder (``per_encoder``: ``{encoder: {method: Curve}}``)."""
    figures = []
    fig, axes = plots.panels(len(per_encoder))
    for i, (ax, (p, by_method)) in enumerate(zip(axes, per_encoder.items())):
        plots.metric_curves(by_method, title=p, xlabel=spec.xlabel, ylabel=spec.ylabel, ylim=spec.ylim, ax=ax,
                            legend=i == 0)
    fig.suptitle(spec.title, y=1.03)
    save_figure(fig, plot_dir / f"curves_{metric}.png", f"{metric} curves per encoder", figures)
    return Section(f"{metric}: curves", html.escape(spec.text), figures=figures)


def agreement_section(page: RunPage, plot_dir: Path) -> Optional[Section]:
    """How much the encoders' explanations agree (the pretext tables and their heat maps); None without them."""
    pretext = page.pretext
    if not len(pretext):
        return None
    figures = []
    fig = plots.pretext_heatmaps(page.correlations)
    save_figure(fig, plot_dir / "pretext_heatmaps.png", "Pearson correlation of explanations between pretext tasks",
          figures)
    runs = int(pretext["runs"].max())
    title = "Encoder agreement" if page.user_encoders else "Pretext sensitivity (paper §4.2)"
    return Section(title, (
        "Correlation of explanations of the same inputs by the run's encoders (trained on different pretext "
        "tasks, or yours), pooled over all test features (features) or the whole example-importance matrix "
        f"(examples), mean over {runs} run(s). Low values mean the explanation depends on the encoder."),
        {"encoder correlations" if page.user_encoders else "pretext correlations": pretext}, figures)


def meta_section(meta: pd.DataFrame, plot_dir: Path) -> Optional[Section]:
    """MetaQuantus' meta-consistency of the metrics, an area chart per test; None without a meta-evaluation."""
    if not len(meta):
        return None
    figures = []
    for test, t in meta.groupby("test", sort=False):
        fig = plots.meta_area(t.set_index("metric"), title=f"MetaQuantus, {test} perturbation tests")
        save_figure(fig, plot_dir / f"meta_{test.lower()}.png", f"Meta-consistency areas ({test} tests)", figures)
    return Section("Meta-evaluation (MetaQuantus)", (
        "Each metric is scored again after perturbations of the encoder's parameters (Model) or of the inputs "
        "(Input) that keep the representation (Resilience: the metric should not change) or change it "
        "(Adversary: it should). IAC = intra-consistency (per-sample Wilcoxon), IEC = inter-consistency "
        "(ranking of explainers); MC is their mean, 1 = ideal (the grey square). Hedström et al. 2023."),
        {"meta-consistency": meta.set_index(["metric", "test"])}, figures)


def write_run_page(page: RunPage, run_dir) -> Path:
    """Draw the plots of ``page`` into ``run_dir/plots`` and write ``run_dir/report.html``; return its path."""
    run_dir = Path(run_dir)
    plot_dir = run_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    sections = [encoders_section(page.encoders)]
    sections += [ranking_section(page, kind, plot_dir) for kind in page.kinds]
    sections.append(attribution_section(page, plot_dir))
    sections += [curve_section(m, per_encoder, page.curve_specs[m], plot_dir)
                 for m, per_encoder in page.curves.items()]
    if page.pairs is not None:
        sections.append(pair_section(page.pairs, plot_dir))
        sections += [curve_section(m, per_encoder, page.pairs.curve_specs[m], plot_dir)
                     for m, per_encoder in page.pairs.curves.items()]
    sections += [agreement_section(page, plot_dir), meta_section(page.meta, plot_dir)]
    summary = summary_sentences(page.ranks, page.meta, page.kinds, page.meta_kinds)
    return write_report(run_dir / "report.html", f"lfeval run: {page.name}", [s for s in sections if s is not None],
                        intro=intro(page), summary=summary)


__all__ = ["OVERALL", "RunPage", "write_run_page", "wide", "control_table", "metric_notes", "intro",
           "encoders_section", "ranking_section", "attribution_section", "curve_section", "agreement_section",
           "meta_section"]
