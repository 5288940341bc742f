"""One writer per run folder: a lock file ``RUN/.aevb.lock``, created atomically with its content.

The file holds the writer's pid, host name, start time (wall clock, and where the system says
it, the process's start time since boot: field 22 of /proc/PID/stat) and command. A lock whose
process is gone (same host, pid not alive) is stale, left by a crash or kill -9, and is taken
over; so is a lock whose pid now belongs to another process (the pid was reused: its start time
differs from the recorded one, or, for a lock that recorded none, it is not an aevb or Python
process). A lock held by a live writer, or by another host (which cannot be checked from here),
is refused with a message that names the holder and how to clear the lock by hand.
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

from .errors import DiskFullError, LockedError

try:
    import fcntl
except ImportError:  # not on Windows: stale locks are then removed without the flock
    fcntl = None

LOCK_NAME = ".aevb.lock"

# a lock file that cannot be parsed and is younger than this is being written by its creator
# (only where hard links are unavailable and the file is made with O_EXCL, then written)
WRITING_GRACE_S = 30.0

# no process id is larger than pid_t allows (Linux's pid_max is at most 2**22)
PID_LIMIT = 2**31 - 1

# lock files this process holds (resolved paths); a lock naming this pid but absent here was
# left by an abandoned object and is stale
_HELD: set = set()


def is_lock_file(name: str) -> bool:
    """Whether a file name in a run folder is the lock or a lock being created (see _create_whole)."""
    return name == LOCK_NAME or (name.startswith(LOCK_NAME + ".") and name.endswith(".tmp"))


def _pid_alive(pid: int) -> bool:
    if not 0 < pid <= PID_LIMIT:  # names no process (and os.kill would overflow)
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


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


def process_command(pid: int) -> Optional[str]:
    """The command line of process ``pid`` ('' for a zombie), or None where /proc is absent."""
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return "" if os.path.isdir("/proc/self") else None
    except (OSError, ValueError, OverflowError):
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _same_process(info: dict) -> bool:
    """Whether the live process with the lock's pid is the one that wrote the lock."""
    pid = int(info["pid"])
    try:
        recorded = int(info["start_ticks"])
    except (KeyError, TypeError, ValueError):
        recorded = None
    now = process_start(pid)
    if recorded is not None and now is not None:
        return recorded == now
    command = process_command(pid)
    if command is None:  # nothing more can be known here than that the pid is alive
        return True
    command = command.lower()
    return "aevb" in command or "python" in command


def read_lock(folder: Union[str, Path]) -> Optional[dict]:
    """The holder of ``folder``'s lock ({pid, host, started, command}) or None when unlocked.
    A lock file that cannot be read or parsed reads as {'pid': 0, 'unreadable': age in s}: being
    written when younger than WRITING_GRACE_S, else left by a crash (stale)."""
    path = Path(folder) / LOCK_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        text = ""
    try:
        info = json.loads(text)
        if not isinstance(info, dict):
            raise ValueError
        info["pid"] = int(info.get("pid", 0))
        return info
    except (ValueError, TypeError):
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return None
        return {"pid": 0, "host": socket.gethostname(), "unreadable": age}


def holder_alive(info: Optional[dict], path: Optional[Path] = None) -> bool:
    """Whether the writer named by a lock still runs (another host's lock counts as alive, and
    so does an unreadable lock file younger than WRITING_GRACE_S: its creator is writing it)."""
    if info is None:
        return False
    if "unreadable" in info:  # (a modification time in the future is no reason to wait longer)
        return abs(float(info["unreadable"])) < WRITING_GRACE_S
    if info.get("host") != socket.gethostname():
        return True
    pid = int(info.get("pid", 0))
    if pid == os.getpid():
        return path is not None and str(Path(path).resolve()) in _HELD
    return _pid_alive(pid) and _same_process(info)


def describe(info: dict) -> str:
    if "unreadable" in info:
        return (f"an unreadable lock file ({max(0.0, float(info['unreadable'])):.0f} s old: either a process is "
                f"creating it right now or it is damaged; it counts as stale after {WRITING_GRACE_S:.0f} s)")
    return (f"process {info.get('pid')} on {info.get('host')} since {info.get('started', '?')}"
            + (f" ({info['command']})" if info.get("command") else ""))


def way_out(info: dict, path: Union[str, Path]) -> str:
    """What a user can do about a live lock, including clearing it by hand."""
    if "unreadable" in info:
        return f"wait a few seconds, or if no aevb command is working on this folder, delete {path}"
    if info.get("host") != socket.gethostname():
        return (f"wait for it to finish or stop it on {info.get('host')}; if that process is no longer "
                f"running, delete {path}")
    return (f"wait for it to finish or stop it (kill {info.get('pid')}); if no aevb command is working on this "
            f"folder any more, delete {path}")


def is_locked(folder: Union[str, Path]) -> bool:
    """True when a live writer holds ``folder``'s lock."""
    path = Path(folder) / LOCK_NAME
    return holder_alive(read_lock(folder), path)



def _create_whole(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text``, atomically: False when it exists already.

    The text is written to a private file first and then hard-linked to ``path`` (link() fails
    when the name exists), so no reader ever sees a lock file without its holder. Where hard
    links are unsupported, O_EXCL creation followed by a write is used instead (see
    WRITING_GRACE_S for what a reader makes of the short window in between)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        _write_file(tmp, text, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        try:
            os.link(tmp, path)
            return True
        except (FileExistsError, FileNotFoundError):  # taken; or tmp removed as an orphan
            return False
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
    finally:
        tmp.unlink(missing_ok=True)
    try:  # no hard links on this file system
        _write_file(path, text, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        return True
    except FileExistsError:
        return False


def _write_file(path: Path, text: str, flags: int) -> None:
    fd = os.open(path, flags, 0o644)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
    except OSError as e:  # e.g. a full disk: leave no partial file behind
        path.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(path, 200) from None
        raise


def _remove_if_stale(path: Path) -> None:
    """Delete a stale lock file, unless another process has meanwhile taken it over.

    Two processes that both found the same stale lock must not both delete: the slower one
    would delete the lock the faster one has just created. So the takeover holds an exclusive
    flock on the file it judged stale and deletes it only if ``path`` still names that very
    file (same inode) and it still names a dead holder."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # another process is taking it over right now
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            return
        if same and not holder_alive(read_lock(path.parent), path):
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)


class RunLock:
    """The lock of one run folder. ``acquire()`` raises LockedError when a live writer holds it
    and takes over a stale one; ``release()`` removes it (also at interpreter exit)."""

    def __init__(self, folder: Union[str, Path]):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.held = False

    def acquire(self, what: str = "write") -> "RunLock":
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "start_ticks": process_start(os.getpid()),
              "command": " ".join(sys.argv[:1] + sys.argv[1:8])}
        for _ in range(20):
            if _create_whole(self.path, json.dumps(me) + "\n"):
                self.held = True
                _HELD.add(str(self.path.resolve()))
                return self
            info = read_lock(self.folder)
            if info is None:
                continue  # released meanwhile
            if holder_alive(info, self.path):
                raise LockedError(self.refusal(info, what))
            _remove_if_stale(self.path)
        raise LockedError(f"{self.folder}: could not take the lock {self.path}; other processes keep "
                          "taking it. Try again when they have finished.")

    def refusal(self, info: dict, what: str) -> str:
        return f"{self.folder} is being written by {describe(info)}; cannot {what} it now: {way_out(info, self.path)}"

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
