"""One writer per run folder: an advisory lock (``flock``) on the file ``RUN/.aevb.lock``, held by
the writer for as long as it writes.

The operating system ties the lock to the writer's open file and drops it when the process ends,
however it ends (``kill -9`` included): a lock file whose lock is free was left by a writer that
is gone and is taken over, and a process that merely has the recorded pid holds nothing. The
file records the writer (pid, host, start time, command) for the messages that name it. A lock
file written on another host is refused whatever its flock says, since flock may not reach across
a folder shared between machines; the message names that host and how to clear it by hand.
Where the system has no ``flock`` (Windows), a lock file holds its folder until it is released
or deleted by hand.
"""
from __future__ import annotations

import atexit
import errno
import json
import os
import random
import socket
import sys
import time
import weakref
from pathlib import Path
from typing import Optional, Tuple, Union

from .errors import DiskFullError, LockedError, RunError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, see the module's docstring
    fcntl = None

LOCK_NAME = ".aevb.lock"

# how long a reader waits for a holder that has the lock but has not finished writing its record
WRITE_WAIT_S = 1.0

# tries of one acquire: a reader's brief shared lock, or a holder's release, makes a try fail
ATTEMPTS = 50

_HELD: "weakref.WeakSet[RunLock]" = weakref.WeakSet()  # released at interpreter exit


# the lock of an output that is not a run folder (a file, or a folder of PNGs) lies beside it:
# OUT -> .OUT.aevb-lock
OUTPUT_LOCK_SUFFIX = ".aevb-lock"


def is_lock_file(name: str) -> bool:
    """Whether a file name in a run folder is the lock."""
    return name == LOCK_NAME


def output_lock_path(out: Union[str, Path]) -> Path:
    """The lock file of the output ``out`` (a file or a folder that is not a run): beside it."""
    out = Path(out)
    return out.parent / f".{out.name}{OUTPUT_LOCK_SUFFIX}"


def process_start(pid: int) -> Optional[int]:
    """When process ``pid`` started, in clock ticks since boot (field 22 of /proc/PID/stat), or
    None where the system does not say (no /proc, or no such process). With the pid it names one
    process for good: a reused pid has a later start time."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            stat = f.read()
    except (OSError, ValueError, OverflowError):
        return None
    fields = stat[stat.rfind(b")") + 2:].split()  # field 2, the name, may hold spaces and ')'
    try:
        return int(fields[22 - 3])
    except (IndexError, ValueError):
        return None


def _record() -> bytes:
    """What this process writes into a lock it takes."""
    return (json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                        "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "start_ticks": process_start(os.getpid()),
                        "command": " ".join(sys.argv[:8])}) + "\n").encode()


def _try_lock(fd: int, shared: bool = False) -> bool:
    """Take the flock of ``fd`` without waiting: False when another open file holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a releasing holder deletes it)."""
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _content(fd: int, wait: bool) -> dict:
    """The record in a lock file; {'pid': 0, 'unreadable': True} when it cannot be read or parsed,
    after waiting up to WRITE_WAIT_S when ``wait`` (its holder is writing it)."""
    deadline = time.monotonic() + (WRITE_WAIT_S if wait else 0.0)
    while True:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            info = json.loads(os.read(fd, 1 << 16).decode())
            if isinstance(info, dict):
                info["pid"] = int(info.get("pid", 0))
                return info
        except (OSError, ValueError, TypeError, OverflowError):
            pass
        if time.monotonic() >= deadline:
            return {"pid": 0, "unreadable": True}
        time.sleep(0.01)


def _foreign(info: dict) -> bool:
    """Whether a lock record was written on another host."""
    return "unreadable" not in info and info.get("host", socket.gethostname()) != socket.gethostname()


def lock_state(folder: Union[str, Path]) -> Optional[Tuple[bool, dict]]:
    """(held, record) of ``folder``'s lock file, or None when there is none. Held: another open
    file has its flock (a live writer: in this process too, through another RunLock), or it was
    written on another host, or it cannot be opened to check."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return True, {"pid": 0, "unreadable": True}
    try:
        held = not _try_lock(fd, shared=True)
        if not held and fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        info = _content(fd, wait=held)
    finally:
        os.close(fd)
    return held or _foreign(info) or fcntl is None, info


def holder(folder: Union[str, Path]) -> Optional[dict]:
    """The record of the writer holding ``folder``'s lock, or None when no writer holds it."""
    got = lock_state(folder)
    return got[1] if got and got[0] else None


def is_locked(folder: Union[str, Path]) -> bool:
    """True when a writer holds ``folder``'s lock."""
    return holder(folder) is not None


def read_lock(folder: Union[str, Path]) -> Optional[dict]:
    """What ``folder``'s lock file records (held or not), or None when there is none."""
    got = lock_state(folder)
    return got[1] if got else None


