"""Small helpers shared by the loaders: tensors from numpy, seeded hold-out splits, value kinds."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from .base import KIND_BINARY, KIND_REAL, KIND_UNIT, DataError, Split

# Seed of the fixed test hold-out for data sets without an official test split (frey-face,
# digits, single arrays, image folders). Fixed, independent of the user's --seed, so that every
# run evaluates on the same test images.
TEST_SPLIT_SEED = 1234
# the share of the datapoints held out as test by that rule (the digits set holds out 20 %)
TEST_FRACTION = 0.1


def rows_uint8(arr: np.ndarray) -> torch.Tensor:
    """[N, ...] uint8 -> [N, D] uint8 tensor (the compact storage of a Split; no copy if contiguous)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if not arr.flags.writeable:  # e.g. np.frombuffer of a file's bytes
        arr = arr.copy()
    return torch.from_numpy(arr.reshape(arr.shape[0], -1))


def labels_tensor(y: Optional[np.ndarray]) -> Optional[torch.Tensor]:
    if y is None:
        return None
    return torch.from_numpy(np.asarray(y).astype(np.int64, copy=True)).reshape(-1)


def holdout_indices(n: int, n_holdout: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded random split of ``range(n)``: (kept, held_out) index arrays, each sorted so that the
    original order is preserved within each part."""
    if not 0 <= n_holdout < n:
        raise DataError(f"cannot hold out {n_holdout} of {n} datapoints")
    perm = np.random.RandomState(seed).permutation(n)
    held = np.sort(perm[:n_holdout])
    kept = np.sort(perm[n_holdout:])
    return kept, held


def split_off(split: Split, n_holdout: int, seed: int) -> Tuple[Split, Split]:
    """Split a :class:`Split` into (rest, held_out) with a seeded permutation."""
    kept, held = holdout_indices(len(split), n_holdout, seed)
    return split.subset(kept), split.subset(held)


def hold_out_test(pool: Split, what: str, name: str, fraction: float = TEST_FRACTION) -> Tuple[Split, Split, str]:
    """(train, test, note) of a data set without a test split of its own: a fixed share of
    ``pool`` (at least one datapoint) held out by a permutation seeded with ``TEST_SPLIT_SEED``,
    the same in every run whatever the user's seed. ``what`` names the datapoints in messages
    ('images', 'datapoints'); ``name`` the data set."""
    n = len(pool)
    if n < 2:
        raise DataError(f"{name}: only {n} {what[:-1] if n == 1 else what}; need at least 2 (train and test)")
    n_test = max(1, int(round(n * fraction)))
    kept, held = holdout_indices(n, n_test, TEST_SPLIT_SEED)
    note = f"fixed seeded hold-out: {n_test} of {n} {what} ({fraction:.0%}, seed {TEST_SPLIT_SEED})"
    return pool.subset(kept), pool.subset(held), note


def count_from(amount, n: int, what: str = "validation") -> int:
    """An int count, or a float fraction of ``n``, as a count; validated."""
    if amount is None or amount is False:
        return 0
    if isinstance(amount, bool):
        raise DataError(f"{what} must be a count or a fraction, got {amount!r}")
    if isinstance(amount, str):
        try:
            amount = float(amount) if any(c in amount for c in ".eE") else int(amount)
        except ValueError as e:
            raise DataError(f"{what} must be a count or a fraction, got {amount!r}") from e
    if isinstance(amount, float):
        if amount != amount or amount < 0:
            raise DataError(f"{what} must be >= 0, got {amount}")
        if amount < 1:
            count = int(round(amount * n))
        elif amount.is_integer():
            count = int(amount)
        else:
            raise DataError(f"{what} fraction must be below 1 (or give a whole count), got {amount}")
    else:
        count = int(amount)
        if count < 0:
            raise DataError(f"{what} must be >= 0, got {count}")
    if count >= n:
        raise DataError(f"{what} of {count} datapoints leaves nothing to train on ({n} in the training split)")
    return count


def infer_kind(*arrays) -> str:
    """KIND_BINARY if every value is 0 or 1, KIND_UNIT if all in [0, 1], else KIND_REAL."""
    lo, hi, binary = np.inf, -np.inf, True
    for a in arrays:
        if a is None or (a.numel() if isinstance(a, torch.Tensor) else a.size) == 0:
            continue
        lo = min(lo, float(a.min()))
        hi = max(hi, float(a.max()))
        if binary:
            binary = bool(((a == 0) | (a == 1)).all())
    if binary:
        return KIND_BINARY
    if lo >= 0 and hi <= 1:
        return KIND_UNIT
    return KIND_REAL
