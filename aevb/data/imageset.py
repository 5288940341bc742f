"""Image files to a :class:`Dataset`, through the on-disk cache (aevb/data/cache.py).

Loaders of pictures (``folder:``, ``celeba``) describe *which* files form which split and with
which labels (an :class:`ImagePlan`); this module does the rest the same way for all of them:
fingerprint the sources, reuse the cache when it matches or build it (images decoded in parallel
workers, progress bar with ETA), then hand out splits held in memory when the data fit the
memory budget, or memory-mapped from the cache (streamed) when they do not.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..units import format_bytes
from . import cache
from .base import KIND_BINARY, KIND_UNIT, DataError, Dataset, Split
from .decode import ImageSpec, Job, decode_all, probe, probe_all
from .utils import hold_out_test

# colour modes a setting may name, with their channels
COLOR_CHANNELS = {"grey": 1, "rgb": 3}

_MAX_LISTED = 20


@dataclass
class ImagePlan:
    """What to read. ``files``: split name ('train', 'valid', 'test', or 'all' for one pool from
    which a fixed 10% is held out as test) -> image paths; ``labels``: the same keys -> int64
    labels or None; ``root``: the folder the sources are listed relative to; ``extra_sources``:
    other files whose change must rebuild the cache (e.g. a partition file); ``listed``: the
    files were named one by one (not found in a folder), so the list is what the data are and
    another list gets a cache of its own."""

    name: str
    kind: str  # 'folder' or 'celeba': part of the cache identity
    root: Path
    files: Dict[str, List[Path]]
    labels: Dict[str, Optional[np.ndarray]] = field(default_factory=dict)
    size: Optional[Tuple[int, int]] = None
    color: str = "auto"  # auto, grey, rgb
    crop: Optional[Tuple[int, int]] = None
    extra_sources: Sequence[Path] = ()
    info: dict = field(default_factory=dict)
    listed: bool = False


@dataclass
class LoadOptions:
    """How to load: where the cache lives, the memory budget (bytes), whether unreadable images
    are skipped, worker processes (0: one per core), progress bars, reduced-size JPEG decoding."""

    cache_dir: Optional[str] = None
    memory_budget: Optional[int] = None
    skip_bad_images: bool = False
    workers: int = 0
    progress: bool = True
    draft: bool = True
    rebuild: bool = False

    @property
    def budget(self) -> int:
        return cache.memory_budget(self.memory_budget)


def _listing_text(items: Sequence[str]) -> str:
    shown = "\n".join(f"  {s}" for s in items[:_MAX_LISTED])
    more = f"\n  ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return shown + more


def unreadable(name: str, problems: Sequence[str]) -> DataError:
    """The error for image files that could not be read (one line per file in ``problems``)."""
    return DataError(f"{name}: {len(problems)} image file(s) could not be read; fix or remove them, or skip them "
                     f"(--skip-bad-images; skip_bad_images=True in Python):\n" + _listing_text(problems))


def file_identity(path) -> Optional[Tuple[int, int]]:
    """(device, inode) of the file ``path`` names, links followed; None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_splits_share_no_file(files: Dict[str, List[Path]], source: str,
                               identities: Optional[Dict[str, List[Optional[Tuple[int, int]]]]] = None) -> None:
    """Refuse splits in which two entries are one file under different names (a symbolic link to
    it, or a hard link of it: the same device and inode), naming both: a test bound would then
    measure training data. ``identities``: the file_identity of each path where the caller has
    them already. Files that cannot be read are left to the decoder to report."""
    if len(files) < 2:
        return
    first: Dict[Tuple[int, int], Tuple[str, Path]] = {}
    clashes: List[str] = []
    for split, paths in files.items():
        ids = identities[split] if identities is not None else [file_identity(p) for p in paths]
        for p, key in zip(paths, ids):
            if key is None:
                continue
            seen = first.setdefault(key, (split, p))
            if seen[0] != split:
                clashes.append(f"{seen[1]} ({seen[0]}) and {p} ({split})")
    if clashes:
        shown = "; ".join(clashes[:3]) + (f"; and {len(clashes) - 3} more" if len(clashes) > 3 else "")
        raise DataError(f"{source}: {len(clashes)} image(s) are in two splits under two names of one file "
                        f"(a symbolic or hard link): {shown}; every image must be in one split only (otherwise "
                        f"the test bound measures training data): remove one of the two names")


def _identity(plan: ImagePlan, opts: LoadOptions) -> dict:
    return {"version": cache.CACHE_VERSION, "kind": plan.kind, "root": os.path.realpath(plan.root),
            "size": plan.size, "color": plan.color, "crop": plan.crop,
            "skip_bad_images": bool(opts.skip_bad_images), "draft": bool(opts.draft),
            **({"files": _list_digest(plan)} if plan.listed else {})}


def _list_digest(plan: ImagePlan) -> str:
    """SHA-256 of the files' paths relative to the root, in their order (the rows' order)."""
    names = "\n".join(os.path.relpath(p, plan.root) for fl in plan.files.values() for p in fl)
    return hashlib.sha256(names.encode()).hexdigest()


