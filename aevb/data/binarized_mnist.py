"""Statically binarized MNIST of Larochelle & Murray (2011), the standard fixed-binarization
benchmark: ``binarized_mnist_{train,valid,test}.amat`` (50000 / 10000 / 10000 images, one image a
line, 784 values ``0``/``1`` separated by spaces). ``.amat.gz`` copies are accepted too.

KIND_BINARY, levels 2, image shape (1, 28, 28), no labels; the official valid split is kept.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Union

import numpy as np

from .base import KIND_BINARY, DataError, Dataset, Split
from .download import Alternative, RemoteFile, fetch
from .idx import read_bytes
from .spec import NAMED_SHAPES

BASE_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
D = math.prod(NAMED_SHAPES["binarized-mnist"])  # values per image
SPLIT_SIZES = {"train": 50000, "valid": 10000, "test": 10000}

# sha1 of the .amat files (the published values), md5 of our gzip -9 -n copies.
_SUMS = {
    "train": ("cf70514ec5f481e54ad3eb0e6c03c83326ff96f8", "55c6be0db63f47a228822edc21049d6f"),
    "valid": ("13418487742e6ea6d48db7b5187353a20b1b1f8c", "bf325c5893052cb8b540dfeb3c0c6fbe"),
    "test": ("ca70bd7775e182596dec148d4dc1bc6bd6c4c5f4", "f7f18e7c5d551792f6aab10d62a7ea74"),
}


def _remote(split: str) -> RemoteFile:
    sha1, gz_md5 = _SUMS[split]
    name = f"binarized_mnist_{split}.amat"
    # a .gz with another compression level has another md5: it is then checked by the sha1 of
    # its decompressed bytes.
    return RemoteFile(name, (BASE_URL + name,), sha1=sha1,
                      alternatives=(Alternative(name + ".gz", md5=gz_md5, gzip_of_primary=True),))


FILES = {split: _remote(split) for split in SPLIT_SIZES}

_WS = np.zeros(256, dtype=bool)
_WS[[ord(" "), ord("\t"), ord("\n"), ord("\r"), ord("\v"), ord("\f")]] = True


def parse_amat(data: bytes, name: str = "<amat>", dim: int = D) -> np.ndarray:
    """Parse binary ``.amat`` text into an [N, dim] uint8 array of 0/1.

    Fast path (the real files): single characters separated by single whitespace characters,
    handled with numpy on the raw bytes. Anything else goes through a line-by-line parser that
    accepts any whitespace and reports the first offending line precisely.
    """
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    buf = np.frombuffer(data, dtype=np.uint8)
    # strip trailing whitespace
    end = len(buf)
    while end > 0 and _WS[buf[end - 1]]:
        end -= 1
    if end == 0:
        raise DataError(f"{name} is empty. Delete it and download it again.")
    buf = buf[:end]
    if end % 2 == 1:
        vals = buf[0::2]
        seps = buf[1::2]
        if bool(np.all((vals == 48) | (vals == 49))) and bool(np.all(_WS[seps])):
            newlines = np.flatnonzero(seps == 10)
            n_rows = len(newlines) + 1
            if len(vals) == n_rows * dim:
                # every line must have exactly dim values: newline k sits after value (k+1)*dim-1
                if np.array_equal(newlines, np.arange(1, n_rows) * dim - 1):
                    return (vals - 48).reshape(n_rows, dim)
    return _parse_amat_slow(data, name, dim)


def _parse_amat_slow(data: bytes, name: str, dim: int) -> np.ndarray:
    rows = []
    for i, line in enumerate(data.split(b"\n"), start=1):
        toks = line.split()
        if not toks:
            continue  # blank lines (e.g. a trailing one) are ignored
        if len(toks) != dim:
            raise DataError(f"{name}: line {i} has {len(toks)} values, expected {dim} "
                            f"(a 28x28 image). The file is corrupt: delete it and download it again.")
        bad = [t for t in toks if t not in (b"0", b"1")]
        if bad:
            col = next(j for j, t in enumerate(toks, start=1) if t not in (b"0", b"1"))
            raise DataError(f"{name}: line {i}, value {col} is {bad[0].decode(errors='replace')!r}; "
                            f"binarized MNIST values must be 0 or 1. The file is corrupt: delete it "
                            f"and download it again.")
        rows.append(np.frombuffer(b"".join(toks), dtype=np.uint8) - 48)
    if not rows:
        raise DataError(f"{name} holds no data. Delete it and download it again.")
    return np.stack(rows)


def read_amat(path: Union[str, os.PathLike], dim: int = D) -> np.ndarray:
    """Read an ``.amat`` or ``.amat.gz`` file (gzip detected from the content)."""
    return parse_amat(read_bytes(path), str(path), dim)


def load_binarized_mnist(folder: Union[str, os.PathLike], download: bool = True,
                         check_sizes: bool = True) -> Dataset:
    folder = Path(folder)
    paths = fetch(list(FILES.values()), folder, download=download)
    splits = {}
    for split, rf in FILES.items():
        arr = read_amat(paths[rf.name])
        if check_sizes and arr.shape[0] != SPLIT_SIZES[split]:
            raise DataError(f"{paths[rf.name]} has {arr.shape[0]} images, expected {SPLIT_SIZES[split]}. "
                            f"Delete it and download it again.")
        splits[split] = Split(np.ascontiguousarray(arr, dtype=np.uint8))
    return Dataset(
        name="binarized-mnist", train=splits["train"], valid=splits["valid"], test=splits["test"],
        image_shape=NAMED_SHAPES["binarized-mnist"], kind=KIND_BINARY, levels=2,
        info={"source": BASE_URL, "folder": str(folder),
              "files": {k: str(v) for k, v in paths.items()},
              "test_split": "official (Larochelle & Murray 2011: 50000 / 10000 / 10000)"})
