"""One writer per run folder: a lock file ``RUN/.aevb.lock`` created exclusively (O_EXCL).

The file holds the writer's pid, host name, start time and command. A lock whose process is
gone (same host, pid not alive) is stale, left by a crash or kill -9, and is taken over; a lock
held by a live process, or by another host (which cannot be checked from here), is refused
with a message that names the holder and the way out.
"""
from __future__ import annotations

import atexit
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional, Union

LOCK_NAME = ".aevb.lock"

# lock files this process holds (resolved paths); a lock naming this pid but absent here was
# left by an abandoned object and is stale
_HELD: set = set()


class LockedError(RuntimeError):
    """A run folder is being written by another process."""


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_lock(folder: Union[str, Path]) -> Optional[dict]:
    """The holder of ``folder``'s lock ({pid, host, started, command}) or None when unlocked.
    An unreadable lock file (a crash while writing it) reads as {'pid': 0}: stale."""
    path = Path(folder) / LOCK_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {"pid": 0, "host": socket.gethostname()}
    try:
        info = json.loads(text)
        if not isinstance(info, dict):
            raise ValueError
        info["pid"] = int(info.get("pid", 0))
        return info
    except (ValueError, TypeError):
        return {"pid": 0, "host": socket.gethostname()}


def holder_alive(info: Optional[dict], path: Optional[Path] = None) -> bool:
    """Whether the writer named by a lock still runs (another host's lock counts as alive)."""
    if info is None:
        return False
    if info.get("host") != socket.gethostname():
        return True
    pid = int(info.get("pid", 0))
    if pid == os.getpid():
        return path is not None and str(Path(path).resolve()) in _HELD
    return _pid_alive(pid)


def describe(info: dict) -> str:
    return (f"process {info.get('pid')} on {info.get('host')} since {info.get('started', '?')}"
            + (f" ({info['command']})" if info.get("command") else ""))


def is_locked(folder: Union[str, Path]) -> bool:
    """True when a live writer holds ``folder``'s lock."""
    path = Path(folder) / LOCK_NAME
    return holder_alive(read_lock(folder), path)


class RunLock:
    """The lock of one run folder. ``acquire()`` raises LockedError when a live writer holds it
    and takes over a stale one; ``release()`` removes it (also at interpreter exit)."""

    def __init__(self, folder: Union[str, Path]):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.held = False

    def acquire(self, what: str = "write") -> "RunLock":
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": " ".join(sys.argv[:1] + sys.argv[1:8])}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = read_lock(self.folder)
                if info is not None and holder_alive(info, self.path):
                    raise LockedError(self.refusal(info, what)) from None
                try:  # stale: the writer is gone
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(json.dumps(me) + "\n")
            except OSError as e:  # e.g. a full disk: leave no empty lock behind
                self.path.unlink(missing_ok=True)
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    from .io import DiskFullError

                    raise DiskFullError(self.path, 200) from None
                raise
            self.held = True
            _HELD.add(str(self.path.resolve()))
            return self
        raise LockedError(f"{self.folder}: could not take the lock {self.path}; another process keeps "
                          "creating it. Try again when it has finished.")

    def refusal(self, info: dict, what: str) -> str:
        same_host = info.get("host") == socket.gethostname()
        way_out = ("wait for it to finish or stop it first" if same_host else
                   f"if that process is no longer running, delete {self.path}")
        return f"{self.folder} is being written by {describe(info)}; cannot {what} it now: {way_out}"

    def moved(self, folder: Union[str, Path]) -> None:
        """The folder holding this lock was renamed to ``folder``."""
        _HELD.discard(str(self.path.resolve()))
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        if self.held:
            _HELD.add(str(self.path.resolve()))

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            key = str(self.path.resolve())
            info = read_lock(self.folder)
            if info is not None and info.get("pid") == os.getpid():
                self.path.unlink()
        except OSError:
            key = str(self.path)
        _HELD.discard(key)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:
            pass


@atexit.register
def _release_all() -> None:
    """Locks still held when the interpreter exits (an error escaped) are removed."""
    for key in list(_HELD):
        path = Path(key)
        info = read_lock(path.parent)
        if info is not None and info.get("pid") == os.getpid():
            try:
                path.unlink()
            except OSError:
                pass
    _HELD.clear()
