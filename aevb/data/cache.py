"""The on-disk cache of prepared data: one uint8 file per split, memory-mappable, and a manifest.

A cache folder ``<cache root>/<name>-<key>/`` holds::

    manifest.json        format and version, the options it was built with, the source
                         fingerprint, per split: rows, file, labels; image shape, kind, levels
    sources.tsv.gz       every source file with its size and modification time (ns)
    train.u8 valid.u8 test.u8             rows [N, D] uint8, C-order, nothing else
    train.labels.npy ...                  int64 labels, when the data have them

``key`` is a digest of the source and the options, so other options get another folder. A cache
is built in a ``.partial-*`` sibling folder and renamed into place only when every file and the
manifest are written: an interrupted or failed conversion never leaves a folder that looks
complete, and its leftovers are removed by the next build. The source fingerprint (paths, sizes,
modification times of every file) is checked each time a cache is opened; a changed source is
rebuilt, with a line saying so.

A cache proves itself before it is used (``check_cache``): the manifest is sealed (a SHA-256 of
its content), names the options it was built for, and every key has its type and range; files
are the split's own names inside the folder, each data file has rows x dim bytes and, when it is
at most FULL_CHECK_BYTES, the CRC-32 recorded when it was built (larger ones: a CRC-32 of
SAMPLE_BLOCKS blocks spread over the file). Anything else is rebuilt, with a line saying why;
a cache that fails a check is never read.

It is a little over 400 lines because building a cache and proving one before use (the sealed
manifest, its schema, the files' checksums) must stay together: the check reads exactly what the
build writes.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
import uuid
import zlib
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..units import format_bytes
from .base import KIND_BINARY, KIND_UNIT, DataError

CACHE_FORMAT = "aevb-data-cache"
CACHE_VERSION = 1
MANIFEST = "manifest.json"
SOURCES = "sources.tsv.gz"
_PARTIAL = ".partial-"

# Each time a cache is opened, a data file of up to this many bytes is read whole and its CRC-32
# compared with the one recorded when it was built: about 25 ms for a 60,000-image MNIST-size
# file (47 MB) on one core from the page cache, so at most about 0.5 s at this bound. A larger
# file has SAMPLE_BLOCKS blocks of SAMPLE_BLOCK bytes, spread evenly over it, checked instead.
FULL_CHECK_BYTES = 1 << 30
SAMPLE_BLOCKS, SAMPLE_BLOCK = 64, 1 << 16
_CHUNK = 1 << 22


# ---------------------------------------------------------------------------- sizes and budgets
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024 ** 2, "mb": 1000 ** 2,
          "mib": 1024 ** 2, "g": 1024 ** 3, "gb": 1000 ** 3, "gib": 1024 ** 3, "t": 1024 ** 4,
          "tb": 1000 ** 4, "tib": 1024 ** 4}


MAX_SIZE = 10 ** 18  # 1 EB: larger sizes are refused as out of range


def parse_size(text) -> int:
    """Bytes from ``500MB``, ``8GB``, ``1.5GiB``, ``800M`` or a plain number of bytes
    (KB/MB/GB are powers of 1000; K/M/G and KiB/MiB/GiB powers of 1024)."""
    if isinstance(text, bool):
        raise DataError(f"a size must be like 500MB or 8GB, got {text!r}")
    if isinstance(text, (int, float)):
        value, unit = (float(text) if abs(text) <= MAX_SIZE else math.inf), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise DataError(f"a size must be like 500MB, 8GB or 1.5GiB, got {text!r}")
        value, unit = float(m.group(1)), m.group(2).lower()
    if not math.isfinite(value) or value * _UNITS[unit] > MAX_SIZE:
        shown = text if len(str(text)) <= 40 else f"{str(text).strip()[:12]}... ({len(str(text).strip())} characters)"
        raise DataError(f"a size of {shown} is out of range: at most 1 EB (10**18 bytes)")
    n = int(value * _UNITS[unit])
    if n <= 0:
        raise DataError(f"a size must be positive, got {text!r}")
    return n


def physical_memory() -> int:
    """Bytes of RAM, or 0 where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return 0


def memory_budget(text=None) -> int:
    """The data memory budget in bytes: ``text`` (e.g. ``8GB``) or a quarter of physical memory."""
    if text is None or text == "" or str(text).lower() == "auto":
        return (physical_memory() or 8 * 1024 ** 3) // 4
    return parse_size(text)


