"""How the new-data commands' outputs reach the disk: item ids as safe file names, one writer per
output (a lock beside it; what a killed writer left is removed by the next), and one PNG per item
in a folder that appears only when complete. The tables are tables.py.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Sequence

from torch import Tensor

from ..units import count, format_bytes
from ..errors import DataError, DiskFullError
from ..images import png_bytes, to_images
from ..io import temporaries_of
from ..lock import RunLock, output_lock_path


# ------------------------------------------------------------------ one PNG per item
# the longest file name (bytes) most file systems take, and the longest path the system opens
NAME_MAX, PATH_MAX = 255, 4096


def _safe_part(part: str) -> str:
    """One component of an item's identity as a file name: control characters (NUL, line breaks,
    tabs ...), which a file name cannot hold or shows badly, written as %XX."""
    return "".join(f"%{ord(c):02X}" if ord(c) < 32 or ord(c) == 127 else c for c in part)


def _fit_name(part: str, suffix: str = "") -> str:
    """``part`` + ``suffix``, shortened where it is longer than NAME_MAX bytes: its beginning,
    '~' and 12 hex digits of the SHA-256 of the whole part (distinct parts stay distinct)."""
    import hashlib

    whole = part + suffix
    if len(os.fsencode(whole)) <= NAME_MAX:
        return whole
    tag = "~" + hashlib.sha256(os.fsencode(part)).hexdigest()[:12] + suffix
    room = NAME_MAX - len(os.fsencode(tag))
    head = ""
    for c in part:
        if len(os.fsencode(head + c)) > room:
            break
        head += c
    return head + tag


def png_names(ids: Sequence[str], out: Optional[Path] = None) -> List[str]:
    """A file name under the output folder for each identity: the same relative path with the
    suffix .png (a path that would leave the folder keeps only its file name; control characters
    become %XX; a name over 255 bytes is shortened, keeping a hash of the whole). Refuses, before
    any work, two items that would share a name, an item whose PNG would be a folder of other
    items' PNGs, and (with ``out``) a path longer than the system opens."""
    names = []
    for i in ids:
        p = PurePosixPath(str(i))
        parts = [x for x in p.parts if x not in ("/", ".")]
        if p.is_absolute() or ".." in parts or not parts:
            parts = [p.name or "item"]
        *dirs, last = [_safe_part(x) for x in parts]
        q = PurePosixPath(last)
        stem = q.stem if q.suffix else last
        names.append("/".join([_fit_name(d) for d in dirs] + [_fit_name(stem, ".png")]))
    seen: Dict[str, str] = {}
    for i, n in zip(ids, names):
        if n in seen:
            raise DataError(f"two items would be written to {n} ({_shown(seen[n])} and {_shown(i)}); give files with "
                            "distinct names")
        seen[n] = i
    for n, i in seen.items():
        parts = n.split("/")
        for k in range(1, len(parts)):
            folder = "/".join(parts[:k])
            if folder in seen:
                raise DataError(f"the item {_shown(seen[folder])} would be written to {folder}, which the item "
                                f"{_shown(i)} needs as a folder ({n}); give files with distinct names")
    if out is not None:
        longest = max(names, key=lambda n: len(os.fsencode(n)))
        full = os.fsencode(os.path.join(os.path.abspath(out), longest))
        if len(full) >= PATH_MAX:
            raise DataError(f"the item {_shown(seen[longest])} makes a path of {len(full)} bytes under {out}, longer "
                            f"than the {PATH_MAX - 1} the system opens; give items with shorter names or a shorter "
                            "--out")
    return names


def _shown(item_id) -> str:
    """An identity in a message: quoted, its control characters escaped, at most 80 characters."""
    text = repr(str(item_id))
    return text if len(text) <= 80 else text[:60] + "..." + text[-17:]


# a folder of PNGs is written into a hidden sibling first: OUT -> .OUT.aevb-partial-PID
PARTIAL = ".aevb-partial-"


def stage_path(out: Path, pid: Optional[int] = None) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}{PARTIAL}{os.getpid() if pid is None else pid}"


