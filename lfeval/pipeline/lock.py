"""One writer per run folder: ``<run_dir>/.lfeval-lock``.

``lfeval run`` (and ``lfeval report``) hold an exclusive ``fcntl.flock`` on the lock file from the moment they
first write the folder to the end of the job, exceptions included; with ``backend="ray"`` the driver, the one
process that writes stages, holds it (workers never write, so never need it). The file also holds a small JSON
document, the holder's pid, host, start time and a heartbeat (rewritten every :data:`HEARTBEAT` seconds), which
the error of a second writer quotes:

* **In use**: a second ``lfeval run`` on the folder stops with :class:`lfeval.errors.RunLocked` naming the
  holder, or, given ``wait`` seconds (``--wait``), waits for it that long.
* **Stale**: the operating system drops the lock of a process that dies (``SIGKILL`` included). The next run
  takes it over, with a warning naming the dead holder (its document is left behind; a clean release empties
  it). On a file system that does not share locks between hosts, the document decides: a holder on another
  host is taken over once its heartbeat is older than :data:`STALE_AFTER` seconds, one on this host once its
  pid is gone.
"""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from ..errors import InvalidArgument, RunLocked

try:  # POSIX; elsewhere the JSON document alone decides (see the module docstring)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_FILE = ".lfeval-lock"
#: seconds between two heartbeats of the holder
HEARTBEAT = 30.0
#: a holder on another host whose heartbeat is older than this is taken to be dead
STALE_AFTER = 120.0
_POLL = 0.25


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return True


def _read(fd: int) -> Optional[dict]:
    """The holder's document in the open lock file, or None (empty: released cleanly, or being written)."""
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, min(size, 65536), 0) if size else b""
        info = json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def _describe(info: dict) -> str:
    beat = info.get("heartbeat")
    seen = f", last seen {max(0, time.time() - beat):.0f}s ago" if isinstance(beat, (int, float)) else ""
    return f"pid {info['pid']} on host {info.get('host', '?')}, started {info.get('started', '?')}{seen}"


class RunLock:
    """The lock of the run folder ``run_dir`` (see the module docstring); use it as a context manager and call
    :meth:`acquire` once the folder may be written (:meth:`__exit__` releases it, on errors too).

    Parameters
    ----------
    run_dir : path
        The run's folder; it must exist when :meth:`acquire` is called.
    wait : float
        Seconds to wait for another holder to finish before giving up (``math.inf``: as long as it takes);
        0 (default) stops at once with :class:`lfeval.errors.RunLocked`.
    log : callable
        Where the notes about waiting and the warning about a stale lock go (default: standard error).
    command : str
        What holds the lock, quoted in another process's error.
    """

    def __init__(self, run_dir, wait: float = 0.0, log: Callable = _warn, command: str = "lfeval run"):
        if wait is None or not (isinstance(wait, (int, float)) and wait >= 0):
            raise InvalidArgument(f"`wait` (--wait) must be a number of seconds >= 0, got {wait!r}.")
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.wait, self.log, self.command = float(wait), log, command
        self._fd = None
        self._stop = threading.Event()
        self._beat = None
        self._info = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    # ------------------------------------------------------------------ messages
    def _in_use(self, info: Optional[dict], why: str = "") -> RunLocked:
        if info is None:
            who = "another lfeval process (it is starting: its pid is not written yet)"
        elif info.get("host") == socket.gethostname() and not _alive(info["pid"]):
            who = (f"a process started by {info.get('command', 'lfeval')} ({_describe(info)}), which is no longer "
                   f"running; a process it started still holds {self.path} (find it with `fuser {self.path}` and "
                   "end it)")
        else:
            who = f"{info.get('command', 'lfeval')} ({_describe(info)})"
        return RunLocked(f"The run folder {self.run_dir} is in use by {who}{why}: one run folder has one writer. "
                         "Wait for it to finish (or pass --wait SECONDS to wait for it), or run under another "
                         "--name.")

    def _stale(self, info: dict, flocked: bool) -> Optional[str]:
        """Why the holder named in a lock file we could lock is stale (None: it may still be running)."""
        here = info.get("host") == socket.gethostname()
        if here:
            if info["pid"] == os.getpid():
                return "this process (an earlier run in it that ended without releasing it)"
            if flocked or not _alive(info["pid"]):  # the OS dropped its lock: it died (or the pid was reused)
                return "a process that is no longer running (killed?)"
            return None
        beat = info.get("heartbeat")
        age = time.time() - beat if isinstance(beat, (int, float)) else math.inf
        if age > STALE_AFTER:
            return f"a process on another host whose heartbeat stopped {age:.0f}s ago"
        return None

    # ------------------------------------------------------------------ taking and releasing
    def check(self) -> None:
        """Fail fast (before any slow work) if another process holds the lock and ``wait`` is 0; takes nothing."""
        if self.wait or fcntl is None or not self.path.is_file():
            return
        try:
            fd = os.open(self.path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._in_use(_read(fd)) from None
        except OSError:
            return
        finally:
            os.close(fd)  # closing drops a lock taken here

    def acquire(self) -> "RunLock":
        """Take the lock (waiting up to ``wait`` seconds for another holder), or raise :class:`RunLocked`."""
        if self.held:
            return self
        deadline = time.monotonic() + self.wait
        noted = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            flocked, blocked, why = fcntl is not None, False, ""
            if flocked:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    blocked = True
                except OSError as exc:  # a file system without flock: the JSON document alone decides
                    if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                        os.close(fd)
                        raise
                    flocked = False
            if not blocked:
                try:  # the file we locked must still be the one at the path (a folder deleted under us)
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
            info = _read(fd)
            stale = None if blocked or info is None else self._stale(info, flocked)
            if not blocked and info is not None and stale is None:
                blocked = True  # another host's (or, without flock, a live) holder named in the document
                why = (f"; {self.path} is not locked by the file system, but the holder's heartbeat is recent (it is "
                       f"taken to be dead {STALE_AFTER:.0f}s after its last one)")
            if not blocked:
                break
            os.close(fd)
            if time.monotonic() >= deadline:
                raise self._in_use(info, why)
            if not noted:
                left = "as long as it takes" if math.isinf(self.wait) else f"up to {self.wait:g}s"
                self.log(f"[lfeval] {self.run_dir} is in use by {_describe(info) if info else 'another process'}; "
                         f"waiting {left} (--wait)")
                noted = True
            time.sleep(_POLL)
        self._fd = fd
        if stale is not None:
            self.log(f"[lfeval] warning: taking over the lock of {self.run_dir} left by {_describe(info)}: "
                     f"{stale}. Its finished stages are kept; a stage it was writing is recomputed.")
        self._info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                      "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
        self._write_info()
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="lfeval-lock-heartbeat", daemon=True)
        self._beat.start()
        return self

    def _write_info(self) -> None:
        data = json.dumps({**self._info, "heartbeat": time.time()}).encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError:  # a full disk: the flock still holds; another process's error lacks the details
            pass

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            if self._fd is None:
                return
            self._write_info()

    def release(self) -> None:
        """Give the lock back (a clean release empties the document, so the next holder sees no stale lock)."""
        if self._fd is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)  # drops the flock

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
