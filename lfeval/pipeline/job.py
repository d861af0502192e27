"""``lfeval run``: the stages in order, each stored as soon as it finishes (see :class:`StageStore`)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from .. import threads
from ..config import RunConfig
from . import stages
from .outputs import write_outputs
from .store import StageStore, remove_run_dir


def run(config: RunConfig, fresh: bool = False, log: Callable = print) -> Path:
    """Run the main job described by ``config`` and return the path of its ``report.html``.

    Stages: encoders -> attributions (per pretext) -> example importance (per pretext) -> scores
    (per pretext) -> pretext tables -> meta-evaluation (per metric) -> CSVs, plots, report. A rerun
    loads finished stages (recomputing those whose files fail their check or whose data changed);
    ``fresh=True`` first deletes the run folder, which must be one lfeval created.
    """
    c = config
    with stages.expected_warnings_silenced(), threads.scope(c.threads):
        rd = stages.RunData(c)  # loads (and checks) the data before anything touches the run folder
        if fresh and remove_run_dir(c.run_dir):
            log(f"[lfeval] --fresh: deleted {c.run_dir}")
        store = StageStore(c.run_dir, c.to_dict(), fingerprint=rd.ds.fingerprint(), log=log)
        log(f"[lfeval] {rd.ds!r}")

        def stage(name: str, compute: Callable):
            return store.run(name, lambda: rd.limited(compute), log)

        encoders = stage("encoders", lambda: stages.encoder_summary(rd))
        attributions = {p: stage(f"attributions-{p}", lambda p=p: stages.feature_attributions(rd, p))
                        for p in c.pretexts} if c.explainers else {}
        matrices = {p: stage(f"examples-{p}", lambda p=p: stages.example_importance(rd, p))
                    for p in c.pretexts} if c.example_methods else {}
        scored = {p: stage(f"scores-{p}", lambda p=p: stages.score(rd, p, attributions, matrices))
                  for p in c.pretexts}
        pretext = stage("pretext", lambda: stages.pretext_tables(rd)) if len(c.pretexts) > 1 else pd.DataFrame()
        metas = [stage(f"meta-{m}", lambda m=m: stages.meta_evaluation(rd, m)) for m in c.meta_metrics]
        meta = pd.concat(metas) if metas else pd.DataFrame()
        report = c.run_dir / "report.html"
        if store.computed or not report.exists():  # else every stage was loaded and the report is up to date
            report = rd.limited(lambda: write_outputs(c.run_dir, c, rd, encoders, attributions, scored, pretext,
                                                       meta))
    log(f"[lfeval] {len(store.computed)} stage(s) computed, {len(store.loaded)} loaded from {store.dir}")
    return report
