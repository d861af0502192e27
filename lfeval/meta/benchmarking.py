"""A resumable grid of meta-evaluations: data sets x encoders x metrics -> one DataFrame.

Each (data set, encoder, metric) cell is one independent meta-evaluation, run in this process
(``backend="serial"``) or as a Ray task (``backend="ray"``, see :mod:`lfeval.execution`). This process
alone writes each finished cell to ``<out_dir>/<data>__<encoder>__<metric>.json`` as it arrives; a rerun
(with either backend) reads finished cells instead of recomputing them, so an interrupted grid loses
nothing. The inputs and encoders are sent to Ray's object store once, not once per cell (on the CPU; a cell
whose encoder is on CUDA asks for a GPU and moves it there, :mod:`lfeval.execution`).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import torch

from ..errors import InvalidArgument
from ..execution import Cell, cell_device, cells_failed, check_backend, get_executor, gpus_for, portable
from ..files import replace_with
from ..validation import model_device
from .meta_evaluation import LabelFreeMetaEvaluation
from .perturbation_tests import default_test_suite


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text))


def meta_cell(metric, encoder, x, data: str, enc_name: str, metric_name: str, xai_methods: dict, iterations: int,
              nr_perturbations: int, seed: int, make_suite: Callable, call_kwargs: dict, device=None) -> list:
    """One cell of the grid: the meta-evaluation of ``metric`` on ``encoder``, as rows of the table; ``device`` is
    the encoder's in the calling process (the cell moves it to :func:`lfeval.execution.cell_device` of it)."""
    if device is not None and isinstance(encoder, torch.nn.Module):
        encoder = encoder.to(cell_device(device))
    meta = LabelFreeMetaEvaluation(make_suite(), xai_methods, iterations=iterations,
                                   nr_perturbations=nr_perturbations, seed=seed, display_progressbar=False)
    meta(copy.deepcopy(metric), encoder, x, **call_kwargs)
    return [{"data": data, "encoder": enc_name, "metric": metric_name, "test": kind, **values}
            for kind, values in meta.summary().to_dict(orient="index").items()]


def benchmark(grid: dict, metrics: dict, xai_methods: dict, out_dir, iterations: int = 2, nr_perturbations: int = 3,
              test_suite: Optional[Callable[[], dict]] = None, seed: int = 0, display_progressbar: bool = True,
              backend: str = "serial", address: Optional[str] = None, **call_kwargs) -> pd.DataFrame:
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
    backend : {"serial", "ray"}
        ``"ray"`` runs each cell as a Ray task (``pip install lfeval[ray]``); same seeds, same numbers.
    address : str, optional
        With ``backend="ray"``: the Ray cluster to join; ``None`` starts a local Ray on this machine
        (or uses the one this process is connected to).

    Returns
    -------
    DataFrame with columns data, encoder, metric, test (Model/Input), IAC_NR, IAC_AR, IEC_NR, IEC_AR, MC.

    Raises
    ------
    lfeval.errors.CellsFailed
        With ``backend="ray"``, when cells failed after their retries: it names each with its error; the
        other cells are stored. (The serial backend raises the first error as it is.)
    """
    _check_grid(grid, metrics)
    check_backend(backend, address)
    out = _open_folder(out_dir)
    make_suite = test_suite or functools.partial(default_test_suite, seed=seed)
    keys = [(d, e, m) for d, spec in grid.items() for e in spec["encoders"] for m in metrics]
    path = {k: out / f"{'__'.join(_slug(p) for p in k)}.json" for k in keys}
    rows = {k: json.loads(path[k].read_text()) for k in keys if path[k].exists()}
    todo = [k for k in keys if k not in rows]
    settings = (xai_methods, iterations, nr_perturbations, seed, make_suite, call_kwargs)
    with get_executor(backend, address) as ex:  # a Ray backend connects only if a cell is left to compute
        cells, key_of = _cells(ex, todo, grid, metrics, settings)

        def store(cell, result, seconds, cpu_seconds):
            key = key_of[cell.name]
            replace_with(path[key], lambda tmp: tmp.write_text(json.dumps(result)))
            rows[key] = result

        failures = ex.run(cells, store, desc="meta-evaluation grid", progress=display_progressbar,
                          done=len(keys) - len(todo))
    if failures:
        raise cells_failed(failures, len(keys), str(out))
    return pd.DataFrame([r for k in keys for r in rows[k]])


def _check_grid(grid, metrics) -> None:
    if not isinstance(grid, dict) or not grid or not isinstance(metrics, dict) or not metrics:
        raise InvalidArgument("`grid` and `metrics` must be non-empty dicts: {data: {'x': ..., 'encoders': {...}}} "
                              "and {name: metric}.")
    for data, spec in grid.items():
        if not isinstance(spec, dict) or "x" not in spec or not isinstance(spec.get("encoders"), dict) \
                or not spec["encoders"]:
            raise InvalidArgument(f"grid[{data!r}] must be {{'x': inputs, 'encoders': {{name: encoder}}}} with at "
                                  "least one encoder.")


def _open_folder(out_dir) -> Path:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgument(f"Cannot create `out_dir` {str(out)!r}: {exc.strerror or exc}.") from None
    return out


def _cells(ex, todo: list, grid: dict, metrics: dict, settings: tuple) -> tuple:
    """The cells of the (data, encoder, metric) keys ``todo`` and ``{cell name: key}``; each input, encoder and
    metric is shared (sent to Ray's object store) once. ``settings``: :func:`meta_cell`'s arguments from
    ``xai_methods`` to ``call_kwargs``."""
    shared = {}

    def handle(kind, name, obj):
        if (kind, name) not in shared:  # other processes get encoders and tensors on the CPU
            shared[(kind, name)] = ex.share(obj if ex.name == "serial" else portable(obj))
        return shared[(kind, name)]

    cells, key_of = [], {}
    for d, e, m in todo:
        enc = grid[d]["encoders"][e]
        device = str(model_device(enc)) if isinstance(enc, torch.nn.Module) else None
        args = (handle("metric", m, metrics[m]), handle("encoder", (d, e), enc), handle("x", d, grid[d]["x"]),
                d, e, m, *settings, device)
        cells.append(Cell(f"{d}/{e}/{m}", meta_cell, args, num_gpus=gpus_for(device or "cpu")))
        key_of[cells[-1].name] = (d, e, m)
    return cells, key_of