class PngFolder:
    """Write PNGs into a folder that appears complete: they go into a hidden sibling
    (:func:`stage_path`), which becomes ``out`` only when every file is written; when ``out``
    already exists (an empty folder, checked before the work) the files are moved into it, so
    the folder itself (a link to it, its permissions, a shell's current folder) is kept. On
    failure nothing is left. Use as a context manager (under :class:`OutputClaim`) and call
    :meth:`write`."""

    def __init__(self, out: Path, image_shape: Sequence[int], option: str = "--out"):
        self.out, self.shape, self.option = Path(out), tuple(image_shape), option
        self.stage = stage_path(self.out)

    def __enter__(self) -> "PngFolder":
        if self.stage.exists():
            shutil.rmtree(self.stage)
        self.stage.mkdir(parents=True)
        return self

    def write(self, names: Sequence[str], x: Tensor) -> None:
        for name, img in zip(names, to_images(x, self.shape)):
            path = self.stage / name
            data = png_bytes(img)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):  # named as the folder the user asked for
                    raise DiskFullError(self.out / name, len(data)) from None
                raise

    def __exit__(self, exc_type, *exc) -> bool:
        if exc_type is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
            return False
        try:
            if self.out.is_dir() and not self.out.is_symlink():
                if any(self.out.iterdir()):
                    raise DataError(f"{self.option} {self.out} was filled by another program while this command "
                                    "worked; nothing was written into it: empty it or give a new folder")
                for entry in os.listdir(self.stage):
                    os.rename(self.stage / entry, self.out / entry)
                self.stage.rmdir()
            elif os.path.lexists(self.out):
                raise DataError(f"{self.option} {self.out} was made a file or a link by another program while this "
                                "command worked; nothing was written to it: give a new folder")
            else:
                os.rename(self.stage, self.out)
        except BaseException:
            shutil.rmtree(self.stage, ignore_errors=True)
            raise
        return False


def resolve_output(path, option: str = "--out") -> Path:
    """The real place of an output: links followed and ``.`` or ``..`` resolved, so that the work
    goes where the name points (a link to a folder stays a link to the folder that is written)."""
    real = Path(os.path.realpath(os.path.abspath(path)))
    if not real.name:
        raise DataError(f"{option} {path} is the root folder; give a folder under it")
    return real


def _size(p: Path) -> str:
    if p.is_dir():
        n = sum(1 for q in p.rglob("*") if q.is_file())
        return count(n, "file")
    try:
        return format_bytes(p.stat().st_size)
    except OSError:
        return "?"


def leftovers(out: Path) -> List[Path]:
    """What killed writers of ``out`` left beside it: folders of PNGs not yet complete
    (``.OUT.aevb-partial-PID``, of any process but this one) and the temporary files of atomic
    writes (``.OUT.XXXX.tmp``, and those of a .npy table's ids file) that no live writer holds.
    Look only while holding the output's claim (:class:`OutputClaim`): no other writer of
    ``out`` is at work then."""
    out = Path(out)
    found = []
    try:
        for p in sorted(out.parent.glob(f".{glob_escape(out.name)}{PARTIAL}*")):
            pid = p.name[len(out.name) + 1 + len(PARTIAL):]
            if pid.isdigit() and int(pid) != os.getpid() and p.is_dir() and not p.is_symlink():
                found.append(p)
    except OSError:
        pass
    found += temporaries_of(out)
    if out.suffix.lower() == ".npy":
        found += temporaries_of(ids_path(out))
    return found


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


class OutputClaim:
    """The one writer of an output file or folder (``aevb encode --out``, ``aevb reconstruct
    --data ... --out``): a lock file beside it (:func:`aevb.lock.output_lock_path`, freed by the
    system when its process ends, however it ends), so that a second command writing the same
    output is refused before its work, naming the first. Taking it removes what killed writers
    of the output left (:func:`leftovers`) and says so in one line through ``say``."""

    def __init__(self, out, say=None, option: str = "--out", shown=None):
        # ``shown``: the output as the user named it (a link, '.'), for the refusal
        self.out, self.say, self.option = Path(out), say, option
        self.lock = RunLock(Path(shown if shown is not None else out), output_lock_path(self.out))
        self.removed: List[str] = []

    def __enter__(self) -> "OutputClaim":
        self.lock.acquire("write")
        try:
            for p in leftovers(self.out):
                what = f"{p.name} ({_size(p)})"
                try:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                except OSError as e:
                    raise DataError(f"{self.option} {self.out}: {p}, left by a writer that was killed, cannot be "
                                    f"removed ({e.strerror or e}); remove it and run the command again") from None
                self.removed.append(what)
            if self.removed and self.say is not None:
                self.say(f"removed what a killed writer of {self.out} left beside it: {', '.join(self.removed)}")
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, *exc) -> bool:
        self.lock.release()
        return False


def check_png_folder(out: Path, option: str = "--out") -> None:
    """Refuse, before any work, an output folder that exists and is not empty."""
    out = Path(out)
    if out.exists() and out.is_dir() and any(out.iterdir()):
        raise DataError(f"{option} {out} exists and is not empty; give a new or empty folder")


# the text file beside a .npy table that holds its rows' ids
IDS_SUFFIX = ".ids.txt"


def ids_path(path) -> Path:
    """The text file beside a ``.npy`` table that holds the ids of its rows, one per line:
    ``codes.npy`` -> ``codes.ids.txt``."""
    path = Path(path)
    return path.with_name(path.stem + IDS_SUFFIX)
