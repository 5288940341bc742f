"""Data a PyTorch user holds, as aevb's :class:`Dataset`: a tensor or NumPy array of datapoints,
a map-style ``torch.utils.data.Dataset`` whose items are a tensor or ``(tensor, label)``, or a
``DataLoader``. :func:`aevb.data.as_dataset` is the entry point; this module turns the data into
compact splits and knows the record a run keeps of them.

Shapes (the rule of ``array:`` files, :func:`aevb.data.arrays.image_shape_of`)
  * ``[N, D]`` vectors, ``[N, H, W]`` grey images, ``[N, C, H, W]`` images (channels first);
  * ``[N, H, W, C]`` with C of 1 or 3 (and axis 1 not 1 or 3) is read as channels last and
    transposed to channels first: for C = 3 that is one copy of the data.

Storage
  * A tensor or array is not copied when it is contiguous and of a kept dtype: the splits are
    views of the user's own storage (``torch.from_numpy`` / the tensor itself). Kept dtypes:
    uint8 (8-bit levels / 255, or binary when every value is 0 or 1), bool (viewed as uint8 0/1),
    float32, float64 and float16 (values kept as they are; batches are float32). Other dtypes
    (bfloat16, integers other than uint8) are converted once to float32.
  * A map-style Dataset or a DataLoader is read once, in one pass, in index order, into one
    tensor of the first item's dtype; a DataLoader that shuffles is read in index order instead
    (same batch size, collate function and workers), and random transforms are drawn once: the
    data are then fixed, and aevb's own seeded shuffle orders training, so a run resumes exactly.

The test split, when none is given, is the hold-out ``array:`` and ``folder:`` data use: a fixed
10 % (seed ``TEST_SPLIT_SEED``, whatever the user's seed), as views of the same storage.
"""
from __future__ import annotations

import hashlib
import sys
import warnings
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .arrays import _kind, _labels, image_shape_of
from .base import KIND_BINARY, KIND_REAL, DataError, Dataset, Split
from .spec import MemoryRecord
from .utils import hold_out_test

MEMORY_NAME = "memory"
KEPT_FLOATS = (torch.float32, torch.float64, torch.float16)
# rows of the user's data read at a time by the checks and the fingerprint
_BLOCK_BYTES = 16 * 2 ** 20


# ------------------------------------------------------------------ one part (data, valid or test)
class _Part:
    """One part the user gave: its rows as a tensor [N, D] in kept storage, labels or None, the
    shape and dtype as given, and the image shape (C, H, W)."""

    def __init__(self, rows: Tensor, labels: Optional[Tensor], shape: tuple, dtype: str, image_shape: tuple,
                 shared: bool = True):
        self.rows, self.labels, self.shape, self.dtype, self.image_shape = rows, labels, shape, dtype, image_shape
        self.shared = shared  # the rows are a view of the given storage, not a copy


def _tensor_of(data, what: str) -> Tensor:
    """A tensor sharing ``data``'s storage where it can (contiguous NumPy arrays of a dtype torch
    has); a read-only array is shared too (aevb never writes into its data)."""
    if isinstance(data, Tensor):
        return data.detach()
    arr = np.asarray(data)
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    if arr.dtype.kind not in "uif" or arr.dtype.kind == "c":
        raise DataError(f"{what} has dtype {arr.dtype}; expected numbers (uint8, float32, ...)")
    arr = np.ascontiguousarray(arr)  # no copy when it is contiguous already
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "not writable": aevb never writes into it
        try:
            return torch.from_numpy(arr)
        except TypeError:  # a dtype torch does not have (e.g. float128): one float32 copy
            return torch.from_numpy(arr.astype(np.float32))


