"""The data set every loader returns, and the one place that hands out batches.

A :class:`Split` owns its storage in the compact form the data came in (uint8 for 8-bit and
binary values, float32 for real values), either in memory (a torch tensor, on the CPU or moved
to a GPU whole) or as a memory-mapped file of an on-disk cache (see aevb/data/cache.py). Values
become float32, divided by ``scale`` (255 for 8-bit levels, 1 for binary or real values), only
per batch and on the device that asks. Everything else (trainer, evaluation, plots, baselines,
experiments) takes its batches from here: ``take`` (rows by index), ``rows`` (a contiguous
range) and ``batches`` (an iterator that reads the next batch in a background thread while the
current one is used).

Rows are [N, D] with D = C*H*W; ``Dataset.image_shape`` keeps (C, H, W) for pictures.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .prefetch import prefetched


from ..errors import DataError  # noqa: F401 (the data package's error)


# What the values of a data set are; decides which likelihoods are valid and bits/dim.
KIND_BINARY = "binary"  # every value is exactly 0 or 1
KIND_UNIT = "unit"  # values in [0, 1] (grey levels scaled from 8-bit pixels, or probabilities)
KIND_REAL = "real"  # unrestricted real values
KINDS = (KIND_BINARY, KIND_UNIT, KIND_REAL)
# the splits a data set has (valid only when held out), in the order they are listed
SPLITS = ("train", "valid", "test")

_STORAGE_DTYPES = (np.uint8, np.float32)
Index = Union[Tensor, np.ndarray, Sequence[int]]


def _as_index(idx: Index) -> np.ndarray:
    if isinstance(idx, Tensor):
        idx = idx.detach().cpu().numpy()
    return np.asarray(idx, dtype=np.int64).reshape(-1)


class Split:
    """One split: rows [N, D] in compact storage, labels ``y`` [N] int64 (or None).

    ``x``: a torch tensor or numpy array (a ``np.memmap`` for streamed data), uint8 or float32
    (other numeric types are converted once: bool -> uint8, numpy float64 -> float32; a float
    tensor given directly keeps its dtype). ``scale``: the
    stored values are divided by it when they become float (255 for 8-bit levels). ``rows``:
    optional int64 indices into the storage, the rows of this split in order (a held-out part of
    a memory-mapped file, or of data given in memory, shares the storage instead of copying it).
    ``dtype``: the float dtype batches are handed out in (None: float32 for uint8 storage, the
    storage's own dtype for float storage).
    """

    def __init__(self, x, y: Optional[Tensor] = None, scale: float = 1.0, rows: Optional[np.ndarray] = None,
                 dtype: Optional[torch.dtype] = None):
        if isinstance(x, Tensor):
            if x.dtype == torch.bool:
                x = x.to(torch.uint8)
            elif not (x.dtype == torch.uint8 or x.is_floating_point()):
                x = x.to(torch.float32)
            if x.dim() != 2:
                raise DataError(f"split data must be [N, D], got shape {tuple(x.shape)}")
        else:
            if not isinstance(x, np.memmap):
                x = np.asarray(x)
                if x.dtype == np.bool_:
                    x = x.astype(np.uint8)
                elif x.dtype not in _STORAGE_DTYPES:
                    x = x.astype(np.float32)
                x = torch.from_numpy(np.ascontiguousarray(x))
                if x.dim() != 2:
                    raise DataError(f"split data must be [N, D], got shape {tuple(x.shape)}")
            elif x.ndim != 2 or x.dtype not in _STORAGE_DTYPES:
                raise DataError(f"a memory-mapped split must be [N, D] uint8 or float32, got "
                                f"{x.dtype} {x.shape}")
        self._x = x
        self.scale = float(scale)
        self.dtype = dtype
        self._rows = None if rows is None else _as_index(rows)
        n = len(self)
        if y is not None:
            y = torch.as_tensor(y, dtype=torch.int64).reshape(-1)
            if len(y) != n:
                raise DataError(f"{len(y)} labels for {n} datapoints")
        self.y = y

    # ------------------------------------------------------------------ what it is
    def __len__(self) -> int:
        return len(self._rows) if self._rows is not None else int(self._x.shape[0])

    @property
    def dim(self) -> int:
        """D, values per datapoint."""
        return int(self._x.shape[1])

    @property
    def streamed(self) -> bool:
        """True when rows are read from a memory-mapped file on disk."""
        return isinstance(self._x, np.memmap)

    @property
    def storage_dtype(self) -> str:
        """The name of the stored values' dtype: uint8, float32, float64 or float16."""
        return str(self._x.dtype).replace("torch.", "")

    @property
    def nbytes(self) -> int:
        """Bytes of the rows of this split in storage."""
        return len(self) * self.dim * (self._x.element_size() if isinstance(self._x, Tensor) else self._x.itemsize)

    @property
    def device(self) -> torch.device:
        return self._x.device if isinstance(self._x, Tensor) else torch.device("cpu")

    def __repr__(self) -> str:
        where = "streamed from disk" if self.streamed else f"in memory on {self.device}"
        return f"Split({len(self)} x {self.dim} {self.storage_dtype}, {where})"

    # ------------------------------------------------------------------ reading rows
    def _storage_index(self, idx: np.ndarray) -> np.ndarray:
        return idx if self._rows is None else self._rows[idx]

    def _raw(self, idx: np.ndarray):
        """Stored rows ``idx`` (numpy int64), as a tensor in storage dtype (CPU or the storage's device)."""
        sidx = self._storage_index(idx)
        if isinstance(self._x, Tensor):
            return self._x.index_select(0, torch.from_numpy(sidx).to(self._x.device))
        # memory-mapped: read in ascending file order, then put back in the order asked for
        if len(sidx) > 1 and np.any(sidx[1:] < sidx[:-1]):
            order = np.argsort(sidx, kind="stable")
            block = np.asarray(self._x[sidx[order]])
            out = np.empty(block.shape, dtype=block.dtype)
            out[order] = block
        else:
            out = np.asarray(self._x[sidx]) if len(sidx) else np.empty((0, self.dim), self._x.dtype)
        return torch.from_numpy(out)

    def _to_float(self, raw: Tensor, device, view: bool = False) -> Tensor:
        """Stored rows ``raw`` as floats on ``device``; ``view``: ``raw`` shares the storage, which
        is never handed out itself (a caller may change its batch in place; the storage may be a
        user's own tensor)."""
        device = torch.device(device) if device is not None else raw.device
        moved = raw.device != device
        if moved:
            raw = raw.to(device, non_blocking=raw.device.type == "cpu" and raw.is_pinned())
        if raw.is_floating_point():  # float storage keeps its precision unless ``dtype`` says otherwise
            if self.dtype is not None and raw.dtype != self.dtype:
                x = raw.to(self.dtype)
                return x.div_(self.scale) if self.scale != 1.0 else x
            if self.scale != 1.0:
                return raw / self.scale
            return raw.clone() if view and not moved else raw
        x = raw.to(self.dtype or torch.float32)
        return x.div_(self.scale) if self.scale != 1.0 else x

    def take(self, idx: Index, device=None) -> Tensor:
        """Rows ``idx`` as float32 [len(idx), D] on ``device`` (default: where the data are)."""
        if isinstance(idx, Tensor) and isinstance(self._x, Tensor) and self._rows is None:
            # the training hot path: index the stored tensor directly, no round trip through numpy
            return self._to_float(self._x.index_select(0, idx.to(self._x.device)), device)
        return self._to_float(self._raw(_as_index(idx)), device)

    def rows(self, start: int = 0, stop: Optional[int] = None, device=None) -> Tensor:
        """Rows ``start:stop`` as float32 [stop - start, D]."""
        n = len(self)
        stop = n if stop is None else min(int(stop), n)
        start = min(max(int(start), 0), stop)
        if self._rows is None and isinstance(self._x, Tensor):
            return self._to_float(self._x[start:stop], device, view=True)
        return self.take(np.arange(start, stop, dtype=np.int64), device)

    def materialize(self, device=None) -> Tensor:
        """The whole split as float32 [N, D]: for small data and tests only (4 bytes a value)."""
        return self.rows(0, len(self), device)

    def batches(self, indices: Union[int, Iterable[Index]], device=None, prefetch: Optional[bool] = None
                ) -> Iterator[Tensor]:
        """Float batches on ``device``: ``indices`` is a batch size (contiguous batches in order)
        or an iterable of index arrays (one per batch, e.g. slices of a shuffled permutation).

        Streamed splits read the next batch in a background thread while the caller works on
        the current one (``prefetch``, default on for streamed data); the batches are the same
        either way."""
        if isinstance(indices, (int, np.integer)):
            bs = max(1, int(indices))
            n = len(self)
            if self._rows is None and isinstance(self._x, Tensor):
                return (self._to_float(self._x[i:i + bs], device, view=True) for i in range(0, n, bs))
            indices = (np.arange(i, min(i + bs, n), dtype=np.int64) for i in range(0, n, bs))
        if prefetch is None:
            prefetch = self.streamed
        if not prefetch:
            return (self.take(i, device) for i in indices)
        return prefetched(indices, lambda i: self._raw(_as_index(i)), lambda raw: self._to_float(raw, device))

    def block_rows(self, nbytes: int = 16 * 2 ** 20) -> int:
        """Rows in a block of about ``nbytes`` bytes as float32 (at least 1): the unit of work of
        whole-split passes (checks, binarization) that must not hold the split in memory."""
        return max(1, nbytes // (4 * max(1, self.dim)))

    def scan(self, batch_size: Optional[int] = None) -> Iterator[np.ndarray]:
        """Stored rows (uint8 or float32 numpy, unscaled) in order, a block at a time: for checks
        and cache writing, without holding the split in memory."""
        batch_size = batch_size or self.block_rows()
        for i in range(0, len(self), batch_size):
            raw = self._raw(np.arange(i, min(i + batch_size, len(self)), dtype=np.int64))
            yield raw.cpu().numpy()

    def moments(self, max_rows: int = 10_000) -> tuple:
        """(mean, var), each float32 [D] on the CPU: the per-value mean and variance of at most
        ``max_rows`` evenly spaced rows (all of them in smaller splits), a block at a time, so a
        streamed split is never read whole. Deterministic: no random numbers are drawn."""
        n = len(self)
        idx = np.unique(np.linspace(0, n - 1, min(n, max_rows)).round().astype(np.int64)) if n else np.zeros(0, np.int64)
        total = torch.zeros(self.dim, dtype=torch.float64)
        squares = torch.zeros(self.dim, dtype=torch.float64)
        step = self.block_rows(2 * 2 ** 20)  # small blocks: a few MB of temporaries, whatever N
        for i in range(0, len(idx), step):
            x = self.take(idx[i:i + step], "cpu")
            total += x.sum(0, dtype=torch.float64)
            squares += x.square_().sum(0, dtype=torch.float64)
        count = max(len(idx), 1)
        mean = total / count
        return mean.float(), (squares / count - mean.pow(2)).clamp(min=0).float()

    def value_range(self) -> tuple:
        """(min, max) of the float values, computed a block at a time."""
        lo, hi = np.inf, -np.inf
        for block in self.scan():
            if block.size:
                lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
        return lo / self.scale, hi / self.scale

    # ------------------------------------------------------------------ new splits
    def subset(self, idx: Index) -> "Split":
        """The rows ``idx`` as a new split: a view of the same storage for a streamed split and
        for one that is already a view of shared storage (``rows``, e.g. data given in memory),
        else a copy in memory."""
        idx = _as_index(idx)
        y = None if self.y is None else self.y[torch.from_numpy(idx).to(self.y.device)]
        if self.streamed or self._rows is not None:
            return Split(self._x, y, scale=self.scale, rows=self._storage_index(idx), dtype=self.dtype)
        return Split(self._raw(idx), y, scale=self.scale, dtype=self.dtype)

    def head(self, n: int) -> "Split":
        """The first ``n`` rows as a split that shares this one's storage (no copy, in memory or
        on disk): for passes over a few rows that read them a batch at a time."""
        n = max(0, min(int(n), len(self)))
        y = None if self.y is None else self.y[:n]
        return Split(self._x, y, scale=self.scale, rows=self._storage_index(np.arange(n, dtype=np.int64)),
                     dtype=self.dtype)

    def to(self, device) -> "Split":
        """The split with in-memory storage moved to ``device`` (still compact); a streamed
        split stays on disk and sends each batch to the device that asks for it."""
        if self.streamed or torch.device(device) == self.device:
            return self  # in place already: no copy (a view of shared storage stays one)
        x = self._x if self._rows is None else self._raw(np.arange(len(self)))
        return Split(x.to(device), None if self.y is None else self.y.to(device), scale=self.scale, dtype=self.dtype)

    def in_memory(self) -> "Split":
        """The split read whole into memory (compact)."""
        if not self.streamed:
            return self
        return Split(self._raw(np.arange(len(self), dtype=np.int64)), self.y, scale=self.scale, dtype=self.dtype)


def as_split(x: Union["Split", Tensor]) -> "Split":
    """A Split of ``x`` (a float [N, D] tensor is wrapped as it is, without a copy)."""
    return x if isinstance(x, Split) else Split(x)


def binarized(split: Split, generator: torch.Generator) -> Split:
    """One fixed draw x ~ Bernoulli(x) of every value, a block of rows at a time, as a uint8 0/1
    split in memory (a quarter of the float size)."""
    out = torch.empty(len(split), split.dim, dtype=torch.uint8)
    step = split.block_rows()
    for i in range(0, len(split), step):
        xb = split.rows(i, i + step)
        out[i:i + len(xb)] = torch.bernoulli(xb.clamp_(0.0, 1.0), generator=generator).to(torch.uint8)
    return Split(out, split.y)


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
        for split_name in SPLITS:
            split = getattr(self, split_name)
            if split is not None and split.dim != d:
                raise DataError(
                    f"{self.name}: {split_name} split has {split.dim} values per datapoint "
                    f"but the image shape {tuple(self.image_shape)} needs {d}"
                )
        if len(self.train) == 0:
            raise DataError(f"{self.name}: the training split is empty")

    @property
    def dim(self) -> int:
        return self.train.dim

    @property
    def streamed(self) -> bool:
        return any(s.streamed for s in self.splits().values())

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.splits().values())

    def splits(self) -> dict:
        """{name: Split} of the splits present, in the order train, valid, test."""
        return {n: getattr(self, n) for n in SPLITS if getattr(self, n) is not None}

    def split(self, name: str) -> Split:
        s = getattr(self, name, None) if name in SPLITS else None
        if s is None:
            have = [n for n in SPLITS if getattr(self, n) is not None]
            raise DataError(f"{self.name} has no {name!r} split; available: {', '.join(have)}")
        return s

    @property
    def n_classes(self) -> Optional[int]:
        y = self.train.y
        return None if y is None else int(y.max().item()) + 1
