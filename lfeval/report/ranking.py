"""Ranking explainers across metrics, as the Quantus tutorial does (normalise, then rank).

Rank convention, everywhere in lfeval (API, ``ranks.csv``, report, radar charts): **1 = best**;
tied methods share the mean of their ranks.

Controls (the Random explainer; any method whose class sets ``control = True``): a metric on which a
control ties or beats every other method cannot tell the explainers from a control, so
:func:`rank_explainers` leaves it out of the mean rank (:func:`control_wins`, :func:`mean_rank_metrics`).
"""

from __future__ import annotations

import pandas as pd

from ..errors import InvalidArgument

#: a control "ties" the best other method when its normalised score (1 = best) is within this of it
CONTROL_TOLERANCE = 1e-9


def wide(table: pd.DataFrame, kind, pretext: str, value: str) -> pd.DataFrame:
    """methods x metrics of one encoder (and of one ``kind`` of explanation unless None), from a long scores or
    ranks table, in the table's order."""
    t = table[table["pretext"] == pretext]
    if kind is not None:
        t = t[t["kind"] == kind]
    out = t.pivot(index="method", columns="metric", values=value)
    return out.loc[list(dict.fromkeys(t["method"])), list(dict.fromkeys(t["metric"]))]


def normalise_scores(scores: pd.DataFrame, directions: dict) -> pd.DataFrame:
    """Min-max normalise each metric column to [0, 1] with 1 = best.

    ``directions`` maps a column to ``"higher"`` or ``"lower"`` (which is better). The Quantus
    tutorial divides by the column maximum (and the minimum by the column for lower-is-better);
    min-max does the same job and stays correct for negative scores (e.g. correlations).
    A constant column normalises to 1 (every method ties).
    """
    missing = [c for c in scores.columns if c not in directions]
    if missing:
        raise InvalidArgument(
            f"No score direction for metric(s) {missing}; pass directions={{name: 'higher'|'lower'}}."
        )
    out = {}
    for col in scores.columns:
        direction = str(directions[col]).lower()
        if direction not in ("higher", "lower"):
            raise InvalidArgument(f"Direction of {col!r} must be 'higher' or 'lower', got {directions[col]!r}.")
        x = scores[col].astype(float)
        span = x.max() - x.min()
        norm = (x - x.min()) / span if span > 0 else x * 0 + 1.0
        out[col] = norm if direction == "higher" else 1 - norm if span > 0 else norm
    return pd.DataFrame(out, index=scores.index)


def control_wins(scores: pd.DataFrame, directions: dict, controls=()) -> pd.Series:
    """Per metric: does a control tie or beat every other method? (a bool Series over the metrics)

    ``scores``: methods x metrics; ``controls``: the names of the methods that are controls (the Random
    explainer: its class sets ``control = True``). A metric is flagged when the best control's
    normalised score (:func:`normalise_scores`, 1 = best) is at least the best non-control method's, up
    to :data:`CONTROL_TOLERANCE`. A tie counts: a metric that gives a model-independent map the best
    score cannot tell the explainers from a control, whatever it says about the others. A constant
    metric is therefore flagged too (it ranks every method the same anyway). Nothing is flagged when
    the methods hold no control, or only controls.

    >>> scores = pd.DataFrame({"faith": [0.9, 0.5, 0.1], "consistency": [0.3, 0.6, 1.0]},
    ...                       index=["IG", "Saliency", "Random"])
    >>> control_wins(scores, {"faith": "higher", "consistency": "higher"}, controls=["Random"]).to_dict()
    {'faith': False, 'consistency': True}
    """
    norm = normalise_scores(scores, directions)
    is_control = norm.index.isin(list(controls))
    if not is_control.any() or is_control.all():
        return pd.Series(False, index=norm.columns, dtype=bool, name="control_wins")
    won = norm[is_control].max() >= norm[~is_control].max() - CONTROL_TOLERANCE
    return won.astype(bool).rename("control_wins")


def mean_rank_metrics(flags: pd.Series) -> list:
    """The metrics a mean rank averages, given :func:`control_wins`' flags: the unflagged ones, or every
    metric when all are flagged (nothing would be left to rank on; the report says so).

    >>> mean_rank_metrics(pd.Series({"faith": False, "consistency": True}))
    ['faith']
    >>> mean_rank_metrics(pd.Series({"faith": True, "consistency": True}))
    ['faith', 'consistency']
    """
    kept = [m for m, flagged in flags.items() if not flagged]
    return kept or list(flags.index)


def rank_explainers(scores: pd.DataFrame, directions: dict, controls=()) -> pd.DataFrame:
    """Ranks per metric (1 = best, ties averaged) and their mean, sorted best first.

    Returns a DataFrame: explainers x (metrics + ``mean_rank``); the lowest ``mean_rank`` is the best
    explainer over the metrics.

    >>> scores = pd.DataFrame({"faith": [0.1, 0.5, 0.3], "lipschitz": [3.0, 1.0, 2.0]}, index=["a", "b", "c"])
    >>> rank_explainers(scores, {"faith": "higher", "lipschitz": "lower"})
       faith  lipschitz  mean_rank
    b    1.0        1.0        1.0
    c    2.0        2.0        2.0
    a    3.0        3.0        3.0

    With ``controls`` (names of control methods, e.g. ``["Random"]``), a metric that a control ties or
    wins (:func:`control_wins`) keeps its per-metric ranks but is left out of ``mean_rank``
    (:func:`mean_rank_metrics`; if every metric is flagged, the mean is over all of them). Random wins
    ``consistency`` below, so the mean rank is the ``faith`` rank alone; counted, it would tie all three:

    >>> scores = pd.DataFrame({"faith": [0.9, 0.5, 0.1], "consistency": [0.3, 0.6, 1.0]},
    ...                       index=["IG", "Saliency", "Random"])
    >>> rank_explainers(scores, {"faith": "higher", "consistency": "higher"}, controls=["Random"])
              faith  consistency  mean_rank
    IG          1.0          3.0        1.0
    Saliency    2.0          2.0        2.0
    Random      3.0          1.0        3.0
    """
    ranks = normalise_scores(scores, directions).rank(method="average", ascending=False)
    kept = mean_rank_metrics(control_wins(scores, directions, controls))
    ranks["mean_rank"] = ranks[kept].mean(axis=1)
    return ranks.sort_values("mean_rank", ascending=True, kind="stable")
