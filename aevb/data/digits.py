"""The small handwritten digits set embedded in scikit-learn (``sklearn.datasets.load_digits``):
1797 images of 8 x 8 with grey levels 0..16 (UCI optdigits test set). Needs no download, so it is
the default data set for quick runs and tests.

Values / 16 (KIND_UNIT, 17 levels), image shape (1, 8, 8), labels 0..9. No official split: a
fixed 20% (359 images) is held out as test by a seeded permutation (``TEST_SPLIT_SEED``, the same
in every run); 1438 training images remain.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import KIND_UNIT, DataError, Dataset, Split
from .spec import NAMED_SHAPES
from .utils import TEST_SPLIT_SEED, holdout_indices

TEST_FRACTION = 0.2


def load_digits_dataset() -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("the 'digits' data set needs scikit-learn: pip install scikit-learn") from e
    bunch = load_digits()
    images = np.asarray(bunch.images)  # [1797, 8, 8] float64 in 0..16
    target = np.asarray(bunch.target)
    if images.ndim != 3 or images.shape[1:] != NAMED_SHAPES["digits"][1:] or images.min() < 0 or images.max() > 16:
        raise DataError(f"scikit-learn's digits have an unexpected shape {images.shape} or range")
    n = images.shape[0]
    n_test = int(round(n * TEST_FRACTION))
    tr, te = holdout_indices(n, n_test, TEST_SPLIT_SEED)
    x = Split(images.reshape(n, -1).astype(np.uint8), torch.from_numpy(target.astype(np.int64)), scale=16.0)
    return Dataset(
        name="digits",
        train=x.subset(tr), test=x.subset(te),
        image_shape=NAMED_SHAPES["digits"], kind=KIND_UNIT, levels=17,
        info={"source": "sklearn.datasets.load_digits (UCI optdigits)",
              "files": {},
              "test_split": f"fixed seeded hold-out: {n_test} of {n} images (20%, seed {TEST_SPLIT_SEED})",
              "classes": [str(i) for i in range(10)]})
