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
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .bounds import Bounds, evaluate_bounds
from .data import load_configured
from .data.arrays import array_splits, read_arrays
from .data.base import KIND_BINARY, KIND_REAL, Split, binarized
from .data.folder import EXTENSIONS, find_images, normalise_color, normalise_size
from .data.imageset import ImagePlan, LoadOptions, hold_in_memory, image_splits
from .data.registry import canonical_name, load_dataset, load_options
from .errors import DataError
from .images import png_bytes, to_images
from .io import atomic_path, atomic_write_text
from .sampling import decode_means, eval_mode, model_device, model_dtype, reconstructions

SPLITS = ("train", "valid", "test")
# Rows encoded, scored or reconstructed at once.
BATCH = 1000
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
    prefix, sep, rest = spec.partition(":")
    key = prefix.lower()
    if sep and key == "folder":
        return _from_folder(Path(rest.strip()).expanduser(), spec, data_cfg, opts)
    if sep and key in ("array", "npy", "npz"):
        path = Path(rest.strip()).expanduser()
        return _from_arrays(read_arrays(path), f"array:{path}", opts, where=str(path))
    path = Path(spec).expanduser()
    if sep and not path.exists():  # NAME:SPLIT
        if rest.strip().lower() not in SPLITS:
            raise DataError(f"{spec!r}: give a split after the data set's name ({', '.join(SPLITS)}), "
                            f"e.g. {prefix}:test")
        return _from_named(canonical_name(prefix), rest.strip().lower(), spec, data_cfg)
    if path.is_dir():
        return _from_folder(path, f"folder:{spec}", data_cfg, opts)
    if path.is_file():
        if path.suffix.lower() in (".npy", ".npz"):
            return _from_arrays(read_arrays(path), f"array:{path}", opts, where=str(path))
        return _from_files([path], data_cfg, opts)
    if not sep and path.suffix:
        raise DataError(f"{spec}: file not found")
    raise DataError(f"{spec!r} is neither a file nor a folder nor NAME:SPLIT; give {SOURCE_FORMS}")


def _image_options(data_cfg):
    return (normalise_size(getattr(data_cfg, "image_size", None)), normalise_color(getattr(data_cfg, "color", None)),
            normalise_size(getattr(data_cfg, "crop", None)))


def _from_images(files: List[Path], root: Path, ids: List[str], name: str, data_cfg, opts: LoadOptions,
                 source: str) -> Items:
    size, color, crop = _image_options(data_cfg)
    plan = ImagePlan(name=source, kind=name, root=root, files={"all": files}, labels={"all": None},
                     size=size, color=color, crop=crop, info={"source": source})
    splits, manifest, info = image_splits(plan, opts)
    splits, _ = hold_in_memory(splits, opts, info["cache"])
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
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: file not found")
        if p.suffix.lower() not in EXTENSIONS:
            raise DataError(f"{p}: not an image file ({', '.join(EXTENSIONS)})")
    absolute = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    source = str(paths[0]) if len(paths) == 1 else f"{len(paths)} image files"
    return _from_images(absolute, root, [str(p) for p in paths], "items-files", data_cfg, opts, source)


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
    if own:  # the run's own data set: exactly its splits (validation, binarization, seed)
        ds = load_configured(data_cfg, progress=False)
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
        return canonical_name(str(data_cfg.dataset)) == name
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


# ------------------------------------------------------------------ what the model says
def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar with the time left on stderr (shown on a terminal when ``enabled``), or None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True, disable=None, file=sys.stderr, leave=False)


def encode(model, split: Split, samples: int = 0, seed: int = 0, batch_size: int = BATCH,
           progress: bool = False) -> Dict[str, np.ndarray]:
    """{"mu", "log_var"} [N, J] float64 (the Gaussian q(z|x) of each row) and, with ``samples``
    > 0, "z" [N, samples, J] float64: draws z = mu + sigma * eps with eps from a CPU generator
    seeded with ``seed``. The encoder sees ``batch_size`` rows at a time from ``split.batches``."""
    n, j = len(split), int(model.latent_dim)
    mu, lv = np.empty((n, j)), np.empty((n, j))
    z = np.empty((n, int(samples), j)) if samples else None
    gen = torch.Generator().manual_seed(int(seed))
    bar = progress_bar(n, "encoding", progress)
    i = 0
    try:
        with eval_mode(model):
            for xb in split.batches(batch_size, model_device(model)):
                m, v = model.encode(xb.to(model_dtype(model)))
                m, v = m.double().cpu(), v.double().cpu()
                b = len(m)
                mu[i:i + b], lv[i:i + b] = m.numpy(), v.numpy()
                if samples:
                    eps = torch.randn(b, int(samples), j, generator=gen, dtype=torch.float64)
                    z[i:i + b] = (m.unsqueeze(1) + torch.exp(0.5 * v).unsqueeze(1) * eps).numpy()
                i += b
                if bar is not None:
                    bar.update(b)
    finally:
        if bar is not None:
            bar.close()
    out = {"mu": mu, "log_var": lv}
    if z is not None:
        out["z"] = z
    return out


