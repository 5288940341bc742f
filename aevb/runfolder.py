"""Creating and replacing run folders: a new run is built in a private sibling folder under its
lock and takes its place only when its first epoch has trained (``NewRun``); what a killed
writer left beside a run is recovered or removed.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import List, Optional

from .errors import RunError
from .lock import LOCK_NAME, RunLock, describe, holder, is_lock_file, is_locked, way_out
from .runs import refuse_run_owned, check_writable, is_run
# ------------------------------------------------------------------ creating and replacing runs
STAGING, TRASH = ".aevb-new-", ".aevb-old-"


def _sibling(out: Path, kind: str) -> Path:
    return out.parent / f".{out.name}{kind}{os.getpid()}"


def remove_orphans(folder: Path) -> List[Path]:
    """Delete temporary files left in a run folder by a killed writer (``.NAME.XXXX.tmp`` from
    atomic writes). Call it only while holding the folder's lock."""
    removed = []
    for tmp in Path(folder).rglob(".*.tmp"):
        if tmp.is_file() and not tmp.is_symlink() and not is_lock_file(tmp.name):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def recover_siblings(out: Path) -> None:
    """Clean up after an ``--overwrite`` killed before it finished: unfinished new runs
    (``.NAME.aevb-new-PID``) whose writer is gone are deleted, and an old run moved aside
    (``.NAME.aevb-old-PID``) is put back if ``out`` itself is missing, else deleted."""
    parent = out.parent
    if not parent.is_dir():
        return
    for kind in (STAGING, TRASH):
        for p in sorted(parent.glob(f".{glob_escape(out.name)}{kind}*")):
            if not p.is_dir() or is_locked(p):
                continue
            if kind == TRASH and not out.exists() and is_run(p):
                p.rename(out)
                (out / LOCK_NAME).unlink(missing_ok=True)
            else:
                shutil.rmtree(p, ignore_errors=True)


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


class NewRun:
    """The folder a new run is written to, with its lock. With ``replaces`` (``--overwrite``) the
    run is built in a hidden sibling folder and ``commit()`` swaps it into place once it has
    started successfully; until then the old run is untouched (and locked against other writers)."""

    def __init__(self, folder: Path, lock: RunLock, target: Path, replaces: Optional[RunLock] = None,
                 created: bool = True):
        self.folder, self.lock, self.target, self.replaces = folder, lock, target, replaces
        self.created = created  # whether the folder was made for this run (else it was empty)

    @property
    def pending(self) -> bool:
        return self.replaces is not None

    def commit(self) -> Path:
        """Put the new run where the old one was; returns the run's final folder."""
        if self.replaces is None:
            return self.folder
        trash = _sibling(self.target, TRASH)
        os.rename(self.target, trash)
        self.replaces.moved(trash)
        try:
            os.rename(self.folder, self.target)
        except OSError:
            os.rename(trash, self.target)  # put the old run back
            self.replaces.moved(self.target)
            raise
        self.lock.moved(self.target)
        self.folder = self.target
        self.replaces.release()
        self.replaces = None
        shutil.rmtree(trash, ignore_errors=True)
        return self.folder

    def abandon(self) -> None:
        """The new run failed before it trained an epoch and is removed: a replacement's folder
        is deleted (the old run stays as it was), a fresh folder is removed (emptied if it
        existed before)."""
        if self.replaces is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.lock.release()
            self.replaces.release()
            self.replaces = None
            return
        if self.created:
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            for p in self.folder.iterdir():
                if not is_lock_file(p.name):
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        self.lock.release()


def check_new_out(out: Path, overwrite: bool) -> None:
    """Refuse an output folder that cannot take a new run, before any work is done."""
    refuse_run_owned(out, f"--out {out}", "--out")
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise RunError(f"--out {out} is a file, not a folder; choose another --out")
        writer = holder(out)
        if writer is not None:
            what = ("--overwrite would destroy a run that is still training" if overwrite
                    else "it is still training")
            raise RunError(f"{out} is being written by {describe(writer)}; {what}: "
                           f"{way_out(writer, out / LOCK_NAME)}; or choose another --out")
        if is_run(out):
            if not overwrite:
                raise RunError(f"{out} already holds a run; use `aevb train --resume {out}` to continue it, "
                               "--overwrite to replace it (the old run is kept until the new one has "
                               "started), or choose another --out")
        elif any(not is_lock_file(p.name) for p in out.iterdir()):
            raise RunError(f"--out {out} exists and is neither an empty folder nor an aevb run (no run.json "
                           "with format aevb-run); nothing was changed: choose another --out")
        check_writable(out, f"--out {out}")
    else:
        check_writable(out.parent, f"--out {out}")


def create_run_folder(out: Path, overwrite: bool) -> NewRun:
    """Create and lock the folder of a new run (see NewRun); refuses like check_new_out."""
    out = Path(out)
    recover_siblings(out)
    check_new_out(out, overwrite)
    if is_run(out):  # --overwrite: lock the old run, build the new one beside it
        out = out.resolve()  # its siblings live in its real parent (also for --out .)
        old = RunLock(out).acquire("overwrite")
        try:
            staging = _sibling(out, STAGING)
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir()
            lock = RunLock(staging).acquire()
        except BaseException:
            old.release()
            raise
        return NewRun(staging, lock, out, replaces=old)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out).acquire("start a run in")
    # a second writer may have created the run between the check and the lock
    if is_run(out):
        lock.release()
        raise RunError(f"{out} already holds a run, started by another process meanwhile; use "
                       f"`aevb train --resume {out}` to continue it, or choose another --out")
    if any(not is_lock_file(p.name) for p in out.iterdir()):
        lock.release()
        raise RunError(f"{out} was filled by another process meanwhile; choose another --out")
    return NewRun(out, lock, out, created=created)


