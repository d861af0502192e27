"""A self-contained HTML report: PNG plots embedded as data URIs, tables as HTML.

Tables sit in their own horizontally scrolling box, so a wide table never widens the page; numbers
are right-aligned with the same number of significant digits (:func:`format_number`).
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

#: significant digits of every number in the report's tables
DIGITS = 3

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #ccc}
.summary{background:#f6f8fa;border:1px solid #d0d7de;padding:.2em 1em;margin:1em 0}
.summary h2{margin-top:.6em;border:0}.summary li{margin:.3em 0}
.table-box{max-width:100%;overflow-x:auto;margin:.5em 0}
table{border-collapse:collapse;font-size:.85em}
td,th{border:1px solid #ddd;padding:3px 8px;white-space:nowrap}
thead th{background:#f3f3f3;text-align:center}tbody th{background:#fafafa;text-align:left;font-weight:600}
td{text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.8em;color:#555;overflow-wrap:anywhere}.note{color:#444;font-size:.92em}
.warning{color:#a00}
"""


@dataclass
class Section:
    """A report section: a title, a short explanation, tables and figures (PNG paths)."""

    title: str
    text: str = ""
    tables: dict = field(default_factory=dict)  # caption -> DataFrame (or ready HTML)
    figures: list = field(default_factory=list)  # (path, caption)


def format_number(value, digits: int = DIGITS) -> str:
    """``value`` with ``digits`` significant digits, trailing zeros kept (0.5 -> "0.500"); plain
    notation from 0.001 to 99999, scientific outside; integers as integers; NaN as an en dash.

    >>> [format_number(v) for v in (0.5, 0.012345, 12.345, 1234.56, 2.0e-5, 3, float("nan"))]
    ['0.500', '0.0123', '12.3', '1235', '2.00e-05', '3', '–']
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    v = float(value)
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(v)))
    if -3 <= magnitude < 5:
        decimals = max(0, digits - 1 - magnitude)
        text = f"{v:.{decimals}f}"
        if decimals and float(text) != 0 and math.floor(math.log10(abs(float(text)))) > magnitude:
            text = f"{v:.{decimals - 1}f}"  # rounding carried into a new digit (0.9996 -> 1.00, not 1.000)
        return text
    return f"{v:.{digits - 1}e}"


def _column_text(values: pd.Series) -> tuple:
    """(cell texts, is-numeric) of one column; a float column of whole numbers (ranks) prints integers."""
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return [html.escape(str(v)) for v in values], False
    floats = values.to_numpy(dtype=float)
    finite = floats[np.isfinite(floats)]
    if pd.api.types.is_integer_dtype(values) or (len(finite) and np.all(finite == np.round(finite))
                                                 and np.all(np.abs(finite) < 1e6)):
        return [format_number(int(v)) if np.isfinite(v) else format_number(v) for v in floats], True
    return [format_number(v) for v in floats], True


def _label(value) -> str:
    return " / ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def table_html(df: pd.DataFrame) -> str:
    """``df`` as an HTML table: index levels as left-aligned row headers (a repeated outer level is
    shown once; an unnamed range index is left out), text left-aligned, numbers right-aligned via
    :func:`format_number`."""
    plain = isinstance(df.index, pd.RangeIndex) and df.index.name is None
    index = None if plain else df.index.to_frame(index=False)
    index_names = [] if plain else [str(n) if n is not None else "" for n in df.index.names]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in index_names)
    head += "".join(f"<th>{html.escape(_label(c))}</th>" for c in df.columns)
    columns = [_column_text(df.iloc[:, j]) for j in range(df.shape[1])]
    rows, previous = [], None
    for i in range(len(df)):
        labels = [] if plain else list(index.iloc[i])
        shown = ["" if previous is not None and k < len(labels) - 1 and labels[:k + 1] == previous[:k + 1]
                 else html.escape(_label(v)) for k, v in enumerate(labels)]
        previous = labels
        cells = "".join(f"<th>{s}</th>" for s in shown)
        cells += "".join(f"<td class='num'>{texts[i]}</td>" if numeric else f"<td>{texts[i]}</td>"
                         for texts, numeric in columns)
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _img(path: Path, caption: str, base: Path) -> str:
    path = Path(path).resolve()
    data = base64.b64encode(path.read_bytes()).decode()
    rel = path.relative_to(base).as_posix() if path.is_relative_to(base) else path.name
    return (f'<figure><a href="{html.escape(rel)}"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(rel)}" data-file="{html.escape(rel)}"></a>'
            f"<figcaption>{html.escape(caption)} ({html.escape(rel)})</figcaption></figure>")


def write_report(path, title: str, sections: list, intro: str = "", summary: list = ()) -> Path:
    """Write ``sections`` to one self-contained HTML page at ``path`` and return the path.

    ``summary``: HTML sentences shown first, in a box headed "Summary"; ``intro``: an HTML paragraph.
    """
    path = Path(path).resolve()
    base = path.parent
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if summary:
        items = "".join(f"<li>{s}</li>" for s in summary)
        parts.append(f"<div class='summary' id='summary'><h2>Summary</h2><ul>{items}</ul></div>")
    if intro:
        parts.append(f"<p class='note'>{intro}</p>")
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<div class='note'>{s.text}</div>")
        for caption, df in s.tables.items():
            table = table_html(df) if isinstance(df, pd.DataFrame) else df
            parts.append(f"<h4>{html.escape(caption)}</h4><div class='table-box'>{table}</div>")
        for fig_path, caption in s.figures:
            parts.append(_img(fig_path, caption, base))
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