def _part_from_tensor(x: Tensor, labels, what: str) -> _Part:
    shape, given_dtype = tuple(int(s) for s in x.shape), str(x.dtype).replace("torch.", "")
    given = x
    if x.dim() < 2:
        raise DataError(f"{what} has shape {shape}; expected [N, D], [N, H, W], [N, C, H, W] or [N, H, W, C] "
                        "(one datapoint per row)")
    if shape[0] == 0:
        raise DataError(f"{what} is empty (shape {shape}); give at least 2 datapoints")
    if x.dtype == torch.bool:
        x = x.view(torch.uint8)
    if x.is_complex():
        raise DataError(f"{what} has dtype {given_dtype}; expected real numbers (uint8, float32, ...)")
    image_shape, channels_last = image_shape_of(x, what)
    if channels_last:  # [N, H, W, C] -> [N, C, H, W]: a copy for C = 3 (C = 1 is a reshape)
        x = x.permute(0, 3, 1, 2)
    if x.dtype != torch.uint8 and x.dtype not in KEPT_FLOATS:
        x = x.to(torch.float32)  # integers other than uint8, bfloat16: one float32 copy
    rows = x.reshape(shape[0], -1)  # a view of contiguous data
    shared = rows.untyped_storage().data_ptr() == given.untyped_storage().data_ptr()
    return _Part(rows, _label_tensor(labels, shape[0], what), shape, given_dtype, tuple(image_shape), shared)


def _label_tensor(labels, n: int, what: str) -> Optional[Tensor]:
    if labels is None:
        return None
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    return _labels(np.asarray(labels), n, f"of {what}")


def _read_items(ds, what: str) -> _Part:
    """A map-style Dataset read item by item, once, into one tensor [N, ...] of the first item's
    dtype (an item is a tensor or array, or a tuple whose first element is one and whose second
    is the label)."""
    try:
        n = len(ds)
    except TypeError:
        raise DataError(f"{what}: a {type(ds).__name__} has no length; give a map-style Dataset, a "
                        "DataLoader, a tensor or an array") from None
    if n == 0:
        raise DataError(f"{what} is empty (0 items); give at least 2 datapoints")
    out, labels, first = None, None, None
    for i in range(n):
        x, y = _item_parts(ds[i], i, what)
        if out is None:
            first = (tuple(x.shape), x.dtype)
            out = torch.empty((n,) + first[0], dtype=x.dtype)
            labels = None if y is None else torch.empty(n, dtype=torch.int64)
        _check_item(x, i, first, what)
        out[i] = x
        if labels is not None:
            if y is None:
                raise DataError(f"{what}: item {i} has no label but item 0 has one; give every item a label or none")
            labels[i] = _label_value(y, i, what)
    return _part_from_tensor(out, labels, what)


def _label_value(y, i: int, what: str) -> int:
    try:
        value = int(y)
    except (TypeError, ValueError):
        raise DataError(f"{what}: the label of item {i} is {y!r}; labels must be integers >= 0") from None
    if value < 0 or value != y:
        raise DataError(f"{what}: the label of item {i} is {y!r}; labels must be integers >= 0")
    return value


def _item_parts(item, i: int, what: str) -> Tuple[Tensor, Optional[object]]:
    y = None
    if isinstance(item, (tuple, list)):
        if not item:
            raise DataError(f"{what}: item {i} is an empty {type(item).__name__}; expected a tensor or (tensor, label)")
        item, y = item[0], (item[1] if len(item) > 1 else None)
        if isinstance(y, Tensor):
            if y.numel() != 1:
                raise DataError(f"{what}: the label of item {i} has shape {tuple(y.shape)}; expected one integer")
            y = y.item()
    if isinstance(item, np.ndarray):
        item = _tensor_of(item, f"{what}: item {i}")
    if not isinstance(item, Tensor):
        raise DataError(f"{what}: item {i} is a {type(item).__name__}; expected a tensor or array, or "
                        "(tensor, label)")
    return item.detach(), y


def _check_item(x: Tensor, i: int, first: tuple, what: str) -> None:
    if tuple(x.shape) != first[0]:
        raise DataError(f"{what}: item {i} has shape {tuple(x.shape)} but item 0 has {first[0]}; every item must "
                        "have the same shape (resize or crop them first)")
    if x.dtype != first[1]:
        raise DataError(f"{what}: item {i} is {str(x.dtype).replace('torch.', '')} but item 0 is "
                        f"{str(first[1]).replace('torch.', '')}; give every item the same dtype")


