"""Fingerprints of data sets that carry no published checksum (``array:PATH``, ``folder:PATH``).

A run records the fingerprint of its data when it starts; a resume compares it with the data
found now, so that a run never continues silently on data that changed under it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(spec: str) -> Optional[dict]:
    """{'sha256', 'files', 'bytes'} of the files behind an ``array:`` or ``folder:`` spec (for a
    folder: every image's relative path and content, and ``duplicates``: how many files repeat
    another's bytes exactly), or None for built-in data sets (their
    files are checksummed when loaded) and for paths that do not exist."""
    prefix, sep, rest = spec.strip().partition(":")
    if not sep or not rest.strip():
        return None
    root = Path(rest.strip()).expanduser()
    if prefix.lower() in ("array", "npy", "npz"):
        if not root.is_file():
            return None
        return {"sha256": _sha256(root), "files": 1, "bytes": root.stat().st_size}
    if prefix.lower() == "folder":
        if not root.is_dir():
            return None
        from .folder import find_images

        h, total, contents = hashlib.sha256(), 0, set()
        files = find_images(root)
        for f in files:
            rel = os.path.relpath(f, root)
            digest = _sha256(f)
            contents.add(digest)
            h.update(rel.encode("utf-8", "surrogateescape") + b"\0" + digest.encode() + b"\n")
            total += f.stat().st_size
        return {"sha256": h.hexdigest(), "files": len(files), "bytes": total,
                "duplicates": len(files) - len(contents)}
    return None


def describe_change(spec: str, then: dict, now: Optional[dict]) -> str:
    if now is None:
        return f"{spec} is no longer there"
    return (f"{spec} changed since the run started ({then.get('files')} file(s), {then.get('bytes')} bytes, "
            f"sha256 {str(then.get('sha256'))[:12]}... then; {now['files']} file(s), {now['bytes']} bytes, "
            f"sha256 {now['sha256'][:12]}... now)")