def _sources(plan: ImagePlan):
    paths = [p for fl in plan.files.values() for p in fl] + list(plan.extra_sources)
    try:
        return cache.listing(paths, plan.root)
    except OSError as e:
        raise DataError(f"{plan.name}: cannot read {e.filename} ({e.strerror})") from None


def image_cache(plan: ImagePlan, opts: LoadOptions) -> Tuple[Path, dict, bool]:
    """(cache folder, manifest, built_now) for ``plan``: the matching cache, built if needed."""
    entries = _sources(plan)
    fp = cache.fingerprint(entries)
    identity = _identity(plan, opts)
    folder = cache.cache_folder(plan.name.replace("folder:", "folder-"), identity, opts.cache_dir)
    if not opts.rebuild:
        manifest, why = cache.check_cache(folder, identity, list(plan.files))
        if why is not None:  # never used: rebuilt
            cache.say(f"the data cache {folder} {why}; rebuilding it")
        elif manifest is not None and manifest["fingerprint"] == fp:
            return folder, manifest, False
        elif manifest is not None:
            cache.say(f"{plan.name} changed since its cache was built "
                      f"({cache.describe_change(folder, entries)}); rebuilding {folder}")
    manifest = _build(plan, opts, folder, entries, fp)
    return folder, manifest, True


def _target(plan: ImagePlan, opts: LoadOptions) -> Tuple[Tuple[int, int], int]:
    """((H, W), channels) of the rows: from the options, else from the image headers."""
    size, color = plan.size, plan.color
    if size is not None and color != "auto":
        return size, 3 if color == "rgb" else 1
    paths = [str(p) for fl in plan.files.values() for p in fl]
    probes = probe_all(paths, opts.workers, progress=opts.progress)
    bad = [f"{p}: {err}" for p, _, _, err in probes if err]
    if bad and not opts.skip_bad_images:
        raise unreadable(plan.name, bad)
    good = [(p, s, g) for p, s, g, err in probes if not err]
    if not good:
        raise DataError(f"{plan.name}: none of the {len(probes)} image files could be read")
    if size is None:
        check_same_size(plan.name, good)
        size = good[0][1]
        if plan.crop is not None:
            size = tuple(plan.crop)
    channels = COLOR_CHANNELS.get(color) or (3 if any(not g for _, _, g in good) else 1)
    return tuple(size), channels


def check_same_size(name: str, probes: Sequence[Tuple[str, Tuple[int, int], bool]]) -> None:
    """Refuse, in one line naming two files, pictures of different sizes (from their headers,
    [(path, (h, w), grey)]) when no image size was given: rows of one data set have one size."""
    path, first, _ = probes[0]
    others = [(p, s) for p, s, _ in probes if s != first]
    if others:
        p, s = others[0]
        more = f" (and {len(others) - 1} more differ from the first)" if len(others) > 1 else ""
        raise DataError(f"{name}: the images have different sizes: {path} is {first[0]}x{first[1]} but {p} is "
                        f"{s[0]}x{s[1]} (height x width){more}; give an image size to resize them all to "
                        f"(e.g. --image-size {first[0]} {first[1]}; image_size=({first[0]}, {first[1]}) in Python)")


def _build(plan: ImagePlan, opts: LoadOptions, folder: Path, entries, fp: str) -> dict:
    size, channels = _target(plan, opts)
    if plan.crop is not None:  # a crop larger than the pictures: said once, before decoding them all
        first = next(p for fl in plan.files.values() for p in fl)
        try:
            (h, w), _ = probe(first)
        except Exception:  # an unreadable first file is reported with the others
            h = w = None
        if h is not None and (plan.crop[0] > h or plan.crop[1] > w):
            raise DataError(f"{plan.name}: the crop {plan.crop[0]}x{plan.crop[1]} is larger than the images "
                            f"({h}x{w}, height x width, e.g. {first}); give a crop that fits (--crop H W; crop=(H, W) in "
                            "Python)")
    spec = ImageSpec(channels=channels, size=size, crop=plan.crop, draft=opts.draft)
    counts = {name: len(fl) for name, fl in plan.files.items()}
    needed = sum(counts.values()) * spec.dim
    t0 = __import__("time").perf_counter()
    with cache.CacheBuild(folder, needed) as b:
        jobs = [Job(str(b.allocate(f"{name}.u8", n * spec.dim)), spec.dim, list(range(n)),
                    [str(p) for p in plan.files[name]]) for name, n in counts.items()]
        bad, any_colour, binary = decode_all(jobs, spec, opts.workers, desc=f"preparing {plan.name}",
                                             progress=opts.progress)
        if bad and not opts.skip_bad_images:
            raise unreadable(plan.name, [m for _, _, m in bad])
        bad_rows = {name: sorted(r for out, r, _ in bad if Path(out).name == f"{name}.u8") for name in counts}
        if bad:
            cache.say(f"{plan.name}: skipped {len(bad)} unreadable image file(s) (--skip-bad-images)")
        if plan.color == "auto" and channels == 3 and not any_colour:
            channels = 1  # every 'colour' file had three equal channels: grey
        splits = {}
        for name, n in counts.items():
            keep = np.setdiff1d(np.arange(n), np.asarray(bad_rows[name], dtype=np.int64))
            if len(keep) == 0:
                raise DataError(f"{plan.name}: no readable image in the {name} split")
            _compact(b.path / f"{name}.u8", spec.dim, keep, channels, spec.channels)
            entry = {"file": f"{name}.u8", "rows": int(len(keep)), "dim": channels * size[0] * size[1],
                     "labels": None, "skipped_rows": [int(r) for r in bad_rows[name]]}
            y = plan.labels.get(name)
            if y is not None:
                np.save(b.path / f"{name}.labels.npy", np.asarray(y, dtype=np.int64)[keep])
                entry["labels"] = f"{name}.labels.npy"
            splits[name] = entry
        manifest = {"name": plan.name, "source": _identity(plan, opts), "fingerprint": fp,
                    "n_sources": len(entries), "image_shape": [channels, size[0], size[1]],
                    "kind": KIND_BINARY if binary else KIND_UNIT, "levels": 2 if binary else 256,
                    "splits": splits, "skipped": [m for _, _, m in bad][:1000], "info": plan.info,
                    "seconds": round(__import__("time").perf_counter() - t0, 2)}
        b.commit(manifest, entries)
    return cache.read_manifest(folder)


