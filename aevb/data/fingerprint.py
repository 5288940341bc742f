"""Fingerprints of data sets that carry no published checksum (``array:PATH``, ``folder:PATH``).

A run records the fingerprint of its data when it starts; a resume compares it with the data
found now, so that a run never continues silently on data that changed under it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

from .base import DataError
from .cache import fingerprint as stat_digest  # sha256 of (path, size, mtime) lines, as the data cache keeps
from .folder import find_images
from .spec import ARRAY, FOLDER, parse_spec


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# Above these sizes content is not hashed (a start would read gigabytes): files are then known by
# path, size and modification time, as the data cache knows its sources.
HASH_BYTES = 256 * 2 ** 20
DUPLICATE_CHECK_FILES = 5000


def fingerprint(spec: str) -> Optional[dict]:
    """{'sha256', 'files', 'bytes', 'method'} of the files behind an ``array:`` or ``folder:``
    spec, or None for built-in data sets (their files are checksummed when loaded) and for paths
    that do not exist. ``method`` is ``content`` (sha256 of the bytes, for data up to 256 MB) or
    ``stat`` (paths, sizes and modification times, for larger data). A small folder also gets
    ``duplicates``: how many files repeat another's bytes exactly."""
    try:
        parsed = parse_spec(spec)
    except DataError:  # not a spec of files (the loader says what is wrong with it)
        return None
    root = parsed.path
    if parsed.form == ARRAY:
        if not root.is_file():
            return None
        st = root.stat()
        if st.st_size <= HASH_BYTES:
            return {"sha256": _sha256(root), "files": 1, "bytes": st.st_size, "method": "content"}
        return {"sha256": stat_digest([(root.name, st.st_size, st.st_mtime_ns)]), "files": 1,
                "bytes": st.st_size, "method": "stat"}
    if parsed.form == FOLDER:
        if not root.is_dir():
            return None
        files = find_images(root)
        entries = []
        for f in files:
            try:
                st = f.stat()
            except OSError:  # a broken link: refused when the images are read
                continue
            entries.append((os.path.relpath(f, root), st.st_size, st.st_mtime_ns))
        total = sum(e[1] for e in entries)
        if len(files) > DUPLICATE_CHECK_FILES or total > HASH_BYTES:
            return {"sha256": stat_digest(entries), "files": len(files), "bytes": total, "method": "stat"}
        h, contents = hashlib.sha256(), set()
        for f, (rel, _, _) in zip([f for f in files if f.exists()], entries):
            digest = _sha256(f)
            contents.add(digest)
            h.update(rel.encode("utf-8", "surrogateescape") + b"\0" + digest.encode() + b"\n")
        return {"sha256": h.hexdigest(), "files": len(files), "bytes": total, "method": "content",
                "duplicates": len(entries) - len(contents)}
    return None


def describe_change(spec: str, then: dict, now: Optional[dict]) -> str:
    if now is None:
        return f"{spec} is no longer there"
    return (f"{spec} changed since the run started ({then.get('files')} file(s), {then.get('bytes')} bytes, "
            f"sha256 {str(then.get('sha256'))[:12]}... then; {now['files']} file(s), {now['bytes']} bytes, "
            f"sha256 {now['sha256'][:12]}... now)")
