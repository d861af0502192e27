"""Markdown tables for the benchmark scripts' output (pandas' ``to_markdown`` needs the optional tabulate)."""

import pandas as pd


def markdown(table: pd.DataFrame, index: bool = True, floatfmt: str = ".3g") -> str:
    """``table`` as a Markdown table; floats with ``floatfmt`` (tiny ones in scientific notation)."""
    if index:
        table = table.reset_index()

    def cell(v):
        if isinstance(v, float):
            return format(v, ".1e" if 0 < abs(v) < 1e-3 and floatfmt.endswith("g") else floatfmt)
        return str(v).replace("|", "/").replace("\n", " ")[:160]

    rows = [[str(c) for c in table.columns]] + [[cell(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join([lines[0], "|" + "---|" * len(table.columns)] + lines[1:])
