"""Frey Face: 1965 grey images (28 x 20) of Brendan Frey's face, from Sam Roweis's data page.

``frey_rawface.mat`` holds one uint8 variable ``ff`` of shape (560, 1965): one image per column,
each image row-major 28 x 20, so ``ff.T.reshape(-1, 28, 20)`` gives the pictures.
Values / 255 (KIND_UNIT, 256 levels), image shape (1, 28, 20), no labels.

There is no official test split. We hold out a fixed 10% (196 images) chosen by a seeded random
permutation with ``TEST_SPLIT_SEED`` (independent of the user's seed, so that the test set is the
same in every run); the remaining 1769 images are the training split.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np

from .base import KIND_UNIT, DataError, Dataset, Split
from .download import RemoteFile, fetch
from .spec import NAMED_SHAPES
from .utils import TEST_SPLIT_SEED, holdout_indices, rows_uint8

URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
FILE = RemoteFile("frey_rawface.mat", (URL,), md5="5aeb024d42b8a6091f30e5eb18c8a48d")
H, W = NAMED_SHAPES["frey-face"][1:]
N_IMAGES = 1965
TEST_FRACTION = 0.1


def read_frey(path: Union[str, os.PathLike]) -> np.ndarray:
    """[N, 28, 20] uint8 images from ``frey_rawface.mat``."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as e:  # scipy raises several error types for bad files
        raise DataError(f"could not read {path} as a MATLAB file ({e}). Delete it and download it again.") from e
    if "ff" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path} has no variable 'ff' (found: {', '.join(keys) or 'none'}); it is not frey_rawface.mat")
    ff = np.asarray(mat["ff"])
    if ff.ndim != 2 or ff.shape[0] != H * W:
        raise DataError(f"{path}: variable 'ff' has shape {ff.shape}, expected ({H * W}, N)")
    if ff.dtype != np.uint8:
        if ff.size and (ff.min() < 0 or ff.max() > 255 or not np.all(ff == np.round(ff))):
            raise DataError(f"{path}: variable 'ff' is {ff.dtype} with values outside 0..255 integers")
        ff = ff.astype(np.uint8)
    return np.ascontiguousarray(ff.T).reshape(-1, H, W)


def load_frey(folder: Union[str, os.PathLike], download: bool = True) -> Dataset:
    folder = Path(folder)
    paths = fetch([FILE], folder, download=download)
    images = read_frey(paths[FILE.name])
    n = images.shape[0]
    if n < 2:
        raise DataError(f"{paths[FILE.name]} holds {n} image(s); too few to split into train and test")
    n_test = max(1, int(n * TEST_FRACTION))
    train_idx, test_idx = holdout_indices(n, n_test, TEST_SPLIT_SEED)
    x = Split(rows_uint8(images), scale=255.0)
    return Dataset(
        name="frey-face",
        train=x.subset(train_idx), test=x.subset(test_idx),
        image_shape=(1, H, W), kind=KIND_UNIT, levels=256,
        info={"source": "https://cs.nyu.edu/~roweis/data.html", "folder": str(folder),
              "files": {k: str(v) for k, v in paths.items()},
              "test_split": f"fixed seeded hold-out: {n_test} of {n} images "
                            f"(10%, seed {TEST_SPLIT_SEED})",
              "test_indices": test_idx.tolist()})
