"""Files written whole or not at all: each write goes to a temporary file of its own beside the target, which is
then renamed over it (``os.replace``, atomic on POSIX). Writers that race to the same file (two runs or Ray workers
sharing a weight cache) each write their own temporary file, so the last rename wins with a whole file and no
writer fails on a temporary file another one renamed away. A writer killed between its write and its rename leaves
its temporary file; the next write of the same file removes such leftovers once they are :data:`STALE_AFTER_S` old."""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import Callable

#: seconds after which another writer's temporary file of the same target is a dead writer's leftover: a live
#: writer renames its file within seconds of writing it (weights, tables: megabytes at most)
STALE_AFTER_S = 3600.0


def temporary_name(path) -> Path:
    """``<path>.<pid>-<random>.tmp`` beside ``path``: a name that no other write, in this process or another, uses.
    It ends in ``.tmp``, so that leftovers of a killed writer are recognised as such."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")


def replace_with(path, write: Callable[[Path], None]) -> None:
    """Write ``path`` whole or not at all: ``write(tmp)`` writes the temporary file :func:`temporary_name`, which
    then replaces ``path``. A write that fails removes its temporary file and re-raises."""
    tmp = temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    remove_stale(path)


def remove_stale(path, older_than: float = STALE_AFTER_S) -> list:
    """Remove the temporary files of ``path`` (named by :func:`temporary_name`) last written more than
    ``older_than`` seconds ago: leftovers of writers killed before their rename. Other files, and the fresh
    temporary files of writers still at work, are left alone. Returns the paths removed."""
    path = Path(path)
    pattern = re.compile(re.escape(path.name) + r"\.\d+-[0-9a-f]{12}\.tmp")
    removed, now = [], time.time()
    try:
        candidates = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return removed
    for tmp in candidates:
        try:
            if now - tmp.stat().st_mtime > older_than:
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # removed by another writer's sweep meanwhile, or not ours to remove
            pass
    return removed


__all__ = ["STALE_AFTER_S", "remove_stale", "replace_with", "temporary_name"]