# ---------------------------------------------------------------------------- where caches live
def cache_root(cache_dir=None) -> Path:
    """``cache_dir``, else ``$AEVB_CACHE``, else ``$XDG_CACHE_HOME/aevb/prepared`` (default
    ``~/.cache/aevb/prepared``)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("AEVB_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "aevb" / "prepared"


def cache_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def cache_folder(name: str, identity: dict, cache_dir=None) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:40] or "data"
    return cache_root(cache_dir) / f"{safe}-{cache_key(identity)}"


# ---------------------------------------------------------------------------- source fingerprints
def listing(paths: Iterable[Path], root: Path) -> List[Tuple[str, int, int]]:
    """[(path relative to root, size in bytes, modification time in ns)] of ``paths``."""
    out = []
    for p in paths:
        st = os.stat(p)
        try:
            rel = os.path.relpath(p, root)
        except ValueError:  # pragma: no cover - another drive on Windows
            rel = str(p)
        out.append((rel, st.st_size, st.st_mtime_ns))
    return out


def fingerprint(entries: Sequence[Tuple[str, int, int]]) -> str:
    h = hashlib.sha256()
    for rel, size, mtime in entries:
        h.update(f"{rel}\t{size}\t{mtime}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _read_sources(folder: Path) -> Dict[str, Tuple[int, int]]:
    try:
        with gzip.open(folder / SOURCES, "rt", encoding="utf-8", errors="surrogateescape") as f:
            rows = (line.rstrip("\n").split("\t") for line in f)
            return {r[0]: (int(r[1]), int(r[2])) for r in rows if len(r) == 3}
    except (OSError, ValueError):
        return {}


def describe_change(folder: Path, entries: Sequence[Tuple[str, int, int]]) -> str:
    """'3 added, 1 removed, 2 changed' between a cache's recorded sources and ``entries``."""
    old = _read_sources(folder)
    new = {rel: (size, mtime) for rel, size, mtime in entries}
    added = sum(1 for k in new if k not in old)
    removed = sum(1 for k in old if k not in new)
    changed = sum(1 for k, v in new.items() if k in old and old[k] != v)
    return f"{added} added, {removed} removed, {changed} changed"


# ---------------------------------------------------------------------------- reading a cache
def read_manifest(folder: Path) -> Optional[dict]:
    """The manifest of a complete cache folder, or None (absent, unreadable, other format)."""
    try:
        m = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or m.get("format") != CACHE_FORMAT:
        return None
    return m


def file_checksum(path: Path) -> str:
    """CRC-32 of a whole file (fast: a few GB/s)."""
    crc = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(_CHUNK)
            if not block:
                return f"crc32:{crc:08x}"
            crc = zlib.crc32(block, crc)


