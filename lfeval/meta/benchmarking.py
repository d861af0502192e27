"""A resumable grid of meta-evaluations: data sets x encoders x metrics -> one DataFrame.

Each finished cell is written to ``<out_dir>/<data>__<encoder>__<metric>.json`` at once; a rerun
reads finished cells instead of recomputing them, so an interrupted grid loses nothing.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
from tqdm.auto import tqdm

from ..errors import InvalidArgument
from .meta_evaluation import LabelFreeMetaEvaluation
from .perturbation_tests import default_test_suite


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text))


def benchmark(grid: dict, metrics: dict, xai_methods: dict, out_dir, iterations: int = 2, nr_perturbations: int = 3,
              test_suite: Optional[Callable[[], dict]] = None, seed: int = 0, display_progressbar: bool = True,
              **call_kwargs) -> pd.DataFrame:
    """Meta-evaluate every metric on every (data set, encoder) cell.

    Parameters
    ----------
    grid : dict
        ``{data_name: {"x": x_batch, "encoders": {encoder_name: encoder}}}``.
    metrics : dict
        ``{metric_name: quantus.Metric}`` (copied per cell).
    xai_methods : dict
        ``{method: explain kwargs}`` as in MetaQuantus.
    out_dir : path-like
        Where finished cells are stored.
    test_suite : callable, optional
        Returns a fresh test suite per cell (default :func:`default_test_suite`).

    Returns
    -------
    DataFrame with columns data, encoder, metric, test (Model/Input), IAC_NR, IAC_AR, IEC_NR, IEC_AR, MC.
    """
    if not isinstance(grid, dict) or not grid or not isinstance(metrics, dict) or not metrics:
        raise InvalidArgument("`grid` and `metrics` must be non-empty dicts: {data: {'x': ..., 'encoders': {...}}} "
                              "and {name: metric}.")
    for data, spec in grid.items():
        if not isinstance(spec, dict) or "x" not in spec or not isinstance(spec.get("encoders"), dict) \
                or not spec["encoders"]:
            raise InvalidArgument(f"grid[{data!r}] must be {{'x': inputs, 'encoders': {{name: encoder}}}} with at "
                                  "least one encoder.")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgument(f"Cannot create `out_dir` {str(out)!r}: {exc.strerror or exc}.") from None
    make_suite = test_suite or (lambda: default_test_suite(seed=seed))
    cells = [(d, e, m) for d, spec in grid.items() for e in spec["encoders"] for m in metrics]
    rows = []
    for data, enc_name, metric_name in tqdm(cells, desc="meta-evaluation grid", disable=not display_progressbar):
        path = out / f"{_slug(data)}__{_slug(enc_name)}__{_slug(metric_name)}.json"
        if path.exists():
            rows.extend(json.loads(path.read_text()))
            continue
        meta = LabelFreeMetaEvaluation(make_suite(), xai_methods, iterations=iterations,
                                       nr_perturbations=nr_perturbations, seed=seed, display_progressbar=False)
        meta(copy.deepcopy(metrics[metric_name]), grid[data]["encoders"][enc_name], grid[data]["x"], **call_kwargs)
        cell = [{"data": data, "encoder": enc_name, "metric": metric_name, "test": kind, **values}
                for kind, values in meta.summary().to_dict(orient="index").items()]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cell))
        tmp.replace(path)
        rows.extend(cell)
    return pd.DataFrame(rows)