def _read_loader(loader, what: str) -> _Part:
    """A DataLoader's batches, read once into one tensor (see the module docs)."""
    from torch.utils.data import DataLoader, RandomSampler

    shuffles = isinstance(loader.sampler, RandomSampler)
    map_style = not isinstance(loader.dataset, torch.utils.data.IterableDataset)
    if shuffles and map_style:  # read in index order: the same data every time they are read
        loader = DataLoader(loader.dataset, batch_size=loader.batch_size or 1, shuffle=False,
                            num_workers=loader.num_workers, collate_fn=loader.collate_fn)
    try:
        n = len(loader.dataset) if map_style else None
    except TypeError:
        n = None
    single = loader.batch_size is None and loader.batch_sampler is None  # items one at a time, unbatched
    out, labels, first, pieces, label_pieces, filled = None, None, None, [], [], 0
    for b, batch in enumerate(_batches(loader, what)):
        y = None
        if single:
            x, y = _item_parts(batch, b, what)
            batch, y = x.unsqueeze(0), None if y is None else torch.tensor([_label_value(y, b, what)])
        elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
            batch, y = batch[0], (batch[1] if len(batch) > 1 else None)
        if not isinstance(batch, Tensor):
            raise DataError(f"{what}: its batches are {type(batch).__name__}s, not tensors or (tensor, label) "
                            "pairs; give a collate_fn that returns them, or pass the tensor itself")
        if y is not None and not isinstance(y, Tensor):
            try:
                y = torch.as_tensor(y)
            except (TypeError, ValueError, RuntimeError):
                raise DataError(f"{what}: the labels of batch {b} are not integers ({type(y).__name__}); give "
                                "integer labels >= 0, or none") from None
        if y is not None and (y.is_complex() or (y.is_floating_point() and not bool((y == y.round()).all()))):
            raise DataError(f"{what}: the labels of batch {b} are not integers; give integer labels >= 0")
        if batch.dim() < 1 or len(batch) == 0:
            continue
        if first is None:
            first = (tuple(batch.shape[1:]), batch.dtype, y is not None)
            if n is not None:
                out = torch.empty((n,) + first[0], dtype=batch.dtype)
                labels = None if y is None else torch.empty(n, dtype=torch.int64)
        _check_item(batch[0], filled, first, what)
        if (y is not None) != first[2]:
            raise DataError(f"{what}: batch {b} {'has' if y is not None else 'has no'} labels but the first batch "
                            f"{'has none' if y is not None else 'has'}; give labels with every batch or none")
        if y is not None and len(y) != len(batch):
            raise DataError(f"{what}: batch {b} has {len(batch)} datapoints but {len(y)} labels")
        if out is not None and filled + len(batch) <= n:
            out[filled:filled + len(batch)] = batch
            if labels is not None:
                labels[filled:filled + len(batch)] = y.reshape(-1)
        else:
            pieces.append(batch)
            label_pieces.append(y)
        filled += len(batch)
    if first is None:
        raise DataError(f"{what} is empty (its DataLoader gave no datapoints); give at least 2 datapoints")
    if out is None or pieces:
        whole = [out[:n]] if out is not None else []
        out = torch.cat(whole + pieces)
        if any(y is None for y in label_pieces) or (labels is None and whole):
            labels = None
        else:
            labels = torch.cat(([labels] if labels is not None else []) + [y.reshape(-1) for y in label_pieces])
    elif filled < n:
        out, labels = out[:filled], None if labels is None else labels[:filled]
    shuffle = "; its shuffle is replaced by aevb's seeded one" if shuffles else ""
    print(f"aevb: read the DataLoader once into memory ({filled} datapoints, in index order{shuffle}); random "
          "transforms, if any, were drawn once", file=sys.stderr)
    return _part_from_tensor(out, labels, what)