def _compact(path: Path, dim: int, keep: np.ndarray, channels: int, stored_channels: int) -> None:
    """Rewrite a split file in place keeping rows ``keep`` and (grey from RGB) the first channel."""
    n = path.stat().st_size // dim if dim else 0
    if len(keep) == n and channels == stored_channels:
        return
    src = np.memmap(path, dtype=np.uint8, mode="r+", shape=(n, dim))
    per = dim // stored_channels
    out_dim = per * channels
    for start in range(0, len(keep), 4096):  # rows only move towards the start: safe in place
        rows = np.asarray(src[keep[start:start + 4096]])
        rows = rows[:, :out_dim]  # channels first: channel 0 is the first H*W values
        src.reshape(-1)[start * out_dim:(start + len(rows)) * out_dim] = rows.reshape(-1)
    src.flush()
    del src
    os.truncate(path, len(keep) * out_dim)


def image_splits(plan: ImagePlan, opts: LoadOptions) -> Tuple[Dict[str, Split], dict, dict]:
    """({key of plan.files: Split}, manifest, info) of ``plan``, from its cache (built if needed),
    before any hold-out and before deciding where the splits are held. The manifest's entry of
    each split lists ``skipped_rows``, the positions in ``plan.files[key]`` of unreadable files
    left out (--skip-bad-images)."""
    folder, manifest, built = image_cache(plan, opts)
    # a cache of an older aevb that left files out without saying which: built again
    if any("skipped_rows" not in e and e["rows"] != len(plan.files.get(k, ()))
           for k, e in manifest["splits"].items()):
        folder, manifest, built = image_cache(plan, dataclasses.replace(opts, rebuild=True))
    for e in manifest["splits"].values():
        e.setdefault("skipped_rows", [])
    splits = {}
    for name, entry in manifest["splits"].items():
        x, y = cache.open_split(folder, entry)
        splits[name] = Split(x, None if y is None else torch.from_numpy(y), scale=255.0)
    info = dict(manifest.get("info") or {})
    info.update({"cache": str(folder), "cache_reused": not built})
    return splits, manifest, info


def hold_in_memory(splits: Dict[str, Split], opts: LoadOptions, where: str) -> Tuple[Dict[str, Split], str]:
    """The splits read into memory when they fit the memory budget together, else left streamed
    from ``where``; with a sentence saying which."""
    total = sum(s.nbytes for s in splits.values())
    budget = opts.budget
    if total <= budget:
        return ({k: s.in_memory() for k, s in splits.items()},
                f"in memory ({format_bytes(total)} uint8, budget {format_bytes(budget)})")
    return splits, (f"streamed from {where} ({format_bytes(total)} uint8 > memory budget "
                    f"{format_bytes(budget)})")


def open_image_dataset(plan: ImagePlan, opts: LoadOptions) -> Dataset:
    """The Dataset of ``plan``: from its cache (built if needed), in memory when the data fit the
    memory budget, else streamed from the memory-mapped cache files."""
    splits, manifest, info = image_splits(plan, opts)
    if "all" in splits:
        splits["train"], splits["test"], info["test_split"] = hold_out_test(splits.pop("all"), "images", plan.name)
    splits, info["storage"] = hold_in_memory(splits, opts, info["cache"])
    c, h, w = manifest["image_shape"]
    return Dataset(name=plan.name, train=splits["train"], valid=splits.get("valid"), test=splits["test"],
                   image_shape=(c, h, w), kind=manifest["kind"], levels=manifest["levels"], info=info)
