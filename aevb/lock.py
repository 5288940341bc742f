"""One writer per run folder: a lock file ``RUN/.aevb.lock``, created atomically with its content.

The file holds the writer's pid, host name, start time (wall clock, and where the system says
it, the process's start time since boot: field 22 of /proc/PID/stat) and command. A lock whose
process is gone (same host, pid not alive) is stale, left by a crash or kill -9, and is taken
over; so is a lock whose pid now belongs to another process (the pid was reused: its start time
differs from the recorded one). A lock that recorded no start time (written by an older aevb, or
by hand) is judged by what /proc says of the live process: it is the writer when it runs an aevb
command that locks folders (``train``, ``reproduce``) and, where its command line names its
folder, names this one; a process running no aevb command is the writer only if it has loaded
PyTorch (a script using aevb's Python API). Anything else (``python -c ...``, an editor, ``aevb
evaluate``, ``aevb train --out`` another folder) is not. A lock held by a live writer, or by
another host (which cannot be checked from here), is refused with a message that names the
holder and how to clear the lock by hand.
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
from typing import List, Optional, Union

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


def process_arguments(pid: int) -> Optional[List[str]]:
    """The command line of process ``pid`` as its arguments ([] for a zombie or a process that
    just ended), or None where /proc is absent or does not let us read it."""
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return [] if os.path.isdir("/proc/self") else None
    except (OSError, ValueError, OverflowError):
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def process_command(pid: int) -> Optional[str]:
    """The command line of process ``pid`` ('' for a zombie), or None where /proc is absent."""
    args = process_arguments(pid)
    return None if args is None else " ".join(args)


def _loads_torch(pid: int) -> Optional[bool]:
    """Whether process ``pid`` has PyTorch's library mapped (every aevb process has: the package
    imports torch), or None where that cannot be read."""
    try:
        with open(f"/proc/{int(pid)}/maps", "rb") as f:
            return b"libtorch" in f.read()
    except (OSError, ValueError, OverflowError):
        return None


def _is_aevb_program(arg: str) -> bool:
    path = arg.replace("\\", "/")
    return os.path.basename(path) in ("aevb", "aevb.exe") or path.endswith(("aevb/__main__.py", "aevb/cli.py"))


def aevb_arguments(args: List[str]) -> Optional[List[str]]:
    """The arguments of the aevb command in a command line (``aevb train ...``, ``python -m aevb
    train ...``, ``python /path/bin/aevb train ...``), or None when it runs no aevb command (a
    script that uses aevb's Python API runs none either)."""
    if not args:
        return None
    if _is_aevb_program(args[0]):
        return args[1:]
    i = 1
    while i < len(args):  # the interpreter's own options, then -c, -m MODULE or the script
        a = args[i]
        if a == "-m" or (a.startswith("-m") and len(a) > 2):
            module = args[i + 1] if a == "-m" and i + 1 < len(args) else a[2:]
            rest = args[i + 2:] if a == "-m" else args[i + 1:]
            return rest if module in ("aevb", "aevb.cli", "aevb.__main__") else None
        if a == "-c" or a == "-" or not a.startswith("-"):
            return args[i + 1:] if _is_aevb_program(a) else None
        i += 2 if a in ("-W", "-X") else 1
    return None


# aevb's commands that lock a folder, with the options that name it
LOCKING_COMMANDS = {"train": ("--out", "--resume"), "reproduce": ("--out",)}


def _holds(args: List[str], cwd: Optional[str], folder: Path) -> bool:
    """Whether the aevb command ``args`` (run in ``cwd``) can be the writer of ``folder``: a
    command that locks folders and, where it names its folder, names this one, a folder above it
    (a sub-run of ``aevb reproduce``) or the one beside it that --overwrite builds in."""
    command = next((a for a in args if not a.startswith("-")), None)
    if command not in LOCKING_COMMANDS:
        return False  # evaluate, sample, ...: readers, they take no lock
    named = []
    for i, a in enumerate(args):
        for option in LOCKING_COMMANDS[command]:
            if a == option and i + 1 < len(args):
                named.append(args[i + 1])
            elif a.startswith(option + "="):
                named.append(a[len(option) + 1:])
    if not named:
        return True  # its default folder: where it would be cannot be known from here
    here = Path(os.path.realpath(folder))
    for name in named:
        if not os.path.isabs(name) and cwd is None:
            return True
        there = Path(os.path.realpath(os.path.join(cwd or "/", os.path.expanduser(name))))
        if here == there or there in here.parents or (
                here.parent == there.parent and here.name.startswith(f".{there.name}.aevb-")):
            return True
    return False


def _same_process(info: dict, folder: Optional[Path] = None) -> bool:
    """Whether the live process with the lock's pid is the one that wrote the lock: the same
    start time where both are known; else (an older or hand-made lock) an aevb command that can
    hold ``folder``, or a process that has loaded PyTorch (a script using aevb's Python API)."""
    pid = int(info["pid"])
    try:
        recorded = int(info["start_ticks"])
    except (KeyError, TypeError, ValueError):
        recorded = None
    now = process_start(pid)
    if recorded is not None and now is not None:
        return recorded == now
    args = process_arguments(pid)
    if args is None:  # nothing more can be known here than that the pid is alive
        return True
    if not args:  # a zombie: it has ended
        return False
    command = aevb_arguments(args)
    if command is not None:
        if folder is None:
            return True
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = None
        return _holds(command, cwd, folder)
    return _loads_torch(pid) is not False


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
    return _pid_alive(pid) and _same_process(info, None if path is None else Path(path).parent)


def describe(info: dict) -> str:
    if "unreadable" in info:
        return (f"an unreadable lock file ({max(0.0, float(info['unreadable'])):.0f} s old: either a process is "
                f"creating it right now or it is damaged; it counts as stale after {WRITING_GRACE_S:.0f} s)")
    command = info.get("command")
    if not command and info.get("host") == socket.gethostname():  # an older or hand-made lock
        command = process_command(int(info.get("pid", 0)))
    return (f"process {info.get('pid')} on {info.get('host')} since {info.get('started', '?')}"
            + (f" ({command})" if command else ""))


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
