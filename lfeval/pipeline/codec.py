"""Stage results to and from files that cannot execute code: a JSON document for the structure and a
safetensors file for the arrays (no pickle anywhere).

A stage result is a tree of dicts (str keys), lists, JSON scalars, NumPy arrays and scalars, torch
tensors, pandas DataFrames and :class:`lfeval.metrics.Curve`. Arrays, including every numeric column
of a DataFrame, are stored bit-exactly in the safetensors file, so a reloaded stage reproduces the CSVs
byte for byte; text columns and the structure go to JSON.

>>> import numpy as np, pandas as pd
>>> tree = {"a": np.arange(3.0), "df": pd.DataFrame({"m": ["x", "y"], "s": [0.1, 0.2]}), "n": [1, None, "t"]}
>>> doc, arrays = encode(tree)
>>> back = decode(doc, arrays)
>>> bool((back["a"] == tree["a"]).all()), back["df"].equals(tree["df"]), back["n"]
(True, True, [1, None, 't'])
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ..errors import InvalidArgument
from ..metrics.curve import Curve


def encode(tree) -> tuple:
    """``(document, arrays)``: a JSON-able document with references into ``arrays`` ({key: ndarray})."""
    arrays: dict = {}

    def array(value: np.ndarray) -> dict:
        key = f"a{len(arrays)}"
        arrays[key] = np.ascontiguousarray(value)
        return {"__array__": key}

    def walk(v):
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, (int, np.integer)) and not isinstance(v, np.bool_):
            return int(v)
        if isinstance(v, (float, np.floating)):
            return float(v) if math.isfinite(v) else {"__float__": repr(float(v))}
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, torch.Tensor):
            return {"__tensor__": array(v.detach().cpu().numpy())}
        if isinstance(v, np.ndarray):
            if v.dtype == object:
                raise InvalidArgument("Object arrays cannot be stored safely; convert them to lists.")
            return array(v)
        if isinstance(v, pd.DataFrame):
            return {"__frame__": _frame(v, walk, array)}
        if isinstance(v, Curve):
            return {"__curve__": {"x": array(v.x), "series": {str(k): array(s) for k, s in v.series.items()}}}
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                raise InvalidArgument(f"Stage results need string keys, got {[k for k in v][:3]}.")
            return {"__dict__": {k: walk(x) for k, x in v.items()}}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        raise InvalidArgument(f"Cannot store a {type(v).__name__} in a stage result.")

    return walk(tree), arrays


def _column(values, walk, array):
    values = np.asarray(values)
    if values.dtype.kind in "biuf":
        return array(values)
    return {"__list__": [walk(x) for x in values.tolist()], "dtype": str(values.dtype)}


def _frame(df: pd.DataFrame, walk, array) -> dict:
    if isinstance(df.index, pd.MultiIndex) or isinstance(df.columns, pd.MultiIndex):
        raise InvalidArgument("DataFrames with a MultiIndex are not stored; reset the index first.")
    return {"columns": [str(c) for c in df.columns],
            "data": [_column(df[c].to_numpy(), walk, array) for c in df.columns],
            "dtypes": [str(t) for t in df.dtypes],
            "index": None if isinstance(df.index, pd.RangeIndex) and df.index.start == 0 and df.index.step == 1
            else _column(df.index.to_numpy(), walk, array),
            "index_name": df.index.name}


def decode(document, arrays: dict):
    """The tree :func:`encode` stored."""

    def get(ref):
        return arrays[ref["__array__"]]

    def column(ref):
        if "__array__" in ref:
            return get(ref)
        return np.asarray([walk(x) for x in ref["__list__"]], dtype=object if ref["dtype"] == "object" else None)

    def walk(v):
        if isinstance(v, list):
            return [walk(x) for x in v]
        if not isinstance(v, dict):
            return v
        if "__array__" in v:
            return get(v)
        if "__float__" in v:
            return float(v["__float__"])
        if "__tensor__" in v:
            return torch.from_numpy(get(v["__tensor__"]).copy())
        if "__dict__" in v:
            return {k: walk(x) for k, x in v["__dict__"].items()}
        if "__frame__" in v:
            f = v["__frame__"]
            data = {c: column(ref) for c, ref in zip(f["columns"], f["data"])}
            index = None if f["index"] is None else pd.Index(column(f["index"]), name=f["index_name"])
            df = pd.DataFrame(data, columns=f["columns"], index=index)
            return df.astype(dict(zip(f["columns"], f["dtypes"])))
        if "__curve__" in v:
            c = v["__curve__"]
            return Curve(get(c["x"]), {k: get(s) for k, s in c["series"].items()})
        raise ValueError(f"Unknown entry in a stage document: {sorted(v)[:3]}")

    return walk(document)
