"""What ``lfeval run`` writes: the CSV tables, the PNG plots and the self-contained ``report.html``.

:func:`write_tables` writes the CSVs from the stage results; :func:`render` gathers the CSVs and the stored
stages into a :class:`lfeval.report.page.RunPage` and has :mod:`lfeval.report.page` draw the plots and write
``report.html``, for ``lfeval run`` and ``lfeval report`` alike. With config ``pairs``, :func:`write_pair_tables`
adds ``pairs.csv`` and ``pair_ranks.csv`` and :func:`pair_page` gathers the report's pair section. Ranks follow
lfeval's one convention: 1 = best.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from ..config import NEAREST
from ..errors import RunIncomplete
from ..explain.base import EXPLAINERS
from ..explain.examples import EXAMPLE_METHODS
from ..metrics import correlation_matrix
from ..metrics.catalogue import CATALOGUE, EXAMPLES, FEATURES, get_entry
from ..report import normalise_scores, rank_explainers
from ..report.page import OVERALL, RunPage, control_table, wide, write_run_page
from ..report.pairs import PairMaps, PairPage
from ..report.ranking import control_wins, mean_rank_metrics
from . import stages

#: the tables of a run: name -> keyword arguments of pandas.read_csv
TABLES = {"encoders": {"index_col": 0}, "scores": {}, "ranks": {}, "meta": {}, "pretext": {}}


def control_methods(scores: pd.DataFrame) -> list:
    """The methods of a long scores table that are controls, read from the explainer registries: a feature
    explainer or example method whose class sets ``control = True`` (the Random explainer; a user's may too)."""
    registry = {FEATURES: EXPLAINERS, EXAMPLES: EXAMPLE_METHODS}
    pairs = scores[["kind", "method"]].drop_duplicates().itertuples(index=False) if len(scores) else ()
    return list(dict.fromkeys(m for kind, m in pairs
                              if m in registry.get(kind, {}) and getattr(registry[kind][m], "control", False) is True))


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


def metric_kind(name: str) -> str:
    """The kind a metric is meta-evaluated on (as :func:`lfeval.pipeline.stages.meta_evaluation` picks it): a pair
    metric's is ``"pairs"`` (pair explanations, the kind of ``pair_ranks.csv``)."""
    entry = get_entry(name)
    if "pairs" in entry.needs:
        return "pairs"
    return FEATURES if FEATURES in entry.kinds else EXAMPLES


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


def read_tables(run_dir: Path, pairs: bool = False) -> dict:
    """``{name: DataFrame}`` of the run's CSVs (an empty table for an empty file); ``pairs``: with the pair
    tables (:data:`PAIR_TABLES`)."""
    run_dir, tables = Path(run_dir), {}
    for name, kwargs in {**TABLES, **(PAIR_TABLES if pairs else {})}.items():
        path = run_dir / f"{name}.csv"
        if not path.is_file():
            raise RunIncomplete(f"{run_dir} has no {path.name}: the run did not finish writing its tables. Run "
                                "`lfeval run` again with the same settings to finish it.")
        try:
            tables[name] = pd.read_csv(path, **kwargs)
        except pd.errors.EmptyDataError:
            tables[name] = pd.DataFrame()
    return tables


#: the tables of a run with config ``pairs`` (:func:`write_pair_tables`)
PAIR_TABLES = {"pairs": {}, "pair_ranks": {}}
#: the rows of ``pairs.csv`` that are not a pair explainer's (the interactions' completeness errors): not ranked
INTERACTIONS = "IntegratedJacobians"


def pair_rank_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """The ranks of the pair explainers (``pair_ranks.csv``): :func:`rank_table` of the pair metrics' means in
    ``pairs.csv`` (kind ``"pairs"``), per encoder and overall, the control methods read from the explainer
    registry (the Random explainer); the interactions' completeness rows are not ranked."""
    rows = pairs[pairs["method"] != INTERACTIONS] if len(pairs) else pairs
    if not len(rows):
        return pd.DataFrame()
    scores = rows.assign(kind="pairs", score=rows["mean"])[["pretext", "kind", "method", "metric", "score"]]
    directions = dict(zip(rows["metric"], rows["direction"]))
    controls = [m for m in dict.fromkeys(rows["method"])
                if m in EXPLAINERS and getattr(EXPLAINERS[m], "control", False) is True]
    return rank_table(scores, directions, controls=controls)


def write_pair_tables(run_dir: Path, pairs: dict) -> None:
    """Write ``pairs.csv`` (per encoder x method x metric: mean, std, 95% CI half-width, n, direction; the
    interactions' completeness errors as method ``IntegratedJacobians``) and ``pair_ranks.csv`` from the pair
    stages ``{encoder: result}`` (:func:`lfeval.pipeline.stages.pair_explanations`)."""
    run_dir = Path(run_dir)
    table = pd.concat([r["scores"] for r in pairs.values()], ignore_index=True)
    table.to_csv(run_dir / "pairs.csv", index=False)
    pair_rank_table(table).to_csv(run_dir / "pair_ranks.csv", index=False)


def write_outputs(run_dir: Path, config, rd, encoders: pd.DataFrame, attributions: dict, scored: dict,
                  pretext: pd.DataFrame, meta: pd.DataFrame, pairs: Optional[dict] = None) -> Path:
    """``lfeval run``'s outputs: the CSVs (with ``pairs``, the pair stages, also :func:`write_pair_tables`), then
    the plots and report.html (:func:`render`); returns its path."""
    write_tables(run_dir, encoders, scored, pretext, meta)
    if pairs:
        write_pair_tables(run_dir, pairs)
    return render(run_dir, config, rd, attributions, scored, pairs)


def pair_page(config, rd, pairs: dict, tables: dict) -> PairPage:
    """The data of the report's pair section (:class:`lfeval.report.pairs.PairPage`) from the pair stages
    ``{encoder: result}`` and the ``pairs.csv``/``pair_ranks.csv`` tables: for each encoder the first
    ``pair_maps`` pairs' inputs, attributions and interaction maps."""
    drawn = {}
    for p, r in pairs.items():
        k = len(r["interactions"]["error"]) or min(config.pair_maps, len(r["a_index"]))
        head = {key: r[key][:k] for key in ("a_index", "b_index")}
        a, b = stages.pair_inputs_of(rd, {**head, "b_split": r["b_split"]})
        drawn[p] = PairMaps(a=a, b=b, a_index=head["a_index"], b_index=head["b_index"], b_split=r["b_split"],
                            similarity=r["similarity"][:k],
                            attributions={m: v[:k] for m, v in r["attributions"].items()},
                            row_sums=r["interactions"]["row_sums"], col_sums=r["interactions"]["col_sums"],
                            top=r["interactions"]["top"])
    curves = {}  # {metric: {encoder: {method: Curve}}}
    for p, r in pairs.items():
        for metric, by_method in r["curves"].items():
            curves.setdefault(metric, {})[p] = by_method
    metrics = [m for m in dict.fromkeys(tables["pairs"]["metric"]) if m in CATALOGUE]
    return PairPage(
        mode="nearest" if config.pairs == NEAREST else f"the index pairs of {Path(config.pairs).name}",
        similarity=config.pair_similarity, n_steps=config.pair_steps, scores=tables["pairs"],
        ranks=tables["pair_ranks"], maps=drawn, modality=rd.ds.modality, curves=curves,
        curve_specs={m: get_entry(m).curve for m in curves}, metric_texts={m: get_entry(m).text for m in metrics},
        directions={m: d for r in pairs.values() for m, d in r["directions"].items()})


def render(run_dir: Path, config, rd, attributions: dict, scored: dict, pairs: Optional[dict] = None) -> Path:
    """Draw the plots and write report.html from the run's CSVs (:func:`read_tables`) and the stored
    attributions and scores stages (directions, curves), and the pair stages ``pairs`` (with config ``pairs``);
    return the report's path. Recomputes nothing: the page is :mod:`lfeval.report.page`'s, from the data gathered
    here."""
    t = read_tables(run_dir, pairs=bool(pairs))
    scores, pretext, meta = t["scores"], t["pretext"], t["meta"]
    curves = {}  # {metric: {encoder: {method: Curve}}}, every catalogue entry with a curve
    for p, r in scored.items():
        for metric, by_method in r["curves"].items():
            curves.setdefault(metric, {})[p] = by_method
    metrics = dict.fromkeys(scores["metric"]) if len(scores) else {}
    page = RunPage(
        name=config.name, data_name=rd.ds.name, n_explained=len(rd.x), n_train_examples=len(rd.x_train),
        latent_dim=config.latent_dim, seed=config.seed, encoder_names=config.encoder_names,
        user_encoders=bool(config.encoders), encoders=t["encoders"], scores=scores, ranks=t["ranks"], meta=meta,
        pretext=pretext, directions={k: v for r in scored.values() for k, v in r["directions"].items()},
        metric_texts={n: get_entry(n).text for n in metrics}, curves=curves,
        curve_specs={m: get_entry(m).curve for m in curves}, inputs=rd.x_np, attributions=attributions,
        modality=rd.ds.modality, feature_names=rd.ds.feature_names,
        correlations={f"{kind} ({g['method'].iloc[0]})": correlation_matrix(g)
                      for kind, g in pretext.groupby("kind", sort=False)} if len(pretext) else {},
        meta_kinds={m: metric_kind(m) for m in dict.fromkeys(meta.get("metric", []))},
        pairs=pair_page(config, rd, pairs, t) if pairs else None)
    return write_run_page(page, run_dir)


__all__ = ["OVERALL", "TABLES", "PAIR_TABLES", "control_methods", "rank_table", "wide", "control_table",
           "metric_kind", "write_tables", "read_tables", "write_outputs", "render", "pair_rank_table",
           "write_pair_tables", "pair_page"]
