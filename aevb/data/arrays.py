"""Your own arrays: ``array:PATH`` loads a ``.npy`` or ``.npz`` file.

Splits
  * ``.npz`` with keys ``x_train`` / ``x_test`` (or ``train`` / ``test``), optional
    ``x_valid`` / ``valid`` (also ``x_val`` / ``val``) and labels ``y_train`` / ``y_test`` /
    ``y_valid`` (keys are matched case-insensitively);
  * a single array (a ``.npy``, or an ``.npz`` with one data array, optionally with labels
    ``y`` / ``labels``), or an ``.npz`` with a train but no test array: a fixed 10% is held out
    as test by a seeded permutation (``TEST_SPLIT_SEED``, the same in every run).

Shapes (the rule, per array; all splits must agree)
  * ``[N, D]``: flat vectors; image shape ``(1, s, s)`` when D = s*s, else ``(1, 1, D)``;
  * ``[N, H, W]``: grey images ``(1, H, W)``;
  * ``[N, C, H, W]`` with C in (1, 3): channels first;
  * ``[N, H, W, C]`` with C in (1, 3) (and axis 1 not 1 or 3): channels last, transposed to
    ``(C, H, W)``. Channels-first wins when both readings are possible.

Values
  * ``uint8``: divided by 255 (256 levels) unless every value is 0 or 1 (taken as binary as is);
  * ``bool``: binary;
  * other numbers: kept; the kind is inferred: all in {0, 1} -> binary (2 levels), all in [0, 1]
    -> unit, else real (no levels). NaN or infinite values are an error.
"""
from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch

from .base import KIND_BINARY, KIND_REAL, DataError, Dataset, Split
from ..units import format_bytes
from .cache import memory_budget
from .utils import hold_out_test

X_KEYS = {
    "train": ("x_train", "train"),
    "valid": ("x_valid", "valid", "x_val", "val", "x_validation", "validation"),
    "test": ("x_test", "test"),
}
Y_KEYS = {
    "train": ("y_train", "labels_train", "train_labels"),
    "valid": ("y_valid", "y_val", "y_validation", "labels_valid", "valid_labels"),
    "test": ("y_test", "labels_test", "test_labels"),
}
SINGLE_Y_KEYS = ("y", "labels", "label", "targets", "target")