def sample_checksum(path: Path) -> str:
    """CRC-32 of SAMPLE_BLOCKS blocks spread evenly over a file (for files too large to read whole)."""
    size, crc = os.path.getsize(path), 0
    last = max(0, size - SAMPLE_BLOCK)
    with open(path, "rb") as f:
        for i in range(SAMPLE_BLOCKS):
            f.seek(last * i // (SAMPLE_BLOCKS - 1))
            crc = zlib.crc32(f.read(SAMPLE_BLOCK), crc)
    return f"crc32-sampled:{crc:08x}"


def data_checksums(path: Path) -> dict:
    """What a split's data file records when built: the whole-file and the sampled CRC-32."""
    return {"checksum": file_checksum(path), "sample_checksum": sample_checksum(path)}


def seal(manifest: dict) -> str:
    """SHA-256 of a manifest's content (all but its seal)."""
    body = {k: v for k, v in manifest.items() if k != "seal"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _count(v, least: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def check_cache(folder: Path, identity: dict, splits: Sequence[str]) -> Tuple[Optional[dict], Optional[str]]:
    """(manifest, None) when ``folder`` holds a complete, sound cache of the data ``identity``
    describes with exactly ``splits``; (None, None) when it holds none; else (None, why it cannot
    be used). Reads nothing outside ``folder``."""
    path = folder / MANIFEST
    if not path.exists():
        return None, None
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, f"its manifest cannot be read ({type(e).__name__})"
    if not isinstance(m, dict) or m.get("format") != CACHE_FORMAT:
        return None, "its manifest is not an aevb data cache manifest"
    if m.get("version") != CACHE_VERSION:
        return None, "was written by another version of aevb"
    if "seal" not in m:
        return None, "was built by an earlier aevb, without checksums"
    if m.get("seal") != seal(m):
        return None, "has a manifest that was changed after the cache was built"
    if m.get("source") != json.loads(json.dumps(identity)):  # (as JSON has it: tuples are lists)
        return None, "has a manifest built for other data or options"
    why = _check_keys(m, splits)
    if why:
        return None, f"has a manifest that {why}"
    for name, entry in m["splits"].items():
        why = _check_files(folder, name, entry)
        if why:
            return None, why
    return m, None


def _check_keys(m: dict, splits: Sequence[str]) -> Optional[str]:
    shape = m.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_count(v, 1) for v in shape)):
        return f"gives image_shape {shape!r}, not three positive whole numbers"
    if m.get("kind") not in (KIND_BINARY, KIND_UNIT) or m.get("levels") != (2 if m["kind"] == KIND_BINARY else 256):
        return f"gives kind {m.get('kind')!r} with levels {m.get('levels')!r}"
    if not isinstance(m.get("fingerprint"), str) or not isinstance(m.get("info", {}), (dict, type(None))):
        return "lacks the source fingerprint or has info of the wrong type"
    got = m.get("splits")
    if not isinstance(got, dict) or sorted(got) != sorted(splits):
        names = sorted(got) if isinstance(got, dict) else got
        return f"lists the splits {names!r}, expected {sorted(splits)}"
    dim = shape[0] * shape[1] * shape[2]
    for name, e in got.items():
        if not isinstance(e, dict):
            return f"describes the {name} split by {e!r}"
        if e.get("file") != f"{name}.u8" or e.get("labels") not in (None, f"{name}.labels.npy"):
            return f"names the files {e.get('file')!r} and {e.get('labels')!r} for the {name} split"
        if not _count(e.get("rows"), 1) or e.get("dim") != dim:
            return (f"gives the {name} split {e.get('rows')!r} rows of {e.get('dim')!r} values "
                    f"(images of {shape[0]}x{shape[1]}x{shape[2]} = {dim} values)")
        sums = [e.get("checksum"), e.get("sample_checksum")] + ([e.get("labels_checksum")] if e.get("labels") else [])
        if not all(isinstance(c, str) for c in sums):
            return f"lacks a checksum of the {name} split"
    return None


def _inside(folder: Path, name: str) -> Optional[Path]:
    """``folder / name`` when it is a regular file in ``folder`` itself (no link out of it)."""
    p = folder / name
    if p.is_symlink() or not p.is_file() or p.resolve().parent != folder.resolve():
        return None
    return p


def _check_files(folder: Path, name: str, e: dict) -> Optional[str]:
    data = _inside(folder, e["file"])
    if data is None:
        return f"lacks its data file {e['file']}"
    size, expected = data.stat().st_size, e["rows"] * e["dim"]
    if size != expected:
        return f"has {size} bytes in {e['file']}, but its manifest says {e['rows']} x {e['dim']} = {expected}"
    if size <= FULL_CHECK_BYTES:
        if file_checksum(data) != e["checksum"]:
            return f"has a data file {e['file']} whose content changed since it was built (checksum)"
    elif sample_checksum(data) != e["sample_checksum"]:
        return f"has a data file {e['file']} whose content changed since it was built (sampled checksum)"
    if e.get("labels"):
        labels = _inside(folder, e["labels"])
        if labels is None:
            return f"lacks its labels file {e['labels']}"
        if file_checksum(labels) != e["labels_checksum"]:
            return f"has a labels file {e['labels']} whose content changed since it was built (checksum)"
    return None


def open_split(folder: Path, entry: dict) -> Tuple[np.memmap, Optional[np.ndarray]]:
    """(rows [N, D] uint8 memmap, labels or None) of one split of a cache."""
    path = folder / entry["file"]
    n, d = int(entry["rows"]), int(entry["dim"])
    expected = n * d
    actual = path.stat().st_size if path.is_file() else -1
    if actual != expected:
        raise DataError(f"the data cache {folder} is damaged: {path.name} has {actual} bytes, expected "
                        f"{expected}; delete the folder and it will be rebuilt")
    x = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, d)) if n else np.zeros((0, d), np.uint8)
    y = None
    if entry.get("labels"):
        y = np.load(folder / entry["labels"], allow_pickle=False)
    return x, y