def _batches(loader, what: str):
    """The loader's batches; an error of its own collation (e.g. items of different shapes that
    cannot be stacked) is one line."""
    it = iter(loader)
    b = 0
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except (RuntimeError, TypeError, ValueError) as e:
            said = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"{what}: its batch {b} could not be made ({said}); every item must be a tensor of one "
                            "shape, or (tensor, label)") from None
        yield batch
        b += 1


def _part(data, labels, what: str) -> _Part:
    if isinstance(data, tuple) and len(data) == 2 and labels is None:
        data, labels = data
    if isinstance(data, torch.utils.data.DataLoader):
        part = _read_loader(data, what)
    elif isinstance(data, torch.utils.data.TensorDataset):
        tensors = data.tensors
        part = _part_from_tensor(tensors[0].detach(), tensors[1] if len(tensors) > 1 else None, what)
    elif isinstance(data, torch.utils.data.Dataset):
        part = _read_items(data, what)
    elif isinstance(data, (Tensor, np.ndarray)):
        return _part_from_tensor(_tensor_of(data, what), labels, what)
    elif isinstance(data, (list, tuple)) and data and all(isinstance(d, (Tensor, np.ndarray)) for d in data):
        raise DataError(f"{what} is a {type(data).__name__} of {len(data)} arrays; stack them into one tensor "
                        "(torch.stack) or give a Dataset")
    else:
        raise DataError(f"cannot read {what}: a {type(data).__name__}; give a tensor, a NumPy array, a "
                        "torch Dataset, a DataLoader, a data set name, folder:PATH or array:PATH")
    if labels is not None:
        part.labels = _label_tensor(labels, part.shape[0], what)
    return part


