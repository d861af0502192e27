"""``lfeval run``: the stages in order, each stored as soon as it finishes (see :class:`StageStore`).

The encoders are trained (or loaded) first, in this process. The per-encoder stages (attributions,
example importance, scores) and the per-metric meta-evaluations are then independent cells of a grid
(:mod:`lfeval.execution`): run one after the other in this process (``backend = "serial"``, the stage
order below) or as Ray tasks (``backend = "ray"``), a scores stage once the attributions and example
importances it compares are done. Either way this process stores every stage, in one format, so a run
started with one backend can be finished with the other.

This process holds the run folder's lock (:class:`lfeval.pipeline.lock.RunLock`) from before it first writes
the folder until the job ends (Ray workers, which never write, never take it): a second ``lfeval run`` on the
folder stops with :class:`lfeval.errors.RunLocked` naming this one, or waits for it (``wait``).

Every stage computes on the config's ``device`` with its ``precision`` (:mod:`lfeval.precision`); a Ray cell
on CUDA asks for a GPU and moves the encoders to the one it was given (:mod:`lfeval.execution`).

``lfeval report`` draws the report of a finished run again from its tables and stages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .. import precision, threads
from ..config import RunConfig, load_plugins
from ..errors import InvalidArgument, RunIncomplete
from ..execution import Cell, cell_device, cells_failed, get_executor, gpus_for
from . import stages
from .lock import RunLock
from .outputs import render, write_outputs
from .store import StageStore, open_run_folder, remove_run_dir


def _silenced(fn, *args, **kwargs):
    """Run a stage with the run's expected warnings silenced (also inside a worker process)."""
    with stages.expected_warnings_silenced():
        return fn(*args, **kwargs)


def _limited(fn, rd: stages.RunData, *args, **kwargs):
    """:func:`_silenced` with the run's intra-op threads (:meth:`RunData.limited`)."""
    return rd.limited(lambda: _silenced(fn, rd, *args, **kwargs))


def _in_worker(fn, rd: stages.RunData, *args, **kwargs):
    """:func:`_silenced` in a worker process: the run's plugins loaded first (a worker unpickled ``rd`` without
    importing them, so the explainers and metrics they register were unknown there), on the device it was given,
    with the run's precision."""
    load_plugins(rd.plugins)
    rd.to(cell_device(rd.config.device))
    with precision.use(rd.config.precision):
        return _silenced(fn, rd, *args, **kwargs)


def _score(rd: stages.RunData, pretext: str, needed: dict) -> dict:
    """The scores stage of ``pretext`` from the attribution and example stages it needs (by name)."""
    c = rd.config
    attributions = {p: needed[f"attributions-{p}"] for p in c.encoder_names} if c.explainers else {}
    matrices = {p: needed[f"examples-{p}"] for p in c.encoder_names} if c.example_methods else {}
    return stages.score(rd, pretext, attributions, matrices)


def plan(c: RunConfig) -> list:
    """The stages after ``encoders``, in order: ``(name, function, arguments after RunData, needs)``."""
    steps = []
    if c.explainers:
        steps += [(f"attributions-{p}", stages.feature_attributions, (p,), ()) for p in c.encoder_names]
    if c.example_methods:
        steps += [(f"examples-{p}", stages.example_importance, (p,), ()) for p in c.encoder_names]
    needs = tuple(name for name, *_ in steps)
    steps += [(f"scores-{p}", _score, (p,), needs) for p in c.encoder_names]
    if c.pairs is not None:  # pair explanations (config `pairs`): independent of the other stages
        steps += [(f"pairs-{p}", stages.pair_explanations, (p,), ()) for p in c.encoder_names]
    if len(c.encoder_names) > 1:
        steps.append(("pretext", stages.pretext_tables, (), ()))
    steps += [(f"meta-{m}", stages.meta_evaluation, (m,), ()) for m in c.meta_metrics]
    return steps


