"""Resumable stage results of a run, stored so that nothing is lost and nothing stored can run code.

``<run_dir>/stages/<stage>.json`` (structure) and ``<stage>.safetensors`` (arrays) hold each finished
stage (:mod:`lfeval.pipeline.codec`); ``<run_dir>/stages/manifest.json`` lists the finished stages with
the SHA-256 of their files, the lfeval version and the fingerprint of the data they were computed on.

* **Atomic**: a stage's files are all written under temporary names and flushed to disk before any is
  renamed into place; the manifest is updated last. A run killed mid-write leaves no file that a rerun would
  load. A write that fails (a full disk, ``ENOSPC``; an I/O error, ``EIO``) removes its temporary files, leaves
  the files stored before as they were and stops with :class:`lfeval.errors.WriteFailed` naming the file.
* **One writer**: ``lfeval run`` holds the folder's lock (:mod:`lfeval.pipeline.lock`) while it writes.
* **Verified**: a stage loads only if its files match their hashes and decode; otherwise the file is
  named in the log and the stage is recomputed.
* **Fresh**: when the data's fingerprint or the lfeval version differ from those of the stored stages,
  every stage is recomputed, and the log says why.
* **Where computed**: each stage records the device and precision it was computed with (``computed_on``). A
  resume on another kind of device keeps the stored stages and logs it (with precision ``"highest"`` CUDA equals
  the CPU within 1e-4 relative), and refuses under ``"tf32"``/``"bf16"``, whose GPU results differ more.
* **Safe to delete**: the folder carries a marker file (``.lfeval-run``); :func:`remove_run_dir`
  (``--fresh``) deletes only a folder that has it, never anything above or beside it.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from ..errors import InvalidArgument, RunIncomplete, WriteFailed
from ..files import temporary_name
from . import codec
from .lock import LOCK_FILE

#: config keys that do not change any result (a rerun may differ in them); ``device`` changes the last digits
#: only, and is checked per stage (``computed_on``)
_COSMETIC = ("name", "out_dir", "quiet", "cache_dir", "threads", "backend", "address", "device", "cuda_graph")
#: the precision under which CUDA and the CPU agree within tolerance (lfeval.precision)
_EXACT = "highest"
MARKER = ".lfeval-run"
FORMAT = 1
#: fault injection for the tests: "kill-during-write:<stage>" SIGKILLs the process halfway through writing it
FAULT_ENV = "LFEVAL_FAULT_INJECT"


class StageMissing(RunIncomplete):
    """A stage is not stored (or its files failed their check)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_failed(path: Path, exc: OSError) -> WriteFailed:
    """The error of a write to ``path`` that failed with ``exc``: what happened and what to do."""
    code = exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        what, todo = (f"the disk is full ({exc.strerror or 'no space left on device'})",
                      f"Free space on the disk holding {path.parent} (or choose another --out)")
    elif code == errno.EIO:
        what, todo = (f"an input/output error ({exc.strerror or 'EIO'}): the disk or network file system failed",
                      f"Check the disk holding {path.parent}")
    else:
        what, todo = exc.strerror or str(exc), f"Check that {path.parent} is writable"
    return WriteFailed(f"Writing {path} failed: {what}. The files stored before are intact (the new file was "
                       f"written under a temporary name, now removed). {todo}, then rerun the same command: the "
                       "finished stages are kept and the run resumes.", path=path, errno=code)


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (the renames into it) to disk, where the platform allows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # not supported for folders here
        pass
    finally:
        os.close(fd)


