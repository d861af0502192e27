"""The sentences at the top of a run's report: the best explainers and the metrics to trust.

Read from the run's tables only: ``ranks.csv`` (rank 1 = best; the ``mean_rank`` rows hold each
method's mean rank over the metrics) and ``meta.csv`` (MetaQuantus' meta-consistency MC, 1 = ideal).
"""

from __future__ import annotations

import html

import pandas as pd

#: the convention, stated in the report
RANK_CONVENTION = ("Ranks: 1 = best (tied methods share the mean of their ranks); a method's mean rank is the mean "
                   "of its ranks over the metrics, so the lowest mean rank is the best.")
KIND_TITLES = {"features": "Feature attributions", "examples": "Example importance"}


def _names(names) -> str:
    names = [f"<b>{html.escape(str(n))}</b>" for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" and {names[-1]} (tied)"


def _best(table: pd.DataFrame, column: str, lowest: bool) -> tuple:
    """The index labels with the lowest (or highest) ``column`` value, ties included, and that value."""
    value = table[column].min() if lowest else table[column].max()
    return list(table.index[(table[column] - value).abs() < 1e-9]), float(value)


def best_explainers(ranks: pd.DataFrame, kind: str, overall: str = "all") -> str:
    """One sentence: the best ``kind`` explainer overall (lowest mean rank; normalised scores averaged
    over encoders) and per encoder."""
    t = ranks[(ranks["kind"] == kind) & (ranks["metric"] == "mean_rank")]
    n_metrics = ranks.loc[(ranks["kind"] == kind) & (ranks["metric"] != "mean_rank"), "metric"].nunique()
    per = {p: g.set_index("method") for p, g in t.groupby("pretext", sort=False)}
    sentence = f"{KIND_TITLES.get(kind, kind)}: "
    if overall in per:
        names, value = _best(per[overall], "rank", lowest=True)
        sentence += (f"{_names(names)} {'is' if len(names) == 1 else 'are'} best overall (mean rank {value:.2f} of "
                     f"{len(per[overall])} methods over {n_metrics} metrics)")
    encoders = [p for p in per if p != overall]
    if encoders:
        parts = []
        for p in encoders:
            names, _ = _best(per[p], "rank", lowest=True)
            parts.append(f"{html.escape(str(p))} {_names(names)}")
        sentence += f"; best per encoder: {', '.join(parts)}"
    return sentence + "."


def trusted_metrics(meta: pd.DataFrame, kind_of: dict) -> str:
    """One sentence: per kind, the meta-evaluated metric(s) with the highest MC (mean over the Model
    and Input tests), i.e. the ones MetaQuantus says to trust most."""
    mc = meta.groupby("metric", sort=False)["MC"].mean().to_frame()
    parts = []
    for kind in dict.fromkeys(kind_of[m] for m in mc.index):
        table = mc[[kind_of[m] == kind for m in mc.index]]
        names, value = _best(table, "MC", lowest=False)
        others = f"of {len(table)} meta-evaluated" if len(table) > 1 else "the only one meta-evaluated"
        parts.append(f"{_names(names)} for {KIND_TITLES.get(kind, kind).lower()} (MC {value:.2f}, {others})")
    tests = " and ".join(dict.fromkeys(meta["test"]))
    return (f"Metrics to trust (highest meta-consistency MC, mean over the {tests} tests; 1 = ideal): "
            f"{'; '.join(parts)}.")


def summary_sentences(ranks: pd.DataFrame, meta: pd.DataFrame, kinds: list, kind_of: dict) -> list:
    """The report's summary: best explainers per kind, the metrics to trust, the rank convention."""
    out = [best_explainers(ranks, kind) for kind in kinds]
    if len(meta):
        out.append(trusted_metrics(meta, kind_of))
    out.append(RANK_CONVENTION)
    return out
