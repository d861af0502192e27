"""lfeval.files: whole files or none, each write under a temporary name of its own."""

from __future__ import annotations

import errno

import pytest

from lfeval.files import replace_with, temporary_name


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