def score(model, split: Split, k: int, seed: int = 0, progress: bool = False, budget=None) -> Bounds:
    """The bound engine's per-row results (ELBO, L_k and its standard error, ...) for ``split``
    with k importance samples, seeded noise: the numbers ``aevb evaluate`` gives for the same rows."""
    kw = {} if budget is None else {"budget": budget}
    return evaluate_bounds(model, split, k=int(k), seed=seed, progress=progress, desc=f"L_{k}", **kw)


def reconstruction_blocks(model, split: Split, batch_size: int = BATCH,
                          progress: bool = False) -> Iterator[Tuple[int, Tensor]]:
    """(first row, reconstructions [B, D] on the CPU) for ``batch_size`` rows at a time:
    :func:`aevb.sampling.reconstructions` block by block, so memory does not grow with N."""
    bar = progress_bar(len(split), "reconstructing", progress)
    try:
        for i in range(0, len(split), batch_size):
            x = split.rows(i, i + batch_size)
            yield i, reconstructions(model, x, batch_size)
            if bar is not None:
                bar.update(len(x))
    finally:
        if bar is not None:
            bar.close()


def check_codes(z, latent_dim: int, name: str = "the codes") -> Tensor:
    """``z`` as a float [N, J] tensor, refusing (one line naming ``name`` and the shapes) another
    width, another number of dimensions, no rows, or NaN / infinite values."""
    a = np.asarray(z.detach().cpu().numpy() if isinstance(z, Tensor) else z)
    if a.ndim == 1 and a.size == latent_dim:
        a = a.reshape(1, -1)
    if a.ndim != 2 or a.shape[1] != latent_dim:
        raise DataError(f"{name} has shape {tuple(a.shape)} but the run's codes are [N, {latent_dim}] "
                        f"(its latent dimension is {latent_dim})")
    if len(a) == 0:
        raise DataError(f"{name} holds no codes")
    if not np.issubdtype(a.dtype, np.number):
        raise DataError(f"{name} holds {a.dtype} values; codes are numbers")
    bad = ~np.isfinite(a.astype(np.float64))
    if bad.any():
        rows = np.flatnonzero(bad.any(1))
        raise DataError(f"{name} has {int(bad.sum())} NaN or infinite value(s) (first in row {int(rows[0])}); "
                        "codes must be finite")
    return torch.from_numpy(a.astype(np.float32))


def decode(model, z, batch_size: int = BATCH) -> Tensor:
    """The mean of p(x|z) [N, D] on the CPU for codes ``z`` [N, J] (checked by :func:`check_codes`)."""
    return decode_means(model, check_codes(z, int(model.latent_dim)), batch_size)


# ------------------------------------------------------------------ one PNG per item
def png_names(ids: Sequence[str]) -> List[str]:
    """A file name under the output folder for each identity: the same relative path with the
    suffix .png (a path that would leave the folder keeps only its file name); refuses two items
    that would share a name."""
    names = []
    for i in ids:
        p = Path(str(i))
        if p.is_absolute() or ".." in p.parts or not p.parts:
            p = Path(p.name or "item")
        names.append(p.with_suffix(".png").as_posix() if p.suffix else f"{p.as_posix()}.png")
    seen: Dict[str, str] = {}
    for i, n in zip(ids, names):
        if n in seen:
            raise DataError(f"two items would be written to {n} ({seen[n]} and {i}); give files with distinct names")
        seen[n] = i
    return names


class PngFolder:
    """Write PNGs into a new folder atomically: they go into a hidden sibling, which becomes
    ``out`` only when every file is written (``out`` may exist if empty); on failure nothing is
    left. Use as a context manager and call :meth:`write`."""

    def __init__(self, out: Path, image_shape: Sequence[int]):
        self.out, self.shape = Path(out), tuple(image_shape)
        self.stage = self.out.parent / f".{self.out.name}.aevb-partial-{os.getpid()}"

    def __enter__(self) -> "PngFolder":
        if self.stage.exists():
            shutil.rmtree(self.stage)
        self.stage.mkdir(parents=True)
        return self

    def write(self, names: Sequence[str], x: Tensor) -> None:
        for name, img in zip(names, to_images(x, self.shape)):
            path = self.stage / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png_bytes(img))

    def __exit__(self, exc_type, *exc) -> bool:
        if exc_type is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
            return False
        if self.out.is_dir():
            self.out.rmdir()  # checked empty before the work
        os.rename(self.stage, self.out)
        return False


