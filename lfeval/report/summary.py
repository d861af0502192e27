"""The sentences at the top of a run's report, and the control flags its sections show: the best explainers and
the metrics to trust.

Read from the run's tables only: ``ranks.csv`` (rank 1 = best; the ``mean_rank`` rows hold each
method's mean rank over the metrics; ``control`` marks the control methods and ``control_wins`` the
metrics a control ties or beats, left out of that encoder's mean rank) and ``meta.csv`` (MetaQuantus'
meta-consistency MC, 1 = ideal). A ``ranks.csv`` written before those two columns reads as unflagged.
"""

from __future__ import annotations

import html

import pandas as pd

#: the convention, stated in the report
RANK_CONVENTION = ("Ranks: 1 = best (tied methods share the mean of their ranks); a method's mean rank is the mean "
                   "of its ranks over the metrics, so the lowest mean rank is the best. A metric on which a control "
                   "(Random) ties or beats every other method cannot tell the explainers from a control: it keeps "
                   "its ranks but is left out of that encoder's mean rank (unless every metric is).")
KIND_TITLES = {"features": "Feature attributions", "examples": "Example importance", "pairs": "Pair explanations"}


def _names(names) -> str:
    names = [f"<b>{html.escape(str(n))}</b>" for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" and {names[-1]} (tied)"


def _best(table: pd.DataFrame, column: str, lowest: bool) -> tuple:
    """The index labels with the lowest (or highest) ``column`` value, ties included, and that value."""
    value = table[column].min() if lowest else table[column].max()
    return list(table.index[(table[column] - value).abs() < 1e-9]), float(value)


def _and(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" and {items[-1]}"


def control_flags(ranks: pd.DataFrame, kind: str) -> dict:
    """``{pretext: {"won": [metrics a control ties or beats], "all": every metric won}}`` of ``kind``'s
    encoders (and overall) where a control wins at least one metric; ``{}`` without the column."""
    if "control_wins" not in ranks:
        return {}
    t = ranks[(ranks["kind"] == kind) & (ranks["metric"] != "mean_rank")]
    out = {}
    for p, g in t.groupby("pretext", sort=False):
        flags = g.drop_duplicates("metric").set_index("metric")["control_wins"].astype(bool)
        if flags.any():
            out[p] = {"won": list(flags.index[flags]), "all": bool(flags.all())}
    return out


def control_names(ranks: pd.DataFrame, kind: str) -> list:
    """The ``kind`` methods that ``ranks.csv`` marks as controls."""
    if "control" not in ranks:
        return []
    t = ranks[(ranks["kind"] == kind) & ranks["control"].astype(bool)]
    return list(dict.fromkeys(t["method"]))


def _where(pretexts: list, every: list, overall: str) -> str:
    if pretexts == every:
        return "every encoder and overall" if overall in every and len(every) > 1 else "every encoder"
    return _and([html.escape(str(p)) if p != overall else "overall" for p in pretexts])


def left_out_sentence(ranks: pd.DataFrame, kind: str, overall: str = "all") -> str:
    """One sentence (empty when nothing is flagged): the metrics left out of ``kind``'s mean rank because a
    control ties or beats every other method on them, and on which encoders."""
    flags = control_flags(ranks, kind)
    if not flags:
        return ""
    every = list(dict.fromkeys(ranks.loc[ranks["kind"] == kind, "pretext"]))
    groups = {}  # the same flagged metrics on several encoders: said once
    for p, f in flags.items():
        groups.setdefault((tuple(f["won"]), f["all"]), []).append(p)
    parts, fallback, left_out = [], [], set()
    for (won, every_metric), pretexts in groups.items():
        where = _where(pretexts, every, overall)
        if every_metric:
            fallback.append(where)
        else:
            left_out.update(won)
            parts.append(f"{_and(f'<b>{html.escape(str(m))}</b>' for m in won)} ({where})")
    names = control_names(ranks, kind)
    who = f"The {_and(f'<b>{html.escape(str(n))}</b>' for n in names)} control" if names else "A control"
    sentence = ""
    if parts:
        one = len(left_out) == 1
        sentence += (f"{who} ties or beats every other method on {'; on '.join(parts)}: "
                     f"{'this metric cannot' if one else 'these metrics cannot'} tell the explainers from a control, "
                     f"so {'it is' if one else 'they are'} left out of the mean rank there (the ranks stay in "
                     "ranks.csv, column control_wins).")
    if fallback:
        sentence += (f"{' It' if sentence else who} ties or beats every other method on every metric "
                     f"({_and(fallback)}), so there nothing is left out and the mean rank is over all metrics.")
    return sentence


def best_explainers(ranks: pd.DataFrame, kind: str, overall: str = "all") -> str:
    """One sentence: the best ``kind`` explainer overall (lowest mean rank; normalised scores averaged
    over encoders) and per encoder, then :func:`left_out_sentence` when a control wins a metric."""
    t = ranks[(ranks["kind"] == kind) & (ranks["metric"] == "mean_rank")]
    n_metrics = ranks.loc[(ranks["kind"] == kind) & (ranks["metric"] != "mean_rank"), "metric"].nunique()
    per = {p: g.set_index("method") for p, g in t.groupby("pretext", sort=False)}
    flags = control_flags(ranks, kind)
    sentence = f"{KIND_TITLES.get(kind, kind)}: "
    if overall in per:
        names, value = _best(per[overall], "rank", lowest=True)
        left_out = flags.get(overall, {"won": [], "all": False})
        over = f"{n_metrics - len(left_out['won'])} of {n_metrics}" if left_out["won"] and not left_out["all"] else (
            f"{n_metrics}")
        sentence += (f"{_names(names)} {'is' if len(names) == 1 else 'are'} best overall (mean rank {value:.2f} of "
                     f"{len(per[overall])} methods over {over} metrics)")
    encoders = [p for p in per if p != overall]
    if encoders:
        parts = []
        for p in encoders:
            names, _ = _best(per[p], "rank", lowest=True)
            parts.append(f"{html.escape(str(p))} {_names(names)}")
        sentence += f"; best per encoder: {', '.join(parts)}"
    extra = left_out_sentence(ranks, kind, overall)
    return sentence + "." + (f" {extra}" if extra else "")


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


__all__ = ["KIND_TITLES", "RANK_CONVENTION", "best_explainers", "control_flags", "control_names",
           "left_out_sentence", "summary_sentences", "trusted_metrics"]