def _write_atomic(files: dict, fault: Optional[Path] = None) -> None:
    """Write ``{path: bytes}``: every file under a temporary name, flushed to disk, then all renamed into place,
    so that a failure part-way (a kill, a full disk) leaves the previous files as they were. A failed write
    removes the temporary files and raises :class:`WriteFailed`. ``fault`` (tests): the file during whose write
    the process SIGKILLs itself, halfway through."""
    written, path = [], None
    try:
        for path, data in files.items():
            tmp = temporary_name(path)  # this write's own: runs may race to start
            written.append((tmp, path))
            with open(tmp, "wb") as fh:
                if path == fault:  # write half, make it visible, then die as a SIGKILL would
                    fh.write(data[: len(data) // 2])
                    fh.flush()
                    os.fsync(fh.fileno())
                    os.kill(os.getpid(), signal.SIGKILL)
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        for tmp, path in written:
            os.replace(tmp, path)
    except OSError as exc:
        for tmp, _ in written:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        raise _write_failed(path, exc) from exc
    for folder in {p.parent for p in files}:
        _fsync_dir(folder)


def _kind(device: str) -> str:
    """The kind of a device ("cuda:1" -> "cuda"): devices of one kind compute alike."""
    return str(device).split(":")[0]


def remove_run_dir(run_dir: Path, locked: bool = False) -> bool:
    """Delete ``run_dir`` if lfeval created it (it holds the marker file); return whether it existed.

    Refuses (with an error) a symlink or a folder without the marker: ``--fresh`` never deletes data
    lfeval did not write. ``locked``: the caller holds the folder's lock (:mod:`lfeval.pipeline.lock`); the
    folder, its marker and its lock file stay (deleting the lock file would let a second writer in) and
    everything else in it is deleted.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists() and not run_dir.is_symlink():
        return False
    if run_dir.is_symlink() or not run_dir.is_dir() or not (run_dir / MARKER).is_file():
        raise InvalidArgument(
            f"--fresh refuses to delete {run_dir}: it is not a run folder lfeval created (no {MARKER} marker "
            "inside). Move it away or choose another --name."
        )
    if not locked:
        shutil.rmtree(run_dir)
        return True
    for child in run_dir.iterdir():
        if child.name in (MARKER, LOCK_FILE):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    return True


def open_run_folder(run_dir: Path) -> None:
    """Create ``run_dir`` (and ``stages/``) with its marker, or check that an existing one is lfeval's: a
    non-folder, or a non-empty folder without the marker (its lock file aside), is refused."""
    d = Path(run_dir)
    if d.exists() and not d.is_dir():
        raise InvalidArgument(f"{d} exists and is not a folder; choose another --name or --out.")
    # the lock file, and the marker being written by another run starting at the same time, are lfeval's
    if d.is_dir() and any(not p.name.startswith(MARKER) and p.name != LOCK_FILE for p in d.iterdir()) \
            and not (d / MARKER).is_file():
        raise InvalidArgument(f"{d} holds files that lfeval did not write (no {MARKER} marker); choose another "
                              "--name or --out, lfeval will not write into it.")
    try:
        d.mkdir(parents=True, exist_ok=True)
        if not (d / MARKER).is_file():  # the marker first, then anything else
            _write_atomic({d / MARKER: b"A folder written by lfeval run; `lfeval run --fresh` may delete it.\n"})
        (d / "stages").mkdir(exist_ok=True)
    except WriteFailed as exc:
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EIO):
            raise
        raise InvalidArgument(f"Cannot write the run folder {d}: {exc.__cause__.strerror or exc.__cause__}. Choose "
                              "a writable --out.") from None
    except OSError as exc:
        raise InvalidArgument(f"Cannot write the run folder {d}: {exc.strerror or exc}. Choose a writable "
                              "--out.") from None


class StageStore:
    """Finished stages of one run in ``<run_dir>/stages`` (see the module docstring).

    Parameters
    ----------
    run_dir : path
        The run's folder; created (with its marker) if missing. An existing non-empty folder without
        the marker is refused.
    config : dict, optional
        The run's settings, kept in ``config.json``. Reopening a folder whose stored stages came from
        other settings is refused (pass ``--fresh`` or another ``--name``).
    fingerprint : str, optional
        A hash of the loaded data; stages stored for other data (or another lfeval version) are recomputed.
    log : callable
        Where notes about recomputed stages go.
    computed_on : dict, optional
        ``{"device": ..., "precision": ...}`` of the stages computed now, recorded with each of them; stored
        stages computed on another kind of device are kept with a note, or refused unless the precision is
        ``"highest"`` (see the module docstring).
    """

    def __init__(self, run_dir: Path, config: Optional[dict] = None, fingerprint: Optional[str] = None,
                 log: Callable = print, computed_on: Optional[dict] = None):
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "stages"
        self.log = log
        self._open_folder()
        self.computed, self.loaded, self.recomputed = [], [], []
        self.state = {"format": FORMAT, "lfeval": importlib.metadata.version("lfeval"), "data": fingerprint}
        self.manifest = self._read_manifest()
        self.computed_on = computed_on
        if config is not None:
            self._check_config(config)
        self._check_fresh()
        self._check_devices()

    # ------------------------------------------------------------------ the folder
    def _open_folder(self) -> None:
        open_run_folder(self.run_dir)
        for tmp in self.dir.glob("*.tmp"):  # leftovers of a run killed mid-write: never loaded
            tmp.unlink(missing_ok=True)

    def _read_manifest(self) -> dict:
        path = self.dir / "manifest.json"
        empty = {**self.state, "stages": {}}
        if not path.exists():
            return empty
        try:
            manifest = json.loads(path.read_text())
            if not isinstance(manifest.get("stages"), dict):
                raise ValueError("no stage table")
            return manifest
        except (ValueError, OSError) as exc:
            self.log(f"[lfeval] {path} is unreadable ({exc}); every stage will be recomputed")
            return empty

    def _check_config(self, config: dict) -> None:
        path = self.run_dir / "config.json"
        if path.exists() and self.manifest["stages"]:
            try:
                old = json.loads(path.read_text())
            except ValueError:
                old = None
            if old is not None:
                changed = sorted(k for k in set(old) | set(config)
                                 if k not in _COSMETIC and old.get(k) != json.loads(json.dumps(config.get(k),
                                                                                                 default=str)))
                if changed:
                    raise InvalidArgument(
                        f"{self.run_dir} holds a run with other settings ({', '.join(changed)} differ); pass --fresh "
                        "to start it again, or --name to run under another name."
                    )
        data = json.dumps(config, indent=2, default=str).encode()
        if not path.is_file() or path.read_bytes() != data:
            _write_atomic({path: data})

    def _check_fresh(self) -> None:
        reasons = []
        for key, what in (("data", "the data (its fingerprint)"), ("lfeval", "the lfeval version"),
                          ("format", "the stage format")):
            old, new = self.manifest.get(key), self.state[key]
            if self.manifest["stages"] and new is not None and old != new:
                reasons.append(f"{what} changed: {old} -> {new}")
        if reasons:
            self.log(f"[lfeval] {'; '.join(reasons)}: recomputing every stored stage of {self.run_dir}")
            self.recomputed.extend(self.manifest["stages"])
            self.manifest = {**self.state, "stages": {}}
            self._write_manifest()

    def _check_devices(self) -> None:
        """Note (or, unless the precision is exact, refuse) stored stages computed on another kind of device."""
        if self.computed_on is None:
            return
        device = self.computed_on["device"]
        other = {}
        for stage, entry in self.manifest["stages"].items():
            was = (entry.get("computed_on") or {}).get("device")
            if was is not None and _kind(was) != _kind(device):
                other.setdefault(was, []).append(stage)
        if not other:
            return
        where = "; ".join(f"{len(stages)} on {was}" for was, stages in other.items())
        precision = self.computed_on.get("precision", _EXACT)
        if precision != _EXACT:
            raise InvalidArgument(
                f"{self.run_dir} holds stages computed on another device ({where}) with precision {precision!r}, "
                f"whose results differ from {device}'s by more than the 1e-4 tolerance; resume it with device="
                f"{next(iter(other))!r}, or pass --fresh to recompute every stage on {device}.")
        self.log(f"[lfeval] stored stages were computed on another device ({where}); this run computes on {device}. "
                 "They are kept: with precision 'highest' the devices agree within 1e-4 relative (--fresh "
                 "recomputes them all here).")

    def _write_manifest(self, manifest: Optional[dict] = None) -> None:
        """Write ``manifest`` (default: the current one) and make it current once it is on disk."""
        manifest = {**(self.manifest if manifest is None else manifest), **self.state}
        _write_atomic({self.dir / "manifest.json": json.dumps(manifest, indent=1).encode()})
        self.manifest = manifest

    # ------------------------------------------------------------------ stages
    @staticmethod
    def _file_stem(stage: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", stage)

    def done(self, stage: str) -> bool:
        return stage in self.manifest["stages"]

    def load(self, stage: str):
        """The stored result of ``stage``; :class:`StageMissing` (naming the file) if absent or damaged."""
        entry = self.manifest["stages"].get(stage)
        if entry is None:
            raise StageMissing(f"Stage {stage!r} is not stored in {self.dir}: the run did not finish. Run `lfeval run` "
                               "again with the same settings to finish it.")
        parts = {}
        for kind, expected in entry["files"].items():
            path = self.dir / f"{self._file_stem(stage)}.{kind}"
            try:
                data = path.read_bytes()
            except OSError:
                raise StageMissing(f"Stage {stage!r}: {path} is missing.") from None
            if _sha256(data) != expected:
                raise StageMissing(f"Stage {stage!r}: {path} fails its SHA-256 check (changed or half-written).")
            parts[kind] = data
        try:
            return codec.decode(json.loads(parts["json"]), load_arrays(parts["safetensors"]))
        except Exception as exc:  # any decoding failure means the file is not what lfeval wrote
            raise StageMissing(f"Stage {stage!r}: {self.dir / self._file_stem(stage)}.* cannot be decoded "
                               f"({type(exc).__name__}: {exc}).") from None

    def save(self, stage: str, result) -> None:
        """Store ``result`` atomically and record it in the manifest (last)."""
        document, arrays = codec.encode(result)
        files = {"json": json.dumps(document).encode(), "safetensors": save_arrays(arrays or {"_": np.zeros(0)})}
        paths = {self.dir / f"{self._file_stem(stage)}.{kind}": data for kind, data in files.items()}
        entry = {"files": {k: _sha256(v) for k, v in files.items()},
                 **({"computed_on": self.computed_on} if self.computed_on else {})}
        manifest = {**self.manifest, "stages": {**self.manifest["stages"], stage: entry}, **self.state}
        # one batch: a failed write (full disk) replaces nothing; the manifest is renamed last
        paths[self.dir / "manifest.json"] = json.dumps(manifest, indent=1).encode()
        fault = os.environ.get(FAULT_ENV, "") == f"kill-during-write:{stage}"
        _write_atomic(paths, fault=list(paths)[1] if fault else None)
        self.manifest = manifest

    def try_load(self, stage: str, log: Optional[Callable] = None) -> tuple:
        """``(True, result)`` if ``stage`` is stored and passes its check, else ``(False, None)`` (a damaged
        stage is named in the log and dropped from the manifest, to be recomputed)."""
        if not self.done(stage):
            return False, None
        try:
            result = self.load(stage)
        except StageMissing as exc:
            (log or self.log)(f"[lfeval] {exc} Recomputing it.")
            self.manifest["stages"].pop(stage, None)
            self.recomputed.append(stage)
            return False, None
        self.loaded.append(stage)
        return True, result

    def record(self, stage: str, result, seconds: float, log: Optional[Callable] = None,
               cpu_seconds: Optional[float] = None) -> None:
        """Store a freshly computed stage (whichever process computed it) and log it, with its CPU
        seconds where known: on a busy machine the wall time grows, the CPU time barely."""
        self.save(stage, result)
        self.computed.append(stage)
        cpu = "" if cpu_seconds is None else f" (CPU {cpu_seconds:.1f}s)"
        (log or self.log)(f"[lfeval] stage {stage!r} done in {seconds:.1f}s{cpu}")

    def run(self, stage: str, compute: Callable, log: Optional[Callable] = None):
        """Return the stored result of ``stage``, or compute, store and return it."""
        found, result = self.try_load(stage, log)
        if found:
            return result
        start, cpu = time.perf_counter(), time.process_time()
        result = compute()
        self.record(stage, result, time.perf_counter() - start, log, time.process_time() - cpu)
        return result