def _verified(info: dict) -> bool:
    """Whether the recorded pid is, on this host, the very process that wrote the record (same
    start time since boot): only then may a message tell a user to kill it."""
    pid, ticks = info.get("pid"), info.get("start_ticks")
    if _foreign(info) or not isinstance(pid, int) or not 1 < pid < 2**31 or not isinstance(ticks, int):
        return False
    return process_start(pid) == ticks and _runs_aevb(pid)


def _runs_aevb(pid: int) -> bool:
    """Whether process ``pid`` can be an aevb writer: the aevb command or a Python interpreter
    (a script that uses aevb), by its command line in /proc; False where that cannot be read."""
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            words = [w for w in f.read().split(b"\0") if w]
    except (OSError, ValueError, OverflowError):
        return False
    names = [os.path.basename(w).decode(errors="replace").lower() for w in words[:2]]
    return any(n == "aevb" or n.startswith("python") for n in names)


def describe(info: Optional[dict]) -> str:
    """The writer a lock record names, for a message."""
    if info is None:
        return "a process that has just released it"
    if "unreadable" in info:
        return "a process whose lock file cannot be read (being written right now, or damaged)"
    command = info.get("command")
    return (f"process {info.get('pid')} on {info.get('host')} since {info.get('started', '?')}"
            + (f" ({command})" if command else ""))


def way_out(info: Optional[dict], path: Union[str, Path]) -> str:
    """What a user can do about a held lock."""
    info = info or {}
    if _foreign(info):
        return (f"wait for it to finish or stop it on {info.get('host')}; if that process is no longer "
                f"running, delete {path}")
    if fcntl is None or "unreadable" in info:
        return f"wait for it to finish; if no aevb command is working on this folder, delete {path}"
    stop = f"stop it (kill {info['pid']})" if _verified(info) else "stop the aevb command that holds it"
    return f"wait for it to finish or {stop}; the lock is freed when that process ends"


class RunLock:
    """The lock of one run folder. ``acquire()`` raises LockedError when a writer holds it and
    takes over a lock file left by a writer that ended; ``release()`` deletes the lock file (also
    at interpreter exit)."""

    def __init__(self, folder: Union[str, Path], path: Union[str, Path, None] = None):
        # ``path``: the lock file of an output that is not a run folder (beside it, see
        # output_lock_path); by default the folder's own RUN/.aevb.lock
        self.folder = Path(folder)
        self.path = Path(path) if path is not None else self.folder / LOCK_NAME
        self._beside = path is not None
        self.held = False
        self._fd: Optional[int] = None

    def acquire(self, what: str = "write") -> "RunLock":
        for _ in range(ATTEMPTS):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise RunError(f"{self.folder}: cannot {what} it: its lock file {self.path} cannot be created "
                               f"({e.strerror or e}); make the folder writable first") from None
            try:
                if not _try_lock(fd):
                    if _try_lock(fd, shared=True):  # only a reader looking at it: try again
                        fcntl.flock(fd, fcntl.LOCK_UN)
                        time.sleep(random.random() * 0.01)
                        continue
                    raise LockedError(self.refusal(_content(fd, wait=True), what))
                if not _same_file(fd, self.path):  # deleted by a holder's release meanwhile
                    continue
                info = _content(fd, wait=False)
                if _foreign(info) or (fcntl is None and os.fstat(fd).st_size):  # (no flock: a record holds)
                    raise LockedError(self.refusal(info, what))
                self._write(fd)
                self._fd, fd, self.held = fd, None, True
                _HELD.add(self)
                return self
            finally:
                if fd is not None:
                    os.close(fd)
        raise LockedError(f"{self.folder}: could not take the lock {self.path}; other processes keep "
                          "taking it. Try again when they have finished.")

    def _write(self, fd: int) -> None:
        record = _record()
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, record)
        except OSError as e:  # e.g. a full disk: leave no lock file behind
            self.path.unlink(missing_ok=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(self.path, len(record)) from None
            raise

    def refusal(self, info: dict, what: str) -> str:
        return f"{self.folder} is being written by {describe(info)}; cannot {what} it now: {way_out(info, self.path)}"

    def moved(self, folder: Union[str, Path]) -> None:
        """The folder holding this lock was renamed to ``folder`` (the lock goes with it)."""
        self.folder = Path(folder)
        if not self._beside:
            self.path = self.folder / LOCK_NAME

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        _HELD.discard(self)
        fd, self._fd = self._fd, None
        try:  # deleted while locked: a process waiting on this file sees it is gone and tries again
            if _same_file(fd, self.path):
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)

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
    """Locks still held when the interpreter exits (an error escaped) are released."""
    for lock in list(_HELD):
        lock.release()
