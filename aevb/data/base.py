"""The in-memory data set every loader returns.

All data are held as one float32 tensor per split, shaped [N, D] with D = C*H*W, so that
training draws minibatches by indexing (no per-sample Python work). ``image_shape`` keeps the
original (C, H, W) for pictures.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from torch import Tensor


class DataError(ValueError):
    """A data set could not be loaded: the message says what was wrong and how to fix it."""


# What the values of a data set are; decides which likelihoods are valid and bits/dim.
KIND_BINARY = "binary"  # every value is exactly 0 or 1
KIND_UNIT = "unit"  # values in [0, 1] (grey levels scaled from 8-bit pixels, or probabilities)
KIND_REAL = "real"  # unrestricted real values
KINDS = (KIND_BINARY, KIND_UNIT, KIND_REAL)


@dataclass
class Split:
    """One split: ``x`` [N, D] float32, ``y`` [N] int64 labels or None."""

    x: Tensor
    y: Optional[Tensor] = None

    def __post_init__(self) -> None:
        if self.x.dim() != 2:
            raise DataError(f"split data must be [N, D], got shape {tuple(self.x.shape)}")
        if self.y is not None and len(self.y) != len(self.x):
            raise DataError(f"{len(self.y)} labels for {len(self.x)} datapoints")

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device) -> "Split":
        return Split(self.x.to(device), None if self.y is None else self.y.to(device))


@dataclass
class Dataset:
    """Train / (valid) / test splits and what the values mean.

    ``kind``: one of KINDS. ``levels``: number of discrete levels per value when the data were
    quantised (2 for binary, 256 for 8-bit images) or None; used for bits per dimension.
    ``dynamic_binarization``: when True, training and evaluation draw x ~ Bernoulli(x) afresh
    every time a batch is used.
    """

    name: str
    train: Split
    test: Split
    image_shape: tuple
    kind: str = KIND_UNIT
    valid: Optional[Split] = None
    levels: Optional[int] = None
    dynamic_binarization: bool = False
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"unknown data kind {self.kind!r}; expected one of {KINDS}")
        d = 1
        for s in self.image_shape:
            d *= int(s)
        for split_name in ("train", "valid", "test"):
            split = getattr(self, split_name)
            if split is not None and split.x.shape[1] != d:
                raise DataError(
                    f"{self.name}: {split_name} split has {split.x.shape[1]} values per datapoint "
                    f"but the image shape {tuple(self.image_shape)} needs {d}"
                )
        if len(self.train) == 0:
            raise DataError(f"{self.name}: the training split is empty")

    @property
    def dim(self) -> int:
        return self.train.x.shape[1]

    def split(self, name: str) -> Split:
        s = getattr(self, name, None) if name in ("train", "valid", "test") else None
        if s is None:
            have = [n for n in ("train", "valid", "test") if getattr(self, n) is not None]
            raise DataError(f"{self.name} has no {name!r} split; available: {', '.join(have)}")
        return s

    @property
    def n_classes(self) -> Optional[int]:
        y = self.train.y
        return None if y is None else int(y.max().item()) + 1
