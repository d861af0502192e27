"""The report's pair section (a run with config ``pairs``): why do a and b have close representations?

:class:`PairPage` holds what the section shows, as plain data gathered by the main job
(:func:`lfeval.pipeline.outputs.pair_page`): the ``pairs.csv`` and ``pair_ranks.csv`` tables and, per encoder, the
first pairs' inputs, the attributions of a for s(·, b) by each pair explainer and the interaction matrices'
row and column sums (:class:`PairMaps`). :func:`pair_section` draws them the way the modality draws inputs and
attributions (heat maps for images, bars for tabular rows, strips for time series, highlighted tokens for text)
and, for text, lists the strongest token-pair interactions ("a_token ↔ b_token: value"). Ranks: 1 = best.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..modalities import get_modality
from .html import Section
from .plots import map_grid_done, save_figure
from .ranking import wide
from .summary import RANK_CONVENTION

#: the ``pretext`` of the rows that rank over all encoders (``pair_ranks.csv``)
OVERALL = "all"
#: the kind of the pair explainers' rows in ``pair_ranks.csv``
KIND = "pairs"
#: the method name of the interactions' completeness rows in ``pairs.csv``
INTERACTIONS = "IntegratedJacobians"


@dataclass
class PairMaps:
    """The drawn pairs of one encoder.

    Parameters
    ----------
    a, b : numpy.ndarray
        The inputs of the first pairs, (k, *input_shape).
    a_index, b_index : numpy.ndarray
        Their indices: a in the test split, b in ``b_split``.
    b_split : str
        ``"train"`` (nearest neighbours) or ``"test"`` (a file of index pairs).
    similarity : numpy.ndarray
        s(a, b) of each pair, (k,).
    attributions : dict
        ``{method: (k, *input_shape) array}``: attributions of a for s(·, b).
    row_sums, col_sums : numpy.ndarray or None
        The interaction matrices summed over b's units (k, U_a) and over a's units (k, U_b); None without them.
    top : pandas.DataFrame
        The strongest interactions per pair: pair, a_unit, b_unit, value.
    """

    a: np.ndarray
    b: np.ndarray
    a_index: np.ndarray
    b_index: np.ndarray
    b_split: str
    similarity: np.ndarray
    attributions: dict
    row_sums: Optional[np.ndarray] = None
    col_sums: Optional[np.ndarray] = None
    top: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass
class PairPage:
    """What the pair section shows, as plain data.

    Parameters
    ----------
    mode : str
        How the pairs were made (``"nearest"``, or the index pairs of a file).
    similarity : str
        The pair similarity, ``"cosine"`` or ``"dot"``.
    n_steps : int
        Quadrature points of the interaction matrices.
    scores, ranks : pandas.DataFrame
        ``pairs.csv`` and ``pair_ranks.csv``.
    maps : dict
        ``{encoder: PairMaps}``.
    modality : object
        The inputs' modality (how the maps are drawn).
    curves : dict
        ``{metric: {encoder: {method: Curve}}}`` of the pair metrics with curves.
    curve_specs : dict
        ``{metric: spec}`` (``title``, ``text``, ``xlabel``, ``ylabel``, ``ylim``).
    metric_texts, directions : dict
        ``{metric: its explanation}`` and ``{metric: "higher" | "lower"}``.
    """

    mode: str
    similarity: str
    n_steps: int
    scores: pd.DataFrame
    ranks: pd.DataFrame
    maps: dict
    modality: object = None
    curves: dict = field(default_factory=dict)
    curve_specs: dict = field(default_factory=dict)
    metric_texts: dict = field(default_factory=dict)
    directions: dict = field(default_factory=dict)


def _unit_map(values: np.ndarray, modality, input_shape: tuple) -> np.ndarray:
    """Per-unit values (U,) laid out as the modality's masking units, broadcast to one input's shape (so the
    modality draws them as an attribution)."""
    units = np.asarray(values, dtype=float).reshape(modality.unit_shape(input_shape))
    return np.broadcast_to(units, input_shape)


def pair_figure(maps: PairMaps, modality, title: str = "Pair explanations"):
    """One row per pair: a, b, the attribution of a for s(·, b) per method and, with interactions, their row sums
    (the map of a) and column sums (the map of b), each drawn as the modality draws inputs and ``|attribution|``."""
    modality = get_modality(modality)
    k = len(maps.a)
    inter = maps.row_sums is not None and len(maps.row_sums) == k
    columns = ["a", "b", *(f"a: {m}" for m in maps.attributions), *(("interactions: a", "interactions: b")
                                                                        if inter else ())]
    width = 3.6 if modality.plot_kind == "tokens" else 1.6
    fig, axes = plt.subplots(k, len(columns), figsize=(width * len(columns), 1.7 * k), squeeze=False)
    shape = tuple(np.shape(maps.a)[1:])
    for i in range(k):
        a, b = np.asarray(maps.a[i]), np.asarray(maps.b[i])
        modality.draw_input(axes[i, 0], a)
        modality.draw_input(axes[i, 1], b)
        j = 2
        for values in maps.attributions.values():
            modality.draw_attribution(axes[i, j], np.asarray(values[i]), x=a)
            j += 1
        if inter:
            modality.draw_attribution(axes[i, j], _unit_map(maps.row_sums[i], modality, shape), x=a)
            modality.draw_attribution(axes[i, j + 1], _unit_map(maps.col_sums[i], modality, shape), x=b)
        axes[i, 0].set_ylabel(f"s = {float(maps.similarity[i]):.3g}", fontsize=7)
    for j, name in enumerate(columns):
        axes[0, j].set_title(name, fontsize=7)
    return map_grid_done(fig, axes, title)


def token_pairs(maps: PairMaps, modality, n: int = 5) -> list:
    """The strongest token-pair interactions of each drawn text pair, as ``"a_token ↔ b_token: value"`` strings
    (``[[str]]``, one list per pair); padding and structure tokens, whose interactions are zero, are skipped."""
    modality = get_modality(modality)
    out = []
    for i in range(len(maps.a)):
        words = {}
        for side, x in (("a", np.asarray(maps.a[i])), ("b", np.asarray(maps.b[i]))):
            positions = np.flatnonzero(x[1] > 0.5)
            words[side] = dict(zip(positions.tolist(), modality.tokens(x)))
        rows = maps.top[maps.top["pair"] == i] if len(maps.top) else maps.top
        lines = [f"{words['a'].get(int(r.a_unit), '?')} ↔ {words['b'].get(int(r.b_unit), '?')}: {r.value:.3g}"
                 for r in rows.itertuples() if r.value != 0]
        out.append(lines[:n])
    return out


def _token_list(maps: PairMaps, modality) -> str:
    """The drawn text pairs with their strongest token-pair interactions, as HTML."""
    modality = get_modality(modality)
    items = []
    for i, lines in enumerate(token_pairs(maps, modality)):
        a = " ".join(modality.tokens(np.asarray(maps.a[i])))
        b = " ".join(modality.tokens(np.asarray(maps.b[i])))
        inner = "".join(f"<li><code>{html.escape(line)}</code></li>" for line in lines)
        items.append(f"<li>a = <i>{html.escape(a)}</i><br>b = <i>{html.escape(b)}</i><ul>{inner}</ul></li>")
    return f"<ol>{''.join(items)}</ol>"


def pair_section(page: PairPage, plot_dir: Path) -> Section:
    """The "Pair explanations" section: what was explained, the pair explainers' ranking (overall) and mean scores
    per encoder, the interactions' completeness errors, the drawn pairs and their maps (and, for text, the
    strongest token-pair interactions)."""
    scores, ranks = page.scores, page.ranks
    explained = scores[scores["method"] != INTERACTIONS]
    tables, figures = {}, []
    if len(ranks):
        tables["pair explainers, overall rank (normalised means averaged over encoders; 1 = best)"] = wide(
            ranks, KIND, OVERALL, "rank").sort_values("mean_rank", kind="stable")
    for p in dict.fromkeys(explained["pretext"]):
        tables[f"mean scores (± 95% CI half-width in pairs.csv), {p} encoder"] = wide(explained, None, p, "mean")
    completeness = scores[scores["method"] == INTERACTIONS]
    if len(completeness):
        tables["interaction completeness error (IntegratedJacobians)"] = completeness.pivot(
            index="pretext", columns="metric", values="mean").rename_axis("encoder")
    drawn = []
    for p, maps in page.maps.items():
        for i in range(len(maps.a)):
            drawn.append({"encoder": p, "pair": i, "a (test index)": int(maps.a_index[i]),
                          f"b ({maps.b_split} index)": int(maps.b_index[i]), "s(a, b)": float(maps.similarity[i])})
    if drawn:
        tables["the drawn pairs"] = pd.DataFrame(drawn).set_index(["encoder", "pair"])
    modality = get_modality(page.modality)
    text_parts = []
    for p, maps in page.maps.items():
        if not len(maps.a):
            continue
        fig = pair_figure(maps, modality, title=f"Pair explanations, {p} encoder")
        save_figure(fig, plot_dir / f"pairs_{p}.png", f"Pairs a, b, the attribution of a for s(·, b) per method and "
                    f"the interaction maps of a (row sums) and b (column sums) ({p} encoder)", figures)
        if modality.plot_kind == "tokens" and len(maps.top):
            text_parts.append(f"<h4>Strongest token-pair interactions, {html.escape(p)} encoder</h4>"
                              + _token_list(maps, modality))
    names = [m for m in dict.fromkeys(explained["metric"]) if m in page.metric_texts]
    notes = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(page.metric_texts[n])} "
                    f"{'Higher' if page.directions.get(n) == 'higher' else 'Lower'} is better.</li>" for n in names)
    text = (f"Why do a and b have close representations? Pairs: {html.escape(page.mode)}; similarity "
            f"s(a, b) = {'cos(f(a), f(b))' if page.similarity == 'cosine' else '&lt;f(a), f(b)&gt;'}. Each method "
            "attributes s(·, b) to a's features with b held fixed (the label-free g<sub>x</sub> with the partner's "
            "latent as the reference); the interaction matrices (integrated Jacobians, "
            f"{page.n_steps} quadrature points) attribute s to pairs of units of a and b, and sum to s(a, b) - "
            "s(r<sub>a</sub>, b) - s(a, r<sub>b</sub>) + s(r<sub>a</sub>, r<sub>b</sub>) up to the completeness "
            f"error shown. Maps show |values| per masking unit. {RANK_CONVENTION}"
            + (f"<ul>{notes}</ul>" if notes else "") + "".join(text_parts))
    return Section("Pair explanations", text, tables, figures)


__all__ = ["PairMaps", "PairPage", "pair_figure", "pair_section", "token_pairs", "OVERALL", "KIND", "INTERACTIONS"]
