"""Every error a user can cause, in one place at the bottom of the package.

Commands turn these into one line (what was wrong, the value, what to do) and exit status 2
(``aevb.commands.common.run_command``); any other exception is an internal error. Nothing here
imports from the rest of aevb but ``units`` (how sizes are written), so every module can raise them.
"""
from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Optional, Union

from .units import format_bytes, format_bytes_apart


def interruption(e: BaseException) -> Optional[KeyboardInterrupt]:
    """The Ctrl-C behind ``e``: ``e`` itself, or one that another error replaced while it was
    being handled (e.g. torch.save's clean-up raises RuntimeError when interrupted mid-write)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


class ConfigError(ValueError):
    """A configuration value is missing, unknown or contradictory."""


class RunError(ValueError):
    """A run folder is missing, damaged, or cannot do what was asked."""


class DataError(ValueError):
    """A data set could not be loaded: the message says what was wrong and how to fix it."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or not an aevb checkpoint."""


class LockedError(RuntimeError):
    """A run folder is being written by another process."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint (if any) is kept."""


class PlotError(RunError):
    """A figure cannot be drawn for this run (e.g. no latent snapshots were saved)."""


class ReproduceError(ValueError):
    """A reproduction was asked for something it cannot do (bad name, budget, or settings)."""


class DiskFullError(OSError):
    """A file could not be written because its disk is full; nothing half-written is left."""

    def __init__(self, path: Union[str, Path], needed: int = 0,
                 advice: str = "free some space on that disk and run the command again"):
        self.path, self.needed = Path(path), int(needed)
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            free = None
        if needed and free is not None:
            need_s, free_s = format_bytes_apart(needed, free)
        else:
            need_s, free_s = format_bytes(needed), format_bytes(free or 0)
        need = f"about {need_s} needed" if needed else "more space needed"
        have = f", {free_s} free" if free is not None else ""
        super().__init__(errno.ENOSPC, f"disk full: could not write {self.path} ({need}{have}); {advice}")

    def __str__(self) -> str:
        return self.strerror


# The errors that become one-line messages with exit status 2.
USER_ERRORS = (ConfigError, RunError, DataError, CheckpointError, LockedError, DiskFullError,
               TrainingDiverged)