def check_png_folder(out: Path, option: str = "--out") -> None:
    """Refuse, before any work, an output folder that exists and is not empty."""
    out = Path(out)
    if out.exists() and out.is_dir() and any(out.iterdir()):
        raise DataError(f"{option} {out} exists and is not empty; give a new or empty folder")


# ------------------------------------------------------------------ tables per item
TABLE_SUFFIXES = (".npz", ".npy", ".csv")


def write_table(path, columns: Dict[str, np.ndarray]) -> Path:
    """Write per-item columns atomically (nothing is left if it fails): ``.npz`` (one array per
    column), ``.npy`` (a structured array; a column [N, ...] becomes a field of that shape) or
    ``.csv`` (a header; a column [N, J] becomes NAME_0 .. NAME_{J-1}, [N, S, J] NAME_s_j)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".npz":
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **columns)
    elif ext == ".npy":
        dt = [(k, v.dtype if v.dtype.kind != "U" else v.dtype, v.shape[1:]) for k, v in columns.items()]
        arr = np.empty(len(next(iter(columns.values()))), dtype=dt)
        for k, v in columns.items():
            arr[k] = v
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, arr)
    elif ext == ".csv":
        names, cols = [], []
        for k, v in columns.items():
            flat = v.reshape(len(v), -1)
            if v.ndim == 1:
                names.append(k)
            else:
                names += [f"{k}_" + "_".join(map(str, ix)) for ix in np.ndindex(*v.shape[1:])]
            cols.append(flat)
        lines = [",".join(names)]
        for r in range(len(cols[0])):
            lines.append(",".join(_cell(c[r, j]) for c in cols for j in range(c.shape[1])))
        atomic_write_text(path, "\n".join(lines) + "\n")
    else:
        raise DataError(f"{path}: use a .npz, .npy or .csv file name")
    return path


def _cell(v) -> str:
    if isinstance(v, (str, np.str_)):
        s = str(v)
        return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return repr(float(v))


def read_codes(path, latent_dim: int) -> Tuple[List[str], Tensor]:
    """(ids, codes [N, J]) from a file: ``aevb encode``'s output (.npz / .npy / .csv: its ``mu``,
    with its ``id``), or a plain [N, J] array (.npy, .npz with one array, .csv of numbers with or
    without a header). Another width or NaN raise DataError naming the file and the shapes."""
    import csv

    path = Path(path)
    name = f"--z {path}"
    if not path.is_file():
        raise DataError(f"{name}: file not found")
    ext = path.suffix.lower()
    ids = None
    try:
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as f:
                keys = list(f.files)
                key = "mu" if "mu" in keys else ("z" if "z" in keys else None)
                if key is None:
                    arrays = [k for k in keys if k != "id"]
                    if len(arrays) != 1:
                        raise DataError(f"{name}: holds {', '.join(keys)}; give a file with 'mu' (aevb encode's "
                                        "output) or a single [N, J] array")
                    key = arrays[0]
                z = f[key]
                ids = [str(i) for i in f["id"]] if "id" in keys else None
        elif ext == ".npy":
            z = np.load(path, allow_pickle=False)
            if z.dtype.names:
                if "mu" not in z.dtype.names:
                    raise DataError(f"{name}: a structured array without a 'mu' field")
                ids = [str(i) for i in z["id"]] if "id" in z.dtype.names else None
                z = z["mu"]
        elif ext == ".csv":
            with open(path, newline="") as fh:
                rows = [r for r in csv.reader(fh) if r]
            if not rows:
                raise DataError(f"{name}: the file is empty")
            header = rows[0]
            try:
                [float(v) for v in header]
                body, header = rows, None
            except ValueError:
                body = rows[1:]
            if header is not None:
                cols = [j for j, h in enumerate(header) if h.startswith("mu_")] or \
                       [j for j, h in enumerate(header) if h != "id"]
                if "id" in header:
                    ids = [r[header.index("id")] for r in body]
            else:
                cols = list(range(len(rows[0])))
            z = np.array([[float(r[j]) for j in cols] for r in body], dtype=np.float64).reshape(len(body), len(cols))
        else:
            raise DataError(f"{name}: use a .npz, .npy or .csv file")
    except (ValueError, OSError, EOFError, IndexError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{name} could not be read as codes ({' '.join(str(e).split())})") from None
    codes = check_codes(z, latent_dim, name)
    if ids is None or len(ids) != len(codes):
        ids = [str(i) for i in range(len(codes))]
    return ids, codes
