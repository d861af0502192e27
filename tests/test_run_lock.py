"""One writer per run folder (the lock, with real processes) and a full disk that loses nothing (ENOSPC, EIO)."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lfeval.cli import main
from lfeval.errors import RunLocked, WriteFailed
from lfeval.pipeline import lock as lockmod
from lfeval.pipeline import store as storemod
from lfeval.pipeline.lock import LOCK_FILE, RunLock
from lfeval.pipeline.store import MARKER, StageStore, open_run_folder, remove_run_dir

# the session's encoder settings (tests/conftest.py), so the run loads the cached reconstruction encoder
TINY = """
[run]
pretexts = ["reconstruction"]
epochs = 100
latent_dim = 8
checkpoints = 3
cache_dir = "{cache}"
explainers = ["Saliency", "Random"]
example_methods = []
metrics = ["Sparseness", "Complexity"]
meta_metrics = []
n_explain = 20
"""
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
HOLD = """
import sys, time
from lfeval.pipeline.lock import RunLock
from lfeval.pipeline.store import open_run_folder
open_run_folder(sys.argv[1])
with RunLock(sys.argv[1]) as lock:
    lock.acquire()
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def tiny(tmp_path, encoders, encoder_cache):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY.format(cache=encoder_cache.as_posix()))
    return config


def _cli(config: Path, out: Path, name: str, *extra) -> list:
    return [sys.executable, "-m", "lfeval.cli", "run", "--config", str(config), "--out", str(out), "--name", name,
            *extra]


