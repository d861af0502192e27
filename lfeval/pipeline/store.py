"""Resumable stage results of a run: ``<run_dir>/stages/<stage>.pkl``, written atomically."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path
from typing import Callable

from ..errors import InvalidArgument, RunIncomplete

#: config keys that do not change any result (a rerun may differ in them)
_COSMETIC = ("name", "out_dir", "quiet", "cache_dir")


class StageStore:
    """Pickled stage results in ``<run_dir>/stages``.

    A stage is stored as soon as it finishes; a rerun loads it instead of recomputing, so an
    interrupted run continues with the first unfinished stage. The run's settings are kept in
    ``<run_dir>/config.json``; reopening the folder with different settings is refused, as the
    stored stages would silently mix two runs.
    """

    def __init__(self, run_dir: Path, config: dict | None = None):
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.computed, self.loaded = [], []
        if config is not None:
            self._check_config(config)

    def _check_config(self, config: dict) -> None:
        path = self.run_dir / "config.json"
        if path.exists():
            old = json.loads(path.read_text())
            changed = sorted(k for k in set(old) | set(config) if k not in _COSMETIC and old.get(k) != config.get(k))
            if changed and any(self.dir.iterdir()):
                raise InvalidArgument(
                    f"{self.run_dir} holds a run with other settings ({', '.join(changed)} differ); pass --fresh to "
                    "start it again, or --name to run under another name."
                )
        path.write_text(json.dumps(config, indent=2, default=str))

    def path(self, stage: str) -> Path:
        return self.dir / f"{stage}.pkl"

    def done(self, stage: str) -> bool:
        return self.path(stage).exists()

    def load(self, stage: str):
        """The stored result of ``stage``; :class:`RunIncomplete` naming the stage if it is not stored."""
        path = self.path(stage)
        if not path.exists():
            raise RunIncomplete(f"Stage {stage!r} is not stored in {self.dir}: the run did not finish. Run "
                                "`lfeval run` again with the same settings to finish it.")
        with path.open("rb") as fh:
            return pickle.load(fh)

    def run(self, stage: str, compute: Callable, log: Callable = print):
        """Return the stored result of ``stage``, or compute, store and return it."""
        path = self.path(stage)
        if path.exists():
            self.loaded.append(stage)
            return self.load(stage)
        start = time.perf_counter()
        result = compute()
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            pickle.dump(result, fh)
        tmp.replace(path)
        self.computed.append(stage)
        log(f"[lfeval] stage {stage!r} done in {time.perf_counter() - start:.1f}s")
        return result
