"""Data a trained run has not seen, made ready for its model by the data package's own path, and
what the model says about it: posterior codes, bounds per item, reconstructions, decoded codes.

A *source* is anything aevb reads: ``folder:DIR`` (every PNG / JPEG under DIR, recursively, all
of them: no hold-out), ``array:FILE`` (a .npy or .npz; every split it holds, in the order train,
valid, test), a built-in data set with a split (``mnist:test``), one image file or a list of
them, and in Python also PIL images, numpy arrays or tensors ([N, ...] rows by the rules of
``array:``). Pictures are decoded, cropped, resized and coloured as the run's own data were
(its ``image_size``, ``crop`` and ``color`` settings, through :mod:`aevb.data.imageset` and its
cache), arrays are read by :mod:`aevb.data.arrays`, and the values are binarized when the run's
were. Each item keeps its identity: the file path relative to the folder (or as given), the
row of an array, or the index in a data set's split.

Data that do not fit the model (another image shape, real values for a Bernoulli likelihood)
are refused by :func:`check_fits` with one line naming both and what would fit, before any work.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..data import load_configured
from ..data.arrays import array_splits, read_arrays
from ..data.base import KIND_BINARY, KIND_REAL, SPLITS, Split, binarized
from ..data.folder import EXTENSIONS, find_images, normalise_color, normalise_size
from ..data.imageset import ImagePlan, LoadOptions, image_splits
from ..data.registry import load_dataset, load_options
from ..data.spec import ARRAY, FILE, FOLDER, MEMORY, parse_spec
from ..errors import DataError

SOURCE_FORMS = "folder:DIR, array:FILE, NAME:SPLIT (e.g. mnist:test), an image file or a list of them"


@dataclass
class Items:
    """Data made ready for a run's model: ``split`` (the rows, compact), ``ids`` (one identity
    per row), the image shape (C, H, W), the kind and levels of the values (for bits/dim),
    ``source`` (how it was named) and ``skipped`` (unreadable files left out, 'path: error')."""

    split: Split
    ids: List[str]
    image_shape: Tuple[int, int, int]
    kind: str
    levels: Optional[int]
    source: str
    skipped: List[str] = field(default_factory=list)
    flat: bool = False  # rows of a [N, D] array: no picture shape of their own
    pictures: bool = False  # image files, decoded with the run's image settings
    note: Optional[str] = None
    # (the run's folder, its data settings that decide the preparation: aevb.runs.PREPARATION),
    # set by Run.preprocess; another run takes the items only where those settings are its own
    prepared_for: Optional[Tuple[str, Dict[str, object]]] = None

    def __len__(self) -> int:
        return len(self.split)

    @property
    def dim(self) -> int:
        return self.split.dim


def describe_shape(shape: Sequence[int]) -> str:
    """'grey 28x28 images (1x28x28 = 784 values)' for an image shape (C, H, W)."""
    c, h, w = (int(s) for s in shape)
    if h == 1 and c == 1:
        return f"vectors of {w} values"
    colour = {1: "grey", 3: "RGB"}.get(c, f"{c}-channel")
    return f"{colour} {h}x{w} images ({c}x{h}x{w} = {c * h * w} values)"


# ------------------------------------------------------------------ sources to items
def load_items(source, data_cfg, *, skip_bad_images: bool = False, progress: bool = False,
               seed: int = 0) -> Items:
    """The items of ``source`` (see the module docs) prepared as the run whose data settings are
    ``data_cfg`` prepared its own, binarized as its data were (a run with static binarization
    draws once with its data seed; one with dynamic binarization once with ``seed``, as
    ``aevb evaluate`` does). Nothing is checked against the model here: see :func:`check_fits`."""
    opts = load_options(data_cfg, progress=progress, skip_bad_images=bool(skip_bad_images))
    items = _read(source, data_cfg, opts)
    if len(items) == 0:
        raise DataError(f"{items.source}: no items to use")
    return _binarize_like_run(items, data_cfg, seed)


def _read(source, data_cfg, opts: LoadOptions) -> Items:
    if isinstance(source, (str, os.PathLike)) and not isinstance(source, str):
        source = str(source)
    if isinstance(source, str):
        return _read_spec(source.strip(), data_cfg, opts)
    if isinstance(source, Tensor):
        return _from_arrays({"x": source.detach().cpu().numpy()}, "tensor", opts)
    if isinstance(source, np.ndarray):
        return _from_arrays({"x": source}, "array", opts)
    if _is_pil(source):
        source = [source]
    if isinstance(source, (list, tuple)):
        if not source:
            raise DataError(f"an empty list: nothing to use; give {SOURCE_FORMS}")
        if all(_is_pil(s) for s in source):
            return _from_pil(list(source), data_cfg, opts)
        if all(isinstance(s, (str, os.PathLike)) for s in source):
            return _from_files([Path(s) for s in source], data_cfg, opts)
        raise DataError("a list must hold image file paths or PIL images only")
    raise DataError(f"cannot read a {type(source).__name__}; give {SOURCE_FORMS}, a PIL image, "
                    "a numpy array or a tensor")


def _is_pil(x) -> bool:
    return type(x).__module__.startswith("PIL.") and hasattr(x, "getbands")


def _read_spec(spec: str, data_cfg, opts: LoadOptions) -> Items:
    if not spec:
        raise DataError(f"no data given; give {SOURCE_FORMS}")
    parsed = parse_spec(spec, splits=True)
    if parsed.form == MEMORY:
        raise DataError(f"{spec!r} is the record of data given in memory; give {SOURCE_FORMS}")
    if parsed.form == FOLDER:
        return _from_folder(parsed.path, f"folder:{spec}" if parsed.bare else spec, data_cfg, opts)
    if parsed.form == ARRAY:
        return _from_arrays(read_arrays(parsed.path), f"array:{parsed.path}", opts, where=str(parsed.path))
    if parsed.form == FILE:
        return _from_files([parsed.path], data_cfg, opts)
    if parsed.split is not None:
        return _from_named(parsed.name, parsed.split, spec, data_cfg)
    raise DataError(f"{spec!r} is neither a file nor a folder nor NAME:SPLIT; give {SOURCE_FORMS}")


def _image_options(data_cfg):
    return (normalise_size(getattr(data_cfg, "image_size", None)), normalise_color(getattr(data_cfg, "color", None)),
            normalise_size(getattr(data_cfg, "crop", None)))


def _from_images(files: List[Path], root: Path, ids: List[str], name: str, data_cfg, opts: LoadOptions,
                 source: str, listed: bool = False) -> Items:
    size, color, crop = _image_options(data_cfg)
    plan = ImagePlan(name=source, kind=name, root=root, files={"all": files}, labels={"all": None},
                     size=size, color=color, crop=crop, info={"source": source}, listed=listed)
    # read from the cache file a batch at a time, never held whole: a new-data pass reads each
    # item once, so memory stays flat however many files the source has
    splits, manifest, _ = image_splits(plan, opts)
    skipped_rows = set(manifest["splits"]["all"]["skipped_rows"])
    kept = [i for i in range(len(files)) if i not in skipped_rows]
    c, h, w = manifest["image_shape"]
    return Items(split=splits["all"], ids=[ids[i] for i in kept], image_shape=(c, h, w), kind=manifest["kind"],
                 levels=manifest["levels"], source=source, skipped=list(manifest.get("skipped") or []),
                 pictures=True)


def _from_folder(root: Path, source: str, data_cfg, opts: LoadOptions) -> Items:
    if not root.is_dir():
        raise DataError(f"{source}: {root} is not a folder")
    files = find_images(root)
    if not files:
        raise DataError(f"{source}: no images ({', '.join(EXTENSIONS)}) found in {root} (searched recursively)")
    ids = [f.relative_to(root).as_posix() for f in files]
    return _from_images(files, root, ids, "items-folder", data_cfg, opts, source)


def _from_files(paths: List[Path], data_cfg, opts: LoadOptions) -> Items:
    several = " (a list of sources must be image files)" if len(paths) > 1 else ""
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: file not found{several}")
        if p.suffix.lower() not in EXTENSIONS:
            raise DataError(f"{p}: not an image file ({', '.join(EXTENSIONS)})")
    absolute = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    source = str(paths[0]) if len(paths) == 1 else f"{len(paths)} image files"
    return _from_images(absolute, root, [str(p) for p in paths], "items-files", data_cfg, opts, source, listed=True)


def _from_pil(images: list, data_cfg, opts: LoadOptions) -> Items:
    """PIL images go through the same decoding as files: written as PNGs to a temporary folder
    (with its own cache), then read like ``folder:``."""
    with tempfile.TemporaryDirectory(prefix="aevb-images-") as tmp:
        files = []
        for i, img in enumerate(images):
            path = Path(tmp) / "images" / f"{i:08d}.png"
            path.parent.mkdir(exist_ok=True)
            (img if img.mode in ("L", "RGB", "RGBA", "1", "LA", "P") else img.convert("RGB")).save(path)
            files.append(path)
        items = _from_images(files, Path(tmp) / "images", [str(i) for i in range(len(images))], "items-pil",
                             data_cfg, replace(opts, cache_dir=str(Path(tmp) / "cache")), "PIL images")
        items.split = items.split.in_memory()
        return items


def _from_arrays(arrays: Dict[str, np.ndarray], source: str, opts: LoadOptions, where: str = "memory") -> Items:
    parts = array_splits(arrays, source, opts, where=where)
    names = [s for s in SPLITS if s in parts.splits]
    if len(names) == 1:
        split = parts.splits[names[0]]
        ids = [str(i) for i in range(len(split))]
    else:
        split = Split(np.concatenate([block for s in names for block in parts.splits[s].scan()]),
                      scale=parts.splits[names[0]].scale)
        ids = [f"{parts.keys[s]}/{i}" for s in names for i in range(len(parts.splits[s]))]
    first = next(iter(arrays.values()))
    flat = getattr(first, "ndim", 0) == 2
    return Items(split=split, ids=ids, image_shape=tuple(parts.image_shape), kind=parts.kind, levels=parts.levels,
                 source=source, flat=flat)


def _from_named(name: str, split_name: str, spec: str, data_cfg) -> Items:
    own = _same_dataset(name, data_cfg)
    if own:  # the run's own data set: exactly its splits (validation, binarization, seed), with every
        # label, also those the run left out with --classes (the items are that split's rows)
        ds = load_configured(replace(data_cfg, classes=None), progress=False)
    else:
        ds = load_dataset(name, validation=data_cfg.validation if split_name == "valid" else 0,
                          seed=data_cfg.seed, download=data_cfg.download)
    split = ds.split(split_name)
    items = Items(split=split, ids=[str(i) for i in range(len(split))], image_shape=tuple(ds.image_shape),
                  kind=ds.kind, levels=ds.levels, source=spec)
    items.note = "own" if own else None
    if own and ds.dynamic_binarization:
        items.note = "own-dynamic"
    return items


def _same_dataset(name: str, data_cfg) -> bool:
    try:
        return parse_spec(str(data_cfg.dataset)).name == name
    except DataError:
        return False


def _binarize_like_run(items: Items, data_cfg, seed: int) -> Items:
    mode = (getattr(data_cfg, "binarize", None) or "").lower()
    if mode in ("", "none", "no", "false") and items.note != "own-dynamic":
        return items
    if items.kind == KIND_BINARY or items.kind == KIND_REAL:
        return items  # nothing to draw; real values are refused by check_fits for a Bernoulli model
    if mode == "static" and items.note != "own":
        gen, how = torch.Generator().manual_seed(int(data_cfg.seed) * 3 + 2), f"static, seed {data_cfg.seed}"
    elif mode == "dynamic" or items.note == "own-dynamic":
        gen, how = torch.Generator().manual_seed(int(seed)), f"one fixed draw with seed {seed}"
    else:
        return items
    items.split = binarized(items.split, gen)
    items.kind, items.levels = KIND_BINARY, 2
    items.note = f"binarized as the run's data were ({how})"
    return items


# ------------------------------------------------------------------ does it fit the model
def check_fits(items: Items, image_shape: Sequence[int], likelihood: str, run_name: str) -> Items:
    """Refuse, with one line naming both shapes and what would fit, data the model cannot take:
    another image shape or number of values, or real values outside [0, 1] for a Bernoulli
    likelihood. Rows of a flat [N, D] array with the run's D are taken as the run's shape."""
    want = tuple(int(s) for s in image_shape)
    have = tuple(int(s) for s in items.image_shape)
    d_want = int(np.prod(want))
    if have != want:
        if items.flat and items.dim == d_want:
            items.image_shape = want
        else:
            fits = describe_shape(want)
            # pictures of another size: the run was trained without image_size (else they were resized)
            hint = (" (the run sets no image_size, so pictures keep their own size)"
                    if items.pictures and have[1:] != want[1:] else "")
            raise DataError(f"{items.source} gives {describe_shape(have)} but the run {run_name} takes "
                            f"{fits}; give {fits} or rows of {d_want} values{hint}")
    if likelihood == "bernoulli" and items.kind == KIND_REAL:
        raise DataError(f"{items.source} holds real values outside [0, 1], but the run {run_name} models "
                        f"binary data with a Bernoulli likelihood; give values in [0, 1] (binary, grey levels "
                        f"or 8-bit images)")
    return items