def run(config: RunConfig, fresh: bool = False, log: Callable = print, wait: float = 0.0) -> Path:
    """Run the main job described by ``config`` and return the path of its ``report.html``.

    Stages: encoders -> attributions (per pretext) -> example importance (per pretext) -> scores
    (per pretext) -> pair explanations (per pretext, with config ``pairs`` only) -> pretext tables ->
    meta-evaluation (per metric, pair metrics included) -> CSVs, plots, report. A rerun loads finished stages
    (recomputing those whose files fail their check or whose data changed, and pair stages and pair metrics'
    meta-evaluations of a changed ``pairs`` file);
    ``fresh=True`` first deletes the run folder, which must be one lfeval created. With
    ``config.backend == "ray"``, stages that fail after their retries are reported together
    (:class:`lfeval.errors.CellsFailed`) once the others are stored. Every stage computes on ``config.device``
    under ``config.precision``, and records both (:class:`StageStore`). The config's resolved settings reach the
    stages one way each: ``device`` and ``precision`` as values, ``threads`` through the run's
    :func:`lfeval.threads.scope`; its ``plugins`` are loaded here (:class:`lfeval.pipeline.stages.RunData`) and
    in each worker process before a cell runs.

    One process at a time writes a run folder: while another holds it, this raises
    :class:`lfeval.errors.RunLocked` naming it, or first waits up to ``wait`` seconds (``math.inf``: until it is
    free); a lock left by a killed process is taken over with a warning (:mod:`lfeval.pipeline.lock`).
    """
    c = config
    lock = RunLock(c.run_dir, wait=wait, log=log)
    lock.check()  # a folder in use: stop before loading anything
    with lock, get_executor(c.backend, c.address) as ex, stages.expected_warnings_silenced(), \
            threads.scope(c.threads), precision.use(c.precision):  # Ray: joined on first use; lock: released last
        rd = stages.RunData(c)  # loads (and checks) the data before anything touches the run folder
        open_run_folder(c.run_dir)
        lock.acquire()
        if fresh and remove_run_dir(c.run_dir, locked=True):
            log(f"[lfeval] --fresh: deleted the stored stages and outputs of {c.run_dir}")
        store = StageStore(c.run_dir, c.to_dict(), fingerprint=rd.ds.fingerprint(), log=log,
                           computed_on={"device": c.device, "precision": c.precision})
        log(f"[lfeval] {rd.ds!r}")
        encoders = store.run("encoders", lambda: rd.limited(lambda: stages.encoder_summary(rd)), log)
        steps = plan(c)
        results = {}
        for name, *_ in steps:
            found, result = store.try_load(name, log)
            if found and stale_pairs(rd, name, result):
                log(f"[lfeval] stage {name!r} was computed for other index pairs than config `pairs` "
                    f"{c.pairs!r} holds now; recomputing it")
            elif found:
                results[name] = result
        todo = [s for s in steps if s[0] not in results]
        if todo:
            if ex.name == "serial":
                shared, wrap = rd, _limited  # each stage gets the run's threads
            else:  # workers get a copy of rd, on the CPU: it must hold every encoder they use
                rd.load_encoders(c.pretext_seeds if any(s[0] == "pretext" for s in todo) else ())
                shared, wrap = ex.share(rd.portable()), _in_worker  # once: data and encoder weights
            cells = [Cell(name, wrap, (fn, shared, *args), needs, num_gpus=gpus_for(c.device))
                     for name, fn, args, needs in todo]

            def keep(cell, result, seconds, cpu_seconds):
                store.record(cell.name, result, seconds, log, cpu_seconds)
                results[cell.name] = result

            failures = ex.run(cells, keep, given=results, desc="stages", progress=not c.quiet,
                              done=len(steps) - len(todo))
            if failures:
                raise cells_failed(failures, len(steps), str(store.dir))
        attributions = {p: results[f"attributions-{p}"] for p in c.encoder_names} if c.explainers else {}
        scored = {p: results[f"scores-{p}"] for p in c.encoder_names}
        pairs = {p: results[f"pairs-{p}"] for p in c.encoder_names} if c.pairs is not None else {}
        pretext = results.get("pretext", pd.DataFrame())
        metas = [stages.meta_table(results[f"meta-{m}"]) for m in c.meta_metrics]
        meta = pd.concat(metas) if metas else pd.DataFrame()
        report = c.run_dir / "report.html"
        if store.computed or not report.exists():  # else every stage was loaded and the report is up to date
            report = rd.limited(lambda: write_outputs(c.run_dir, c, rd, encoders, attributions, scored, pretext,
                                                       meta, pairs))
    log(f"[lfeval] {len(store.computed)} stage(s) computed, {len(store.loaded)} loaded from {store.dir}")
    return report


def stale_pairs(rd: stages.RunData, name: str, result) -> bool:
    """Whether the stored stage ``name`` is a pair stage, or the meta-evaluation of a pair metric (on the first
    ``meta_samples`` pairs), computed for other index pairs than the config's ``pairs`` file holds now (the file is
    named by its path, so its content may have changed since)."""
    if rd.pair_index is None:
        return False
    if name.startswith("pairs-"):
        index = rd.pair_index
    elif name.startswith("meta-") and isinstance(result, dict):
        index = rd.pair_index[:rd.config.meta_samples]
    else:
        return False
    return not (result.get("b_split") == "test" and np.array_equal(result.get("a_index"), index[:, 0])
                and np.array_equal(result.get("b_index"), index[:, 1]))


def stage_names(config: RunConfig) -> list:
    """The stages a finished run of ``config`` has stored, in the order :func:`run` computes them."""
    return ["encoders"] + [name for name, *_ in plan(config)]


def report(run_dir) -> Path:
    """Draw the plots and write ``report.html`` of the finished run in ``run_dir`` again, from its CSVs
    and stored stages (:func:`lfeval.pipeline.outputs.render`, as :func:`run` does); recomputes nothing.
    Returns the report's path."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file() or not (run_dir / "stages").is_dir():
        raise InvalidArgument(f"RUN_DIR {str(run_dir)!r} is not an lfeval run folder (it has no config.json and "
                              "stages/); pass a folder written by `lfeval run`, e.g. runs/default.")
    try:  # nothing is computed: the CPU draws the report of a run computed on any device
        config = RunConfig.from_dict({**json.loads(config_path.read_text()), "device": "cpu"})
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{config_path} is not valid JSON ({exc}); {str(run_dir)!r} is not a readable "
                              "lfeval run folder.") from None
    open_run_folder(run_dir)  # refuses a folder lfeval did not write before the lock file goes into it
    with RunLock(run_dir, command="lfeval report") as lock:
        lock.acquire()
        return _report(run_dir, config)


def _report(run_dir: Path, config: RunConfig) -> Path:
    store = StageStore(run_dir)
    missing = [s for s in stage_names(config) if not store.done(s)]
    if missing:
        named = ", ".join(map(repr, missing[:3])) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise RunIncomplete(f"{run_dir} is an unfinished run: stage(s) {named} not stored. Run `lfeval run` again "
                            "with the same settings to finish it, then `lfeval report`.")
    with stages.expected_warnings_silenced():
        rd = stages.RunData(config)
        attributions = ({p: store.load(f"attributions-{p}") for p in config.encoder_names} if config.explainers
                        else {})
        scored = {p: store.load(f"scores-{p}") for p in config.encoder_names}
        pairs = {p: store.load(f"pairs-{p}") for p in config.encoder_names} if config.pairs is not None else {}
        return render(run_dir, config, rd, attributions, scored, pairs)