# ------------------------------------------------------------------ checks over the whole data
def _block(rows: Tensor) -> int:
    return max(1, _BLOCK_BYTES // max(1, rows.shape[1] * rows.element_size()))


def _check_finite(part: _Part, what: str) -> None:
    """Refuse NaN or infinite values, naming the first bad datapoint's index (a block of rows at a time)."""
    rows = part.rows
    if not rows.is_floating_point():
        return
    step = _block(rows)
    for i in range(0, rows.shape[0], step):
        bad = ~torch.isfinite(rows[i:i + step]).all(dim=1)
        if bad.any():
            first = i + int(bad.nonzero()[0, 0])
            count = int(bad.sum()) + sum(int((~torch.isfinite(rows[j:j + step]).all(dim=1)).sum())
                                         for j in range(i + step, rows.shape[0], step))
            raise DataError(f"{what}: datapoint {first} holds NaN or infinity ({count} datapoint(s) do); clean the "
                            "data first, e.g. drop them or torch.nan_to_num")


def fingerprint(*rows: Tensor) -> str:
    """sha256 of the bytes of ``rows`` (tensors [N, D], in order), a block of rows at a time."""
    h = hashlib.sha256()
    for r in rows:
        step = _block(r)
        for i in range(0, r.shape[0], step):
            block = r[i:i + step].cpu().contiguous()
            if block.dtype == torch.bfloat16:  # pragma: no cover - converted before
                block = block.float()
            h.update(memoryview(block.numpy()).cast("B"))
    return h.hexdigest()


# ------------------------------------------------------------------ the Dataset
def memory_dataset(data, valid=None, test=None, labels=None) -> Dataset:
    """``data`` (and ``valid`` / ``test`` parts, each in any of the forms of the module docs, or
    a ``(data, labels)`` pair) as a Dataset of compact splits sharing the user's storage, with
    the record of the data in ``info["memory"]`` (a :class:`MemoryRecord`) and its spec in
    ``info["spec"]``; no hold-out of validation data yet (see :func:`aevb.data.as_dataset`)."""
    parts = {"train": _part(data, labels, "the data")}
    for name, given in (("valid", valid), ("test", test)):
        if given is not None:
            parts[name] = _part(given, None, f"the {name} data")
    train = parts["train"]
    for name, p in parts.items():
        if p.image_shape != train.image_shape:
            raise DataError(f"the {name} data have datapoints of shape {p.shape[1:]} but the data have "
                            f"{train.shape[1:]}; give every part the same shape")
    stored = {str(p.rows.dtype) for p in parts.values()}
    if "torch.uint8" in stored and len(stored) > 1:
        raise DataError("the data parts mix uint8 with other dtypes (" + ", ".join(
            f"{n} {p.dtype}" for n, p in parts.items()) + "); give every part the same dtype")
    for name, p in parts.items():
        _check_finite(p, "the data" if name == "train" else f"the {name} data")
    uint8 = train.rows.dtype == torch.uint8
    scale = 1.0
    if uint8 and any(int(p.rows.max()) > 1 for p in parts.values()):
        scale = 255.0
    batch_dtype = None if uint8 or train.rows.dtype == torch.float32 else torch.float32

    def split(p: _Part) -> Split:  # a view of the whole part (its rows index the user's storage)
        return Split(p.rows, p.labels, scale=scale, rows=np.arange(p.shape[0], dtype=np.int64), dtype=batch_dtype)

    splits = {n: split(p) for n, p in parts.items()}
    info = {"source": "data given in memory"}
    if "test" not in splits:
        splits["train"], splits["test"], info["test_split"] = hold_out_test(splits["train"], "datapoints",
                                                                            "the data")
    else:
        info["test_split"] = "given (test=...)"
    labelled = [s.y is not None for s in splits.values()]
    if any(labelled) and not all(labelled):
        for s in splits.values():
            s.y = None
        info["labels"] = "ignored: not every part has labels"
    kind = _kind(splits.values())
    levels = 2 if kind == KIND_BINARY else (256 if uint8 else None)
    record = MemoryRecord(shape=train.shape, dtype=train.dtype,
                          counts={n: p.shape[0] for n, p in parts.items()},
                          sha256=fingerprint(*(p.rows for p in parts.values())))
    info.update(memory=record.to_dict(), spec=record.spec(), storage=(
        "in memory, sharing the given data's storage" if all(p.shared for p in parts.values())
        else "in memory (one compact copy of the given data)"))
    return Dataset(name=MEMORY_NAME, train=splits["train"], valid=splits.get("valid"), test=splits["test"],
                   image_shape=train.image_shape, kind=kind, levels=levels if kind != KIND_REAL else None,
                   info=info)


def check_matches(record: MemoryRecord, ds: Dataset, run: str, exact: bool = True) -> None:
    """Refuse (one DataError line) data ``ds`` that are not the data of ``record``, the record
    of a run trained on data given in memory: the shape of a datapoint always; with ``exact``
    (a resume) also the dtype, the count of each part and the fingerprint of the bytes."""
    want = record.describe()
    have = ds.info.get("memory")
    if tuple(ds.image_shape) != tuple(record.image_shape()):
        got, fits = ("x".join(map(str, s)) for s in (ds.image_shape, record.image_shape()))
        raise DataError(f"{run} was trained on data given in memory ({want}); the data given have datapoints of "
                        f"{got} (C x H x W) but the run takes {fits}; give data of the run's shape")
    if not exact:
        return
    if have is None:
        raise DataError(f"{run} was trained on data given in memory ({want}); to continue it, give the same data "
                        f"in memory (Python: data=...), not {ds.info.get('spec', ds.name)}")
    now = MemoryRecord.from_dict(have)
    if now.sha256 != record.sha256 or now.shape != record.shape or now.dtype != record.dtype or \
            now.counts != record.counts:
        same = now.shape == record.shape and now.dtype == record.dtype and now.counts == record.counts
        raise DataError(f"{run} was trained on data given in memory ({want}, sha256 {record.sha256[:12]}...); the "
                        f"data given are {'other values of the same shape' if same else now.describe()} (sha256 "
                        f"{now.sha256[:12]}...); give the run's own data, or train a new run on these")
