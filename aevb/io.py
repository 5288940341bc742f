"""Atomic file writes and checkpoints that load without executing code.

Every file a run writes goes to a temporary name in the same folder first and is renamed into
place, so an interrupted write never leaves a half-written result under the final name.
Checkpoints are saved with ``torch.save`` and read with ``torch.load(weights_only=True)``, which
refuses pickled code. What only uses the model reads a checkpoint memory-mapped and keeps the
model's entries: the optimizer's moments (twice the weights, for Adam) are never read.
"""
from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Union

import torch

from . import metrics as M
from .checkpoints import DIGEST, RUN_ID, advice, problem, seal, sibling
from .errors import CheckpointError, DiskFullError, interruption  # noqa: F401 (raised here; imported from here by callers)

PathLike = Union[str, Path]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _disk_full(e: BaseException, folder: Path, needed: int) -> bool:
    """Whether an error while writing into ``folder`` means the disk is full: ENOSPC/EDQUOT, or a
    library error (torch.save raises RuntimeError) with less free space than was needed."""
    if isinstance(e, OSError) and e.errno is not None:
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(e, (OSError, RuntimeError)):  # (numpy's tofile: "N requested and M written", no errno)
        try:
            return shutil.disk_usage(folder).free < max(needed, 1 << 16)
        except OSError:
            return False
    return False


@contextlib.contextmanager
def atomic_path(path: PathLike, needed: int = 0) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.
    On any error the temporary file is removed and ``path`` is left as it was; a full disk
    raises DiskFullError (``needed``: the expected size in bytes, for the message), and Ctrl-C
    raises KeyboardInterrupt even where the writer turned it into another error."""
    path = Path(path)
    tmp, fd = None, None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        _hold(fd)  # held until the file is in place: a later command tells a live write from a killed one's
        tmp = Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are ordinary files
        yield tmp
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and tmp.exists():
            tmp.unlink()
            tmp = None
        if not isinstance(e, KeyboardInterrupt) and interruption(e) is not None:
            # Ctrl-C inside a library's write, which then failed in its clean-up: it was Ctrl-C
            raise KeyboardInterrupt(f"interrupted while writing {path}") from e
        if isinstance(e, Exception) and not isinstance(e, DiskFullError) and _disk_full(e, path.parent, needed):
            raise DiskFullError(path, needed) from e
        raise
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
        if fd is not None:
            os.close(fd)


def _hold(fd: int) -> None:
    """Take the advisory lock (flock) of an open temporary file, where the system has one."""
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ImportError, OSError):
        pass


def temporaries_of(path: PathLike) -> list:
    """The temporary files of atomic writes of ``path`` (``.NAME.XXXX.tmp`` beside it) whose
    writer is gone: nothing holds their lock (a writer killed before it renamed its file)."""
    path = Path(path)
    try:
        import fcntl
    except ImportError:
        return []
    found = []
    try:
        names = [p for p in path.parent.iterdir()
                 if p.name.startswith(f".{path.name}.") and p.name.endswith(".tmp")]
    except OSError:
        return []
    for p in sorted(names):
        if p.is_symlink() or not p.is_file() or not re.fullmatch(r"[a-z0-9_]{8}", p.name[len(path.name) + 2:-4]):
            continue
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            found.append(p)
        except OSError:
            pass  # held: a live write
        finally:
            os.close(fd)
    return found


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_path(path, len(text.encode())) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_path(path, len(data)) as tmp:
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


def tensor_bytes(obj) -> int:
    """Bytes of the tensors in a nested dict/list (the size of a checkpoint, roughly)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def save_checkpoint(state: dict, path: PathLike) -> None:
    """Write a checkpoint dict (tensors, numbers, strings, lists, dicts) atomically, sealed with
    the digest of each entry (aevb.checkpoints.seal) that every load checks."""
    state = seal(state)
    with atomic_path(path, tensor_bytes(state)) as tmp:
        with open(tmp, "wb") as f:  # closed even when the write fails, so a full disk gets its space back
            torch.save(state, f)


