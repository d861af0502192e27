"""Matplotlib figures of a run: metric curves with confidence bands, radar chart, MetaQuantus areas,
pretext heatmaps and attribution maps. Each function returns a :class:`matplotlib.figure.Figure`."""

from __future__ import annotations

import matplotlib.pyplot as plt  # the backend is matplotlib's choice: inline in notebooks, Agg when headless
import numpy as np
import pandas as pd

from ..modalities import get_modality


def save_figure(fig, path, caption: str, figures: list) -> None:
    """Write ``fig`` to ``path`` (PNG, 90 dpi), close it and record ``(path, caption)`` in ``figures``."""
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    figures.append((path, caption))


def map_grid_done(fig, axes, title: str):
    """Finish a grid of input and attribution maps: no ticks, a small title, a tight layout; returns ``fig``."""
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _band(ax, x, curves: np.ndarray, label: str):
    """Mean curve with a 95% confidence band (1.96 standard errors over samples)."""
    curves = np.asarray(curves, dtype=float)
    mean = curves.mean(0)
    sem = curves.std(0, ddof=1) / np.sqrt(len(curves)) if len(curves) > 1 else np.zeros_like(mean)
    (line,) = ax.plot(x, mean, marker="o", label=label)
    ax.fill_between(x, mean - 1.96 * sem, mean + 1.96 * sem, color=line.get_color(), alpha=0.2)


def _axes(ax, figsize):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def panels(n: int, width: float = 4.2, height: float = 3.6):
    """A row of ``n`` axes (for one panel per encoder)."""
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def metric_curves(curves: dict, title: str = "", xlabel: str = "", ylabel: str = "", ylim=None, ax=None,
                  legend: bool = True):
    """``curves``: {method: :class:`lfeval.metrics.Curve`}. The first series of each method is drawn as a
    mean with a 95% band, the others (e.g. SimilarityRate's bottom-M rates) as dashed means in the same
    colour. Draws on ``ax`` if given; returns the figure."""
    fig, ax = _axes(ax, (6, 4))
    for method, curve in curves.items():
        series = list(curve.series.items())
        if not series:
            continue
        first_label, first = series[0]
        label = method if len(series) == 1 else f"{method} ({first_label})"
        _band(ax, curve.x, first, label)
        color = ax.lines[-1].get_color()
        for name, values in series[1:]:
            ax.plot(curve.x, np.asarray(values, dtype=float).mean(0), linestyle="--", marker="x", color=color,
                    label=f"{method} ({name})")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if legend:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def radar_chart(ranks: pd.DataFrame, title: str = "Ranks of explainers", control_wins=()):
    """Radar ("spyder") chart of per-metric ranks (1 = best), as in the Quantus tutorial.

    Rank r of n methods is drawn at radius n + 1 - r, so the best method is outermost; the radial
    tick labels show the ranks and the title says "1 = best, outermost". The axes of the metrics in
    ``control_wins`` (a control ties or beats every other method there, so they are left out of the
    mean rank: :func:`lfeval.report.ranking.control_wins`) are labelled "(control wins)".
    """
    metrics = [c for c in ranks.columns if c != "mean_rank"]
    won = set(control_wins)
    n = len(ranks)
    angles = np.linspace(0, 2 * np.pi, len(metrics), endpoint=False).tolist()
    fig, ax = plt.subplots(figsize=(6, 6), subplot_kw=dict(polar=True))
    for method, row in ranks[metrics].iterrows():
        radii = (n + 1 - row.to_numpy(dtype=float)).tolist()
        ax.plot(angles + angles[:1], radii + radii[:1], label=method)
        ax.fill(angles + angles[:1], radii + radii[:1], alpha=0.1)
    ax.set_xticks(angles)
    ax.set_xticklabels([f"{m}\n(control wins)" if m in won else m for m in metrics], fontsize=8)
    ax.set_ylim(0, n + 0.5)
    ax.set_yticks(range(1, n + 1))
    ax.set_yticklabels([f"rank {n + 1 - r}" for r in range(1, n + 1)], fontsize=7)
    ax.set_title(f"{title}\n(rank 1 = best, outermost)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.15, 1.05), fontsize=8, title="explainer", title_fontsize=8)
    fig.tight_layout()
    return fig


def meta_area(meta: pd.DataFrame, title: str = "MetaQuantus meta-consistency"):
    """One diamond per metric: IAC_NR (up), IEC_AR (right), IEC_NR (down), IAC_AR (left), as
    MetaQuantus' ``plot_single_estimator_area``; the grey square is the ideal metric (MC = 1)."""
    n = len(meta)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    for ax, (metric, row) in zip(axes[0], meta.iterrows()):
        ax.fill([-1, 0, 1, 0], [0, 1, 0, -1], color="black", alpha=0.1)
        ax.fill([-row["IAC_AR"], 0, row["IEC_AR"], 0], [0, row["IAC_NR"], 0, -row["IEC_NR"]], alpha=0.8,
                edgecolor="black")
        for (x, y), key in zip([(-1, 0.08), (0.05, 0.92), (0.55, 0.08), (0.05, -1)],
                               ["IAC_AR", "IAC_NR", "IEC_AR", "IEC_NR"]):
            ax.annotate(f"{key}={row[key]:.2f}", (x, y), fontsize=7)
        ax.set(xlim=(-1.1, 1.1), ylim=(-1.1, 1.1), title=f"{metric}\nMC={row['MC']:.3f}")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def pretext_heatmaps(tables: dict, title: str = "Pretext sensitivity: Pearson correlation"):
    """``tables``: {kind: square DataFrame task x task of mean correlations}. Paper §4.2, Fig. 4."""
    fig, axes = plt.subplots(1, len(tables), figsize=(4.6 * len(tables), 4), squeeze=False)
    for ax, (kind, mat) in zip(axes[0], tables.items()):
        im = ax.imshow(mat.to_numpy(dtype=float), vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(range(len(mat.columns)), mat.columns, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(mat.index)), mat.index, fontsize=8)
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                ax.text(j, i, f"{mat.iat[i, j]:.2f}", ha="center", va="center", fontsize=7)
        ax.set_title(kind)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def attribution_maps(x: np.ndarray, attributions: dict, n: int = 4, title: str = "Label-free attributions",
                     modality="image"):
    """Inputs (first column) and |attribution| per masking unit, one column per method, each drawn as the
    modality draws it (images, bars for tabular rows, curves for time series, highlighted tokens for text)."""
    modality = get_modality(modality)
    n = min(n, len(x))
    cols = 1 + len(attributions)
    width = 3.6 if modality.plot_kind == "tokens" else 1.6  # sentences need room for their words
    fig, axes = plt.subplots(n, cols, figsize=(width * cols, 1.6 * n), squeeze=False)
    for i in range(n):
        modality.draw_input(axes[i, 0], np.asarray(x[i]))
        for j, (method, a) in enumerate(attributions.items(), start=1):
            modality.draw_attribution(axes[i, j], np.asarray(a[i]), x=np.asarray(x[i]))
            if i == 0:
                axes[i, j].set_title(method, fontsize=7)
    axes[0, 0].set_title("input", fontsize=7)
    return map_grid_done(fig, axes, title)
