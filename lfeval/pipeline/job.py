"""``lfeval run``: the stages in order, each stored as soon as it finishes (see :class:`StageStore`);
``lfeval report``: the report of a finished run drawn again from its tables and stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pandas as pd

from ..config import RunConfig
from ..errors import InvalidArgument, RunIncomplete
from . import stages
from .outputs import render, write_outputs
from .store import StageStore, remove_run_dir


def run(config: RunConfig, fresh: bool = False, log: Callable = print) -> Path:
    """Run the main job described by ``config`` and return the path of its ``report.html``.

    Stages: encoders -> attributions (per pretext) -> example importance (per pretext) -> scores
    (per pretext) -> pretext tables -> meta-evaluation (per metric) -> CSVs, plots, report. A rerun
    loads finished stages (recomputing those whose files fail their check or whose data changed);
    ``fresh=True`` first deletes the run folder, which must be one lfeval created.
    """
    c = config
    with stages.expected_warnings_silenced():
        rd = stages.RunData(c)  # loads (and checks) the data before anything touches the run folder
        if fresh and remove_run_dir(c.run_dir):
            log(f"[lfeval] --fresh: deleted {c.run_dir}")
        store = StageStore(c.run_dir, c.to_dict(), fingerprint=rd.ds.fingerprint(), log=log)
        log(f"[lfeval] {rd.ds!r}")
        encoders = store.run("encoders", lambda: stages.encoder_summary(rd), log)
        attributions = {p: store.run(f"attributions-{p}", lambda p=p: stages.feature_attributions(rd, p), log)
                        for p in c.pretexts} if c.explainers else {}
        matrices = {p: store.run(f"examples-{p}", lambda p=p: stages.example_importance(rd, p), log)
                    for p in c.pretexts} if c.example_methods else {}
        scored = {p: store.run(f"scores-{p}", lambda p=p: stages.score(rd, p, attributions, matrices), log)
                  for p in c.pretexts}
        pretext = (store.run("pretext", lambda: stages.pretext_tables(rd), log) if len(c.pretexts) > 1
                   else pd.DataFrame())
        metas = [store.run(f"meta-{m}", lambda m=m: stages.meta_evaluation(rd, m), log) for m in c.meta_metrics]
        meta = pd.concat(metas) if metas else pd.DataFrame()
        report = c.run_dir / "report.html"
        if store.computed or not report.exists():  # else every stage was loaded and the report is up to date
            report = write_outputs(c.run_dir, c, rd, encoders, attributions, scored, pretext, meta)
    log(f"[lfeval] {len(store.computed)} stage(s) computed, {len(store.loaded)} loaded from {store.dir}")
    return report


def stage_names(config: RunConfig) -> list:
    """The stages a finished run of ``config`` has stored, in the order :func:`run` computes them."""
    c = config
    return (["encoders"] + ([f"attributions-{p}" for p in c.pretexts] if c.explainers else [])
            + ([f"examples-{p}" for p in c.pretexts] if c.example_methods else [])
            + [f"scores-{p}" for p in c.pretexts] + (["pretext"] if len(c.pretexts) > 1 else [])
            + [f"meta-{m}" for m in c.meta_metrics])


def report(run_dir) -> Path:
    """Draw the plots and write ``report.html`` of the finished run in ``run_dir`` again, from its CSVs
    and stored stages (:func:`lfeval.pipeline.outputs.render`, as :func:`run` does); recomputes nothing.
    Returns the report's path."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file() or not (run_dir / "stages").is_dir():
        raise InvalidArgument(f"RUN_DIR {str(run_dir)!r} is not an lfeval run folder (it has no config.json and "
                              "stages/); pass a folder written by `lfeval run`, e.g. runs/default.")
    try:
        config = RunConfig.from_dict(json.loads(config_path.read_text()))
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{config_path} is not valid JSON ({exc}); {str(run_dir)!r} is not a readable "
                              "lfeval run folder.") from None
    store = StageStore(run_dir)
    missing = [s for s in stage_names(config) if not store.done(s)]
    if missing:
        named = ", ".join(map(repr, missing[:3])) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise RunIncomplete(f"{run_dir} is an unfinished run: stage(s) {named} not stored. Run `lfeval run` again "
                            "with the same settings to finish it, then `lfeval report`.")
    with stages.expected_warnings_silenced():
        rd = stages.RunData(config)
        attributions = ({p: store.load(f"attributions-{p}") for p in config.pretexts} if config.explainers
                        else {})
        scored = {p: store.load(f"scores-{p}") for p in config.pretexts}
        return render(run_dir, config, rd, attributions, scored)