def _holder(run_dir: Path, seconds: float = 120) -> subprocess.Popen:
    """A real process that takes the folder's lock through the lock API and keeps it ``seconds``."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), str(seconds)], stdout=subprocess.PIPE,
                            text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_fails_fast_naming_the_holder_and_a_killed_holder_is_taken_over(tiny, tmp_path, capsys):
    run_dir = tmp_path / "runs" / "n"
    holder = _holder(run_dir)
    try:
        start = time.perf_counter()
        second = subprocess.run(_cli(tiny, tmp_path / "runs", "n", "--quiet"), capture_output=True, text=True,
                                timeout=120, env=ENV)
        seconds = time.perf_counter() - start
        assert second.returncode == 2, second.stderr
        err = second.stderr.strip()
        assert err.startswith(f"lfeval: error: The run folder {run_dir} is in use by lfeval run (pid {holder.pid} on "
                              "host "), err
        assert "started " in err and "Wait for it to finish (or pass --wait SECONDS" in err and "--name" in err, err
        assert seconds < 20, seconds  # refused before the data or any encoder is loaded
        assert not (run_dir / "stages" / "manifest.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == holder.pid  # the killed holder's document stays
    assert main(["run", "--config", str(tiny), "--out", str(tmp_path / "runs"), "--name", "n"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"warning: taking over the lock of {re.escape(str(run_dir))} left by pid {holder.pid} on host "
                     r".*: a process that is no longer running \(killed\?\)", out), out
    assert (run_dir / "report.html").is_file() and "stage(s) computed" in out
    assert (run_dir / LOCK_FILE).read_text() == ""  # released cleanly: nothing stale for the next run


def test_two_runs_started_together_never_both_compute(tiny, tmp_path):
    """The issue's case: two ``lfeval run`` with the same --name at once; one computes, the other is refused (or,
    if the first finished before it looked, loads every stage)."""
    cmd = _cli(tiny, tmp_path / "runs", "same")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for _ in range(2)]
    results = [(p.pid, *p.communicate(timeout=180), p.returncode) for p in procs]
    codes = sorted(code for *_, code in results)
    computed = sorted(int(re.search(r"(\d+) stage\(s\) computed", out).group(1)) for _, out, _, code in results
                      if code == 0)
    assert codes == [0, 2] or (codes == [0, 0] and computed[0] == 0 < computed[1]), results
    for pid, _, err, code in results:
        if code != 0:
            other = next(p for p, *_ in results if p != pid)
            assert code == 2 and "is in use by" in err, err
            assert f"(pid {other} on host" in err or "its pid is not written yet" in err, err


def test_wait_waits_for_the_holder_to_finish(tmp_path):
    run_dir = tmp_path / "run"
    holder = _holder(run_dir, seconds=1.5)
    notes = []
    try:
        with pytest.raises(RunLocked, match=rf"in use by lfeval run \(pid {holder.pid} on host"):
            RunLock(run_dir).acquire()
        start = time.perf_counter()
        with RunLock(run_dir, wait=60, log=notes.append) as lock:
            lock.acquire()
            assert time.perf_counter() - start > 0.5 and lock.held
            assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == os.getpid()
        assert notes and f"pid {holder.pid}" in notes[0] and "waiting up to 60s (--wait)" in notes[0]
        assert not any("taking over" in n for n in notes)  # a clean release leaves nothing stale
    finally:
        holder.kill()
        holder.wait()
    holder = _holder(run_dir, seconds=30)
    try:
        with pytest.raises(RunLocked, match=f"pid {holder.pid}"):  # a wait that runs out still names the holder
            RunLock(run_dir, wait=0.3, log=notes.append).acquire()
    finally:
        holder.kill()
        holder.wait()
    for bad in ("soon", "-1"):
        with pytest.raises(SystemExit):
            main(["run", "--wait", bad])


def test_another_hosts_lock_is_kept_while_its_heartbeat_is_recent(tmp_path):
    """On a file system that does not share locks between hosts the document decides: a recent heartbeat on
    another host is respected, an old one is taken over with a warning."""
    run_dir = tmp_path / "run"
    open_run_folder(run_dir)
    doc = {"pid": 4242, "host": "elsewhere", "command": "lfeval run", "started": "2026-01-01 00:00:00 UTC"}
    (run_dir / LOCK_FILE).write_text(json.dumps({**doc, "heartbeat": time.time() - 5}))
    with pytest.raises(RunLocked, match=r"pid 4242 on host elsewhere.*last seen \d+s ago.*heartbeat is recent"):
        RunLock(run_dir).acquire()
    (run_dir / LOCK_FILE).write_text(json.dumps({**doc, "heartbeat": time.time() - lockmod.STALE_AFTER - 60}))
    notes = []
    with RunLock(run_dir, log=notes.append) as lock:
        lock.acquire()
    assert len(notes) == 1 and "taking over the lock" in notes[0] and "heartbeat stopped" in notes[0], notes


def test_fresh_keeps_the_lock_file_and_the_lock_file_is_not_a_foreign_file(tmp_path):
    run_dir = tmp_path / "run"
    store = StageStore(run_dir, {"seed": 0})
    store.save("a", {"x": 1})
    with RunLock(run_dir) as lock:
        lock.acquire()
        assert remove_run_dir(run_dir, locked=True)
        assert sorted(p.name for p in run_dir.iterdir()) == sorted([MARKER, LOCK_FILE])
        with pytest.raises(RunLocked):  # still locked: a second writer cannot slip in while the folder is emptied
            RunLock(run_dir).acquire()
        (run_dir / MARKER).unlink()
        assert not StageStore(run_dir, {"seed": 0}).done("a")  # only the lock file left: the folder is reusable


# ---------------------------------------------------------------------------------------------- a full disk
class _FailingFile:
    """A real file whose write (half of the data, then the error) or fsync fails as a full or broken disk does."""

    def __init__(self, fh, code: int, at: str):
        self._fh, self._code, self._at = fh, code, at

    def write(self, data):
        if self._at == "write":
            self._fh.write(data[: len(data) // 2])
            raise OSError(self._code, os.strerror(self._code))
        return self._fh.write(data)

    def fileno(self):
        if self._at == "fsync":  # the fsync that follows reports the delayed error
            raise OSError(self._code, os.strerror(self._code))
        return self._fh.fileno()

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()
        return False


@pytest.mark.parametrize("code, at, said", [
    (errno.ENOSPC, "write", "the disk is full"),
    (errno.ENOSPC, "fsync", "the disk is full"),
    (errno.EIO, "write", "an input/output error"),
    (errno.EIO, "fsync", "an input/output error"),
])
@pytest.mark.parametrize("which", [0, 1, 2])  # fail the stage's JSON, its safetensors, or the manifest
def test_a_failed_stage_write_keeps_the_previous_files(tmp_path, monkeypatch, code, at, said, which):
    store = StageStore(tmp_path / "run", {"seed": 0}, log=lambda *a: None)
    store.save("a", {"x": [1.0, 2.0]})
    stages = tmp_path / "run" / "stages"
    before = {p.name: p.read_bytes() for p in stages.iterdir()}
    calls = []

    def failing_open(path, mode="r", *args, **kwargs):
        fh = open(path, mode, *args, **kwargs)
        calls.append(Path(path))
        return _FailingFile(fh, code, at) if len(calls) - 1 == which else fh

    monkeypatch.setattr(storemod, "open", failing_open, raising=False)
    with pytest.raises(WriteFailed) as info:
        store.save("a", {"x": [3.0, 4.0], "y": "new"})
    monkeypatch.undo()
    target, pid_token, suffix = calls[which].name.rsplit(".", 2)  # <target>.<pid>-<random>.tmp (lfeval.files)
    assert pid_token.startswith(f"{os.getpid()}-") and suffix == "tmp"
    failed = calls[which].with_name(target)
    assert info.value.errno == code and info.value.path == failed
    message = str(info.value)
    assert message.startswith(f"Writing {failed} failed: {said}") and "files stored before are intact" in message
    assert ("Free space on the disk" if code == errno.ENOSPC else "Check the disk") in message
    assert "rerun the same command" in message
    after = {p.name: p.read_bytes() for p in stages.iterdir()}
    assert not [n for n in after if n.endswith(".tmp")]  # the temporary files are removed
    if which < 2:  # the stage's files failed: nothing was replaced
        assert after == before
    else:  # the manifest failed: it still lists the previous files, and the stage loads as it was
        assert after["manifest.json"] == before["manifest.json"]
    assert StageStore(tmp_path / "run", {"seed": 0}, log=lambda *a: None).load("a") == {"x": [1.0, 2.0]}


def test_the_cli_says_the_disk_is_full(tmp_path, monkeypatch, capsys, tiny):
    real = storemod._write_atomic

    def full(files, fault=None):
        if any(p.name.startswith("attributions") for p in files):
            raise storemod._write_failed(next(iter(files)), OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        return real(files, fault)

    monkeypatch.setattr(storemod, "_write_atomic", full)
    assert main(["run", "--config", str(tiny), "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lfeval: error: Writing ") and "the disk is full" in err, err
    assert (tmp_path / "runs" / "default" / LOCK_FILE).read_text() == ""  # the lock was released on the error


def test_cli_wait_runs_once_the_holder_is_done(tiny, tmp_path, capsys):
    holder = _holder(tmp_path / "runs" / "w", seconds=1.0)
    try:
        assert main(["run", "--config", str(tiny), "--out", str(tmp_path / "runs"), "--name", "w", "--wait",
                     "120"]) == 0
    finally:
        holder.kill()
        holder.wait()
    out = capsys.readouterr().out
    assert f"is in use by pid {holder.pid} on host" in out and "waiting up to 120s (--wait)" in out, out
    assert "taking over" not in out and (tmp_path / "runs" / "w" / "report.html").is_file()


def test_the_ray_driver_holds_the_lock_while_its_workers_compute(tiny, tmp_path, monkeypatch):
    """With backend="ray" the driver (this process) takes the lock before the first write and keeps it until
    the last stage is stored; the workers never touch it."""
    pytest.importorskip("ray")
    run_dir = tmp_path / "runs" / "ray"
    seen = []
    record = StageStore.record

    def checked(self, stage, *args, **kwargs):
        doc = json.loads((run_dir / LOCK_FILE).read_text())
        with pytest.raises(RunLocked, match=rf"pid {os.getpid()} on host"):
            RunLock(run_dir).acquire()
        seen.append((stage, doc["pid"]))
        return record(self, stage, *args, **kwargs)

    monkeypatch.setattr(StageStore, "record", checked)
    assert main(["run", "--config", str(tiny), "--out", str(tmp_path / "runs"), "--name", "ray", "--backend", "ray",
                 "--quiet"]) == 0
    assert {s for s, _ in seen} >= {"encoders", "attributions-reconstruction", "scores-reconstruction"}
    assert {pid for _, pid in seen} == {os.getpid()}
    assert (run_dir / LOCK_FILE).read_text() == ""  # released once the job ended