def read_arrays(path: Union[str, os.PathLike]) -> Dict[str, np.ndarray]:
    """``{key: array}`` of a .npy (key ``"x"``, memory-mapped: nothing is read yet) or .npz file
    (no pickles)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"array:{path}: file not found")
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if path.suffix.lower() == ".npy":
            return {"x": np.load(path, mmap_mode="r", allow_pickle=False)}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"array:{path}: could not read it as a numpy file ({e}). Object arrays "
                        f"(pickles) are not loaded; save plain numeric arrays.") from e
    raise DataError(f"array:{path}: expected a .npy or .npz file")


def _pick(arrays: Dict[str, np.ndarray], names) -> Optional[str]:
    lower = {k.lower(): k for k in arrays}
    for n in names:
        if n in lower:
            return lower[n]
    return None


class Shaped:
    """Only the ``shape`` and ``ndim`` of an array (e.g. from a file's header), for
    :func:`image_shape_of`."""

    def __init__(self, shape):
        self.shape = tuple(shape)
        self.ndim = len(self.shape)


def image_shape_of(a: np.ndarray, name: str) -> Tuple[Tuple[int, int, int], bool]:
    """(image shape (C, H, W), channels_last) for an array by the rule in the module docs."""
    if a.ndim == 2:
        d = a.shape[1]
        s = math.isqrt(d)
        return ((1, s, s) if s * s == d else (1, 1, d)), False
    if a.ndim == 3:
        return (1, a.shape[1], a.shape[2]), False
    if a.ndim == 4:
        if a.shape[1] in (1, 3):
            return (a.shape[1], a.shape[2], a.shape[3]), False
        if a.shape[3] in (1, 3):
            return (a.shape[3], a.shape[1], a.shape[2]), True
    raise DataError(
        f"{name} has shape {a.shape}; expected [N, D], [N, H, W], [N, C, H, W] or [N, H, W, C] "
        f"with C = 1 or 3")


def _labels(y: Optional[np.ndarray], n: int, name: str) -> Optional[torch.Tensor]:
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"labels {name} must be one integer per datapoint, got shape {y.shape}")
    if len(y) != n:
        raise DataError(f"labels {name}: {len(y)} labels for {n} datapoints")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.number):
        raise DataError(f"labels {name} must be integers, got dtype {y.dtype}")
    if y.size and (not np.all(np.isfinite(y)) or not np.all(y == np.round(y)) or y.min() < 0):
        raise DataError(f"labels {name} must be integers >= 0")
    return torch.from_numpy(y.astype(np.int64))


def _kind(splits) -> str:
    """KIND_BINARY / KIND_UNIT / KIND_REAL of the float values of compact splits, a block at a time."""
    binary, lo, hi = True, np.inf, -np.inf
    for sp in splits:
        for block in sp.scan():
            if block.size == 0:
                continue
            lo, hi = min(lo, float(block.min()) / sp.scale), max(hi, float(block.max()) / sp.scale)
            if binary:
                binary = bool(np.all((block == 0) | (block == sp.scale)))
    if binary:
        return KIND_BINARY
    return "unit" if lo >= 0 and hi <= 1 else KIND_REAL


def _check_finite(x: np.ndarray, what: str) -> None:
    """Refuse NaN / infinite values, scanning a block of rows at a time (memory-mapped files)."""
    bad = 0
    for i in range(0, x.shape[0], 4096):
        bad += int((~np.isfinite(np.asarray(x[i:i + 4096]))).sum())
    if bad:
        raise DataError(f"{what} has {bad} NaN or infinite value(s); clean the data first")


@dataclass
class ArraySplits:
    """The splits an array file (or arrays in memory) holds, before any hold-out: ``splits``
    {train/valid/test: Split}, ``keys`` {split: the array's key}, the image shape, the kind and
    levels of the values, and a sentence saying where the rows are held."""

    splits: Dict[str, Split]
    keys: Dict[str, str]
    image_shape: Tuple[int, int, int]
    kind: str
    levels: Optional[int]
    single: bool
    storage: str
    labels_note: Optional[str] = None


def load_array(path: Union[str, os.PathLike], options=None) -> Dataset:
    """``array:PATH`` as a Dataset. A .npy file whose rows are uint8 or float32, channels first, is
    memory-mapped: held in memory when it fits the memory budget (``options.memory_budget``),
    streamed from the file otherwise."""
    path = Path(path).expanduser()
    spec = f"array:{path}"
    parts = array_splits(read_arrays(path), spec, options, where=str(path))
    splits, single, info_labels = parts.splits, parts.single, parts.labels_note
    kind, levels, image_shape = parts.kind, parts.levels, parts.image_shape
    info = {"source": spec, "files": {"arrays": str(path)}, "keys": parts.keys}
    if "test" not in splits:
        splits["train"], splits["test"], info["test_split"] = hold_out_test(splits["train"], "datapoints", spec)
    else:
        info["test_split"] = "from the file"
    if single:
        info["single_array"] = True
    if info_labels:
        info["labels"] = info_labels
    info["storage"] = parts.storage
    return Dataset(
        name=spec, train=splits["train"], valid=splits.get("valid"),
        test=splits["test"], image_shape=image_shape, kind=kind,
        levels=levels if kind != KIND_REAL else None, info=info)


def array_splits(arrays: Dict[str, np.ndarray], spec: str, options=None, where: str = "memory") -> ArraySplits:
    """The splits of ``arrays`` ({key: array}, as :func:`read_arrays` returns them) by the rules
    in the module docs, checked and in compact storage; ``spec`` names them in messages."""
    if not arrays:
        raise DataError(f"{spec}: the file holds no arrays")

    xk = {s: _pick(arrays, keys) for s, keys in X_KEYS.items()}
    yk = {s: _pick(arrays, keys) for s, keys in Y_KEYS.items()}
    single = False
    if xk["train"] is None:
        if xk["test"] is not None or xk["valid"] is not None:
            raise DataError(f"{spec}: has a test/valid array but no training array "
                            f"(x_train or train); keys: {', '.join(arrays)}")
        y_key = _pick(arrays, SINGLE_Y_KEYS)
        data_keys = [k for k in arrays if k != y_key]
        if len(data_keys) != 1:
            raise DataError(
                f"{spec}: cannot tell which arrays are the data; keys found: {', '.join(arrays)}. "
                f"Use x_train / x_test (optional x_valid, y_train, y_test, y_valid), or "
                f"train / test, or a single array (optionally with labels 'y').")
        xk = {"train": data_keys[0], "valid": None, "test": None}
        yk = {"train": y_key, "valid": None, "test": None}
        single = True

    xs: Dict[str, np.ndarray] = {s: arrays[k] if isinstance(arrays[k], np.memmap) else np.asarray(arrays[k])
                                 for s, k in xk.items() if k is not None}
    # dtype / finiteness checks
    dtypes = {x.dtype for x in xs.values()}
    for s, x in xs.items():
        if x.dtype == bool:
            continue
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise DataError(f"{spec}: array {xk[s]!r} has dtype {x.dtype}; expected numbers")
        if x.ndim < 2 or x.shape[0] == 0:
            raise DataError(f"{spec}: array {xk[s]!r} has shape {x.shape}; expected [N, ...] with N > 0")

    shapes = {}
    for s, x in xs.items():
        shapes[s] = image_shape_of(x, f"{spec}: array {xk[s]!r}")
    image_shapes = {sh for sh, _ in shapes.values()}
    if len(image_shapes) != 1:
        raise DataError(f"{spec}: the splits have different shapes: "
                        + ", ".join(f"{xk[s]} {xs[s].shape[1:]}" for s in xs))
    image_shape = image_shapes.pop()

    if any(d == np.uint8 for d in dtypes) and dtypes != {np.dtype(np.uint8)}:
        raise DataError(f"{spec}: mix of uint8 and other dtypes ({', '.join(map(str, dtypes))}); "
                        f"save all splits with one dtype")
    for s_, x in xs.items():
        if np.issubdtype(x.dtype, np.floating):
            _check_finite(x, f"{spec}: array {xk[s_]!r}")

    budget = memory_budget(getattr(options, "memory_budget", None))
    total = sum(x.nbytes for x in xs.values())
    stream = isinstance(next(iter(xs.values())), np.memmap) and total > budget
    if stream and (any(sh[1] for sh in shapes.values()) or not dtypes <= {np.dtype(np.uint8), np.dtype(np.float32)}):
        raise DataError(f"{spec}: {format_bytes(total)} is more than the memory budget "
                        f"({format_bytes(budget)}), and only uint8 or float32 arrays with channels first "
                        f"([N, D], [N, H, W] or [N, C, H, W]) can be streamed from a .npy; save it in that "
                        f"form, or raise --memory-budget")
    if dtypes == {np.dtype(np.uint8)}:
        already_binary = all(int(x.max()) <= 1 for x in xs.values()) if not stream else False
        scale = 1.0 if already_binary else 255.0
    else:
        scale = 1.0

    def compact(s: str) -> Split:
        x = xs[s]
        y = _labels(arrays[yk[s]] if yk.get(s) else None, x.shape[0], repr(yk.get(s)))
        if stream:  # a view of the memory-mapped file, read a batch at a time
            return Split(x.reshape(x.shape[0], -1), y, scale=scale)
        if shapes[s][1]:  # channels last -> channels first
            x = np.moveaxis(x, 3, 1)
        x = np.ascontiguousarray(x).reshape(x.shape[0], -1)
        if x.dtype not in (np.uint8, np.float32):
            x = x.astype(np.uint8 if x.dtype == bool else np.float32)
        return Split(torch.from_numpy(np.array(x)), y, scale=scale)

    splits = {s: compact(s) for s in xs}
    if any(sp.y is None for sp in splits.values()) and any(sp.y is not None for sp in splits.values()):
        for sp in splits.values():
            sp.y = None  # labels only for some splits: ignored
        info_labels = "ignored: not every split has labels"
    else:
        info_labels = None

    kind = _kind(splits.values())
    levels = 2 if kind == KIND_BINARY else (256 if dtypes == {np.dtype(np.uint8)} else None)
    storage = (f"streamed from {where} ({format_bytes(total)} > memory budget {format_bytes(budget)})"
               if stream else "in memory")
    return ArraySplits(splits=splits, keys={s: k for s, k in xk.items() if k is not None},
                       image_shape=image_shape, kind=kind, levels=levels if kind != KIND_REAL else None,
                       single=single, storage=storage, labels_note=info_labels)


def header_image_shape(path: Path) -> Optional[Tuple[int, int, int]]:
    """The image shape the header of a .npy file (or of the training array of an .npz) gives
    (aevb.data.arrays' rule), None when it cannot be read here (the loader says why)."""
    try:
        if path.suffix.lower() == ".npy":
            with open(path, "rb") as f:
                shape, dtype = _header(f)
        elif path.suffix.lower() == ".npz":
            with zipfile.ZipFile(path) as z:
                names = {n[:-4].lower(): n for n in z.namelist() if n.endswith(".npy")}
                key = next((names[k] for k in X_KEYS["train"] if k in names), None)
                if key is None:
                    candidates = [n for k, n in names.items() if k not in SINGLE_Y_KEYS]
                    if len(candidates) != 1:
                        return None
                    key = candidates[0]
                with z.open(key) as f:
                    shape, dtype = _header(f)
        else:
            return None
        if len(shape) < 2 or shape[0] == 0:
            return None
        return tuple(int(s) for s in image_shape_of(Shaped(shape), str(path))[0])
    except Exception:  # noqa: BLE001 - anything unreadable is the loader's to explain
        return None


def _header(f) -> Tuple[tuple, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    return shape, dtype
