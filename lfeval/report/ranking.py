"""Ranking explainers across metrics, as the Quantus tutorial does (normalise, then rank).

Rank convention, everywhere in lfeval (API, ``ranks.csv``, report, radar charts): **1 = best**;
tied methods share the mean of their ranks.
"""

from __future__ import annotations

import pandas as pd

from ..errors import InvalidArgument


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


def rank_explainers(scores: pd.DataFrame, directions: dict) -> pd.DataFrame:
    """Ranks per metric (1 = best, ties averaged) and their mean, sorted best first.

    Returns a DataFrame: explainers x (metrics + ``mean_rank``); the lowest ``mean_rank`` is the best
    explainer over the metrics.

    >>> scores = pd.DataFrame({"faith": [0.1, 0.5, 0.3], "lipschitz": [3.0, 1.0, 2.0]}, index=["a", "b", "c"])
    >>> rank_explainers(scores, {"faith": "higher", "lipschitz": "lower"})
       faith  lipschitz  mean_rank
    b    1.0        1.0        1.0
    c    2.0        2.0        2.0
    a    3.0        3.0        3.0
    """
    ranks = normalise_scores(scores, directions).rank(method="average", ascending=False)
    ranks["mean_rank"] = ranks.mean(axis=1)
    return ranks.sort_values("mean_rank", ascending=True, kind="stable")