# what every aevb checkpoint holds (the trainer's resume needs a few more, checked there)
CHECKPOINT_KEYS = (M.EPOCH, M.STEP, "data_dim", "image_shape", "model")
# what a model-only load keeps: the weights and what describes them (not optimizer, schedule, RNG, history)
MODEL_KEYS = ("format", "version", "aevb_version", "config", "checkpoint", M.VALID_BOUND, M.BEST_EPOCH,
              M.BEST_VALID_BOUND, RUN_ID) + CHECKPOINT_KEYS


def _one_line(text: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # terminal colours
    return " ".join(text.split())


def load_checkpoint(path: PathLike, map_location="cpu", required=CHECKPOINT_KEYS,
                    fmt: str = "aevb-checkpoint", model_only: bool = False, run_id: Optional[str] = None,
                    advise: bool = True) -> dict:
    """Load a checkpoint of format ``fmt`` without executing code; clear CheckpointError when
    unusable (a run's checkpoint, or a reproduction's sub-run state: ``aevb-reproduce``).

    Every entry returned is checked against the digest saved with it, the model and optimizer
    state must be finite, and with ``run_id`` (the id in the run folder's run.json) a checkpoint
    that names another run is refused (aevb.checkpoints.problem); the message says what the
    run's other checkpoint offers (``advise``). The tensors are read on the CPU, checked, and only
    then moved to ``map_location``.

    ``model_only``: map the file into memory instead of reading it, and return only the entries
    of MODEL_KEYS; the other tensors (optimizer state) are never read, and a model that takes the
    mapped tensors as its own (aevb.runs.Run.open_model) holds its weights as pages of the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was never completely written; "
                              "restore it from a copy or train the run again")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=model_only)
    except pickle.UnpicklingError as e:
        # keep PyTorch's whole explanation, including that weights_only=False can run code
        raise CheckpointError(f"checkpoint {path} was refused: it holds Python objects that a safe load "
                              f"does not execute. PyTorch says: {_one_line(str(e))}") from None
    except Exception as e:
        detail = _one_line(str(e))[:300] or "no detail"
        raise CheckpointError(
            f"checkpoint {path} could not be read ({type(e).__name__}: {detail}); "
            "the file is truncated, corrupted or not an aevb checkpoint") from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise CheckpointError(f"{path} is not an aevb checkpoint (no format '{fmt}' in it)")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}: it is damaged or was not "
                              "written by aevb")
    wrong = problem(state, MODEL_KEYS if model_only else None, run_id)
    if wrong:
        linked = f" (a symbolic link to {os.readlink(path)})" if path.is_symlink() else ""
        if not model_only and problem(state, MODEL_KEYS, run_id) is None and M.EPOCH in state:
            # the optimizer's state, RNG or history: the model itself passes
            todo = (f"its model (epoch {state[M.EPOCH]}) passes every check and can still be evaluated, scored "
                    f"and exported, but training cannot continue from it; {advice(path, None)}")
        else:
            todo = advice(path, _intact_epoch(path, run_id) if advise else None)
        error = CheckpointError(f"checkpoint {path}{linked} {wrong}; {todo}")
        error.what = f"checkpoint {path}{linked} {wrong}"  # without the advice, for callers that give their own
        raise error
    state = {k: v for k, v in state.items() if k != DIGEST and (not model_only or k in MODEL_KEYS)}
    if torch.device(map_location if map_location is not None else "cpu").type != "cpu":
        state = _moved(state, map_location)
    return state


def _intact_epoch(path: Path, run_id: Optional[str]) -> Optional[int]:
    """The epoch of the run's other checkpoint (best.pt beside last.pt, and the reverse) when it
    passes every check of a model load, else None."""
    other = sibling(path)
    if other is None or not other.is_file():
        return None
    try:
        return int(load_checkpoint(other, model_only=True, run_id=run_id, advise=False)[M.EPOCH])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None


def _moved(obj, device):
    """``obj`` with its tensors on ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        out = type(obj)((k, _moved(v, device)) for k, v in obj.items()) if type(obj) is not dict else \
            {k: _moved(v, device) for k, v in obj.items()}
        if getattr(obj, "_metadata", None) is not None:
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_moved(v, device) for v in obj)
    return obj
