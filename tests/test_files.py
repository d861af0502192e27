"""lfeval.files: whole files or none, each write under a temporary name of its own."""

from __future__ import annotations

import errno
import os
import time

import pytest

from lfeval.files import STALE_AFTER_S, remove_stale, replace_with, temporary_name


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "table.json"
    path.write_text("old")

    def write(tmp):
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        replace_with(path, write)
    assert path.read_text() == "old" and list(tmp_path.iterdir()) == [path]
    replace_with(path, lambda tmp: tmp.write_text("new"))
    assert path.read_text() == "new" and list(tmp_path.iterdir()) == [path]


def test_every_write_has_its_own_temporary_name(tmp_path):
    names = {temporary_name(tmp_path / "w.pt") for _ in range(100)}
    assert len(names) == 100 and all(n.parent == tmp_path and n.name.startswith("w.pt.") for n in names)
    assert all(n.suffix == ".tmp" for n in names)  # what a run folder's cleanup removes (*.tmp)


def test_a_killed_writers_leftover_is_removed_once_stale_and_a_live_writers_is_kept(tmp_path):
    path = tmp_path / "w.pt"
    dead, live = temporary_name(path), temporary_name(path)  # a writer killed long ago, one at work now
    other = temporary_name(tmp_path / "v.pt")  # another file's leftover: not this write's business
    for p in (dead, live, other):
        p.write_text("partial")
    old = time.time() - STALE_AFTER_S - 60
    os.utime(dead, (old, old))
    os.utime(other, (old, old))
    user = tmp_path / "w.pt.backup.tmp"  # a .tmp of the user's, not named by temporary_name
    user.write_text("mine")
    os.utime(user, (old, old))

    replace_with(path, lambda tmp: tmp.write_text("whole"))
    assert path.read_text() == "whole"
    assert not dead.exists() and live.exists() and other.exists() and user.exists()
    assert remove_stale(tmp_path / "v.pt") == [other] and not other.exists()
