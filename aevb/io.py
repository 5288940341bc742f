"""Atomic file writes and checkpoints that load without executing code.

Every file a run writes goes to a temporary name in the same folder first and is renamed into
place, so an interrupted write never leaves a half-written result under the final name.
Checkpoints are saved with ``torch.save`` and read with ``torch.load(weights_only=True)``, which
refuses pickled code.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

import torch

PathLike = Union[str, Path]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or not an aevb checkpoint."""


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.
    On any error the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are ordinary files
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_csv(path: PathLike, rows: list) -> None:
    """Rows (dicts) as CSV with the union of their keys as columns, in first-seen order."""
    import csv
    import io

    keys: list = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def save_checkpoint(state: dict, path: PathLike) -> None:
    """Write a checkpoint dict (tensors, numbers, strings, lists, dicts) atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: PathLike, map_location="cpu") -> dict:
    """Load a checkpoint without executing code; clear CheckpointError when unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {path} could not be read ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "the file is truncated, corrupted or not an aevb checkpoint") from None
    if not isinstance(state, dict) or state.get("format") != "aevb-checkpoint":
        raise CheckpointError(f"{path} is not an aevb checkpoint")
    return state
