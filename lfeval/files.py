"""Files written whole or not at all: each write goes to a temporary file of its own beside the target, which is
then renamed over it (``os.replace``, atomic on POSIX). Writers that race to the same file (two runs or Ray workers
sharing a weight cache) each write their own temporary file, so the last rename wins with a whole file and no
writer fails on a temporary file another one renamed away."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable


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


__all__ = ["replace_with", "temporary_name"]
