"""A self-contained HTML report: PNG plots embedded as data URIs, tables as HTML."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f3f3f3}figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.8em;color:#555}.note{color:#444;font-size:.92em}
"""


@dataclass
class Section:
    """A report section: a title, a short explanation, tables and figures (PNG paths)."""

    title: str
    text: str = ""
    tables: dict = field(default_factory=dict)  # caption -> DataFrame
    figures: list = field(default_factory=list)  # (path, caption)


def _img(path: Path, caption: str, base: Path) -> str:
    path = Path(path).resolve()
    data = base64.b64encode(path.read_bytes()).decode()
    rel = path.relative_to(base).as_posix() if path.is_relative_to(base) else path.name
    return (f'<figure><a href="{html.escape(rel)}"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(rel)}" data-file="{html.escape(rel)}"></a>'
            f"<figcaption>{html.escape(caption)} ({html.escape(rel)})</figcaption></figure>")


def write_report(path, title: str, sections: list, intro: str = "") -> Path:
    """Write ``sections`` to one self-contained HTML page at ``path`` and return the path."""
    path = Path(path).resolve()
    base = path.parent
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class='note'>{intro}</p>" if intro else ""]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<p class='note'>{s.text}</p>")
        for caption, df in s.tables.items():
            table = df.to_html(float_format=lambda v: f"{v:.4g}", border=0) if isinstance(df, pd.DataFrame) else df
            parts.append(f"<h4>{html.escape(caption)}</h4>{table}")
        for fig_path, caption in s.figures:
            parts.append(_img(fig_path, caption, base))
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