# ---------------------------------------------------------------------------- writing a cache
def clean_partials(root: Path, max_age_s: float = 0.0) -> None:
    """Remove leftovers of interrupted builds (``*.partial-PID-*`` of processes that are gone)."""
    if not root.is_dir():
        return
    for p in root.iterdir():
        m = re.search(re.escape(_PARTIAL) + r"(\d+)-", p.name)
        if not m:
            continue
        pid = int(m.group(1))
        alive = True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            alive = False
        except PermissionError:  # pragma: no cover - someone else's live process
            alive = True
        if not alive or (max_age_s and time.time() - p.stat().st_mtime > max_age_s):
            shutil.rmtree(p, ignore_errors=True)


class CacheBuild:
    """A cache being written: ``with CacheBuild(folder, needed_bytes) as b: ...; b.commit(manifest)``.

    Files are written into ``b.path`` (a partial folder beside ``folder``). ``commit`` writes the
    manifest last and renames the folder into place; leaving the block without a commit (an
    error, Ctrl-C) removes the partial folder. Disk space is checked first."""

    def __init__(self, folder: Path, needed_bytes: int):
        self.folder = Path(folder)
        self.needed = int(needed_bytes)
        self.path = self.folder.parent / f"{self.folder.name}{_PARTIAL}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.committed = False

    def __enter__(self) -> "CacheBuild":
        root = self.folder.parent
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create the data cache folder {root} ({e.strerror}); "
                            "set --cache-dir or AEVB_CACHE to a writable folder") from None
        clean_partials(root)
        free = shutil.disk_usage(root).free
        if self.needed > free:
            raise DataError(f"not enough disk space for the data cache in {root}: it needs "
                            f"{format_bytes(self.needed)} and {format_bytes(free)} are free. Free some "
                            "space, or put the cache elsewhere with --cache-dir or AEVB_CACHE")
        self.path.mkdir()
        return self

    def allocate(self, name: str, nbytes: int) -> Path:
        """A file of ``nbytes`` bytes with its space reserved (disk full fails here, at once)."""
        p = self.path / name
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if nbytes:
                try:
                    os.posix_fallocate(fd, 0, nbytes)
                except (AttributeError, OSError) as e:
                    if isinstance(e, OSError) and is_disk_full(e):
                        raise
                    os.ftruncate(fd, nbytes)  # no fallocate on this file system
        finally:
            os.close(fd)
        return p

    def commit(self, manifest: dict, sources: Sequence[Tuple[str, int, int]]) -> None:
        with gzip.open(self.path / SOURCES, "wt", encoding="utf-8", errors="surrogateescape") as f:
            for rel, size, mtime in sources:
                f.write(f"{rel}\t{size}\t{mtime}\n")
        for p in self.path.iterdir():  # the data reach the disk before the manifest says complete
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
        manifest = {"format": CACHE_FORMAT, "version": CACHE_VERSION, **manifest,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for entry in manifest.get("splits", {}).values():  # what the cache proves itself by when opened
            entry.update(data_checksums(self.path / entry["file"]))
            if entry.get("labels"):
                entry["labels_checksum"] = file_checksum(self.path / entry["labels"])
        manifest["seal"] = seal(manifest)
        tmp = self.path / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, self.path / MANIFEST)
        if self.folder.exists():  # an outdated cache: move it aside, then remove it
            old = self.folder.parent / f"{self.folder.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(self.folder, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(self.path, self.folder)
        self.committed = True

    def __exit__(self, exc_type, exc, tb):
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)
        if exc is not None and is_disk_full(exc):
            raise DataError(f"the disk filled up while writing the data cache in {self.folder.parent} "
                            f"(it needs {format_bytes(self.needed)}); nothing was kept. Free some space, or "
                            "put the cache elsewhere with --cache-dir or AEVB_CACHE") from None
        return False


def is_disk_full(e: BaseException) -> bool:
    import errno

    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def say(msg: str) -> None:
    """A line for the user about the data (cache built, reused, rebuilt) on stderr."""
    print(f"aevb: {msg}", file=sys.stderr, flush=True)
