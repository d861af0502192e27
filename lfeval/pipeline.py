"""The main job behind ``lfeval run``: resumable stages from data to report.

Each stage stores its result under ``runs/<name>/stages/<stage>.pkl`` as soon as it finishes;
a rerun loads finished stages instead of recomputing them, so an interrupted run continues
where it stopped. ``fresh=True`` deletes the stored stages first.
"""

from __future__ import annotations

import json
import pickle
import shutil
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from . import data as data_mod
from .config import RunConfig
from .models import probe_accuracy, train_encoder


class StageStore:
    """Pickled stage results in ``<run_dir>/stages``, written atomically."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, stage: str) -> Path:
        return self.dir / f"{stage}.pkl"

    def run(self, stage: str, compute: Callable, log: Callable = print):
        """Return the stored result of ``stage``, or compute, store and return it."""
        path = self.path(stage)
        if path.exists():
            with path.open("rb") as fh:
                return pickle.load(fh)
        start = time.perf_counter()
        result = compute()
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            pickle.dump(result, fh)
        tmp.replace(path)
        log(f"[lfeval] stage {stage!r} done in {time.perf_counter() - start:.1f}s")
        return result


def run(config: RunConfig, fresh: bool = False, log: Callable = print) -> Path:
    """Run the main job described by ``config``; return the run directory."""
    run_dir = config.run_dir
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    store = StageStore(run_dir)
    torch.manual_seed(config.seed)

    ds = data_mod.load(config.data, root=config.data_root, seed=config.seed)
    encoders = {
        p: train_encoder(ds, pretext=p, latent_dim=config.latent_dim, epochs=config.epochs, seed=config.seed,
                         cache_dir=config.cache_dir, checkpoints=3, display_progressbar=not config.quiet)
        for p in config.pretexts
    }

    def summary():
        rows = [{"pretext": p, "epochs": len(e.history["val_loss"]), "best_val_loss": min(e.history["val_loss"]),
                 "probe_accuracy": probe_accuracy(e, ds)} for p, e in encoders.items()]
        return pd.DataFrame(rows).set_index("pretext")

    table = store.run("encoders", summary, log)
    table.to_csv(run_dir / "encoders.csv")
    log(f"[lfeval] {ds!r}")
    log(table.round(4).to_string())
    return run_dir
