"""Omniglot 28 x 28 as used in the IWAE paper (Burda, Grosse & Salakhutdinov 2016).

``chardata.mat`` from https://github.com/yburda/iwae holds ``data`` (784 x 24345, train) and
``testdata`` (784 x 8070, test), values in [0, 1], one image per column. Following the IWAE code
(``datasets.py``: ``data.T.reshape((-1, 28, 28)).reshape((-1, 784), order='fortran')``) each
column is a 28 x 28 image stored column-major, i.e. the picture is
``column.reshape(28, 28, order='F')``; we apply that so images are upright.
When the file also holds ``target`` / ``testtarget`` (one-hot alphabet, 50 x N) they become the
labels (alphabet index).

Kind: KIND_BINARY when all values are 0/1, else KIND_UNIT (no fixed number of levels); the IWAE
setting trains with dynamic binarization (``binarize="dynamic"``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from .base import KIND_BINARY, DataError, Dataset, Split
from .download import RemoteFile, fetch
from .spec import NAMED_SHAPES
from .utils import infer_kind

URL = "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat"
URL_RAW = "https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/chardata.mat"
# The IWAE repository publishes no checksum. This md5 is the one a public third-party loader
# (a tfsnippet-based data module downloading the same URL) checks the file against; it could not
# be confirmed against a local copy here. Shapes and value ranges are validated on load anyway.
MD5 = "21ecaf34373511aa7691cf2e0802aa3d"
FILE = RemoteFile("chardata.mat", (URL, URL_RAW), md5=MD5)
SIDE = NAMED_SHAPES["omniglot"][1]


def _images(mat: dict, key: str, path) -> np.ndarray:
    if key not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path} has no variable {key!r} (found: {', '.join(keys) or 'none'}); "
                        f"it is not the IWAE chardata.mat")
    a = np.asarray(mat[key])
    if a.ndim != 2 or a.shape[0] != SIDE * SIDE:
        raise DataError(f"{path}: variable {key!r} has shape {a.shape}, expected (784, N)")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise DataError(f"{path}: variable {key!r} has values outside [0, 1]; the file is corrupt, "
                        f"delete it and download it again")
    # column n is image n stored column-major: transpose each 28x28 image to row-major
    imgs = a.T.reshape(-1, SIDE, SIDE).transpose(0, 2, 1)
    return np.ascontiguousarray(imgs).reshape(-1, SIDE * SIDE)


def _labels(mat: dict, key: str, n: int) -> Optional[np.ndarray]:
    t = mat.get(key)
    if t is None:
        return None
    t = np.asarray(t)
    if t.ndim != 2 or t.shape[1] != n:
        return None
    return np.argmax(t, axis=0).astype(np.int64)


def read_omniglot(path: Union[str, os.PathLike]):
    """(train [N, 784] float32, test [M, 784] float32, train labels or None, test labels or None)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as e:
        raise DataError(f"could not read {path} as a MATLAB file ({e}). Delete it and download it again.") from e
    train = _images(mat, "data", path)
    test = _images(mat, "testdata", path)
    y_train = _labels(mat, "target", train.shape[0])
    y_test = _labels(mat, "testtarget", test.shape[0])
    if (y_train is None) != (y_test is None):
        y_train = y_test = None
    return train, test, y_train, y_test


def load_omniglot(folder: Union[str, os.PathLike], download: bool = True) -> Dataset:
    folder = Path(folder)
    paths = fetch([FILE], folder, download=download)
    train, test, y_train, y_test = read_omniglot(paths[FILE.name])
    kind = infer_kind(train, test)
    if kind == KIND_BINARY:  # 0/1 values: stored as uint8, a quarter of the memory
        train, test = train.astype(np.uint8), test.astype(np.uint8)
    return Dataset(
        name="omniglot",
        train=Split(torch.from_numpy(train), None if y_train is None else torch.from_numpy(y_train)),
        test=Split(torch.from_numpy(test), None if y_test is None else torch.from_numpy(y_test)),
        image_shape=(1, SIDE, SIDE), kind=kind, levels=2 if kind == KIND_BINARY else None,
        info={"source": "https://github.com/yburda/iwae (datasets/OMNIGLOT/chardata.mat)",
              "folder": str(folder), "files": {k: str(v) for k, v in paths.items()},
              "test_split": "official (IWAE: 24345 train / 8070 test)",
              "labels": "alphabet index" if y_train is not None else None})
