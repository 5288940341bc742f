"""The IDX file format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/).

A file is a big-endian header: two zero bytes, a type byte (0x08 = unsigned byte), a byte with
the number of dimensions, then one 4-byte size per dimension, followed by the values in C order.
Images are ``0x00000803`` ([N, rows, cols] uint8), labels ``0x00000801`` ([N] uint8).
Files may be gzip-compressed (detected from the content, not only the name).
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .base import DataError

MAGIC_LABELS = 0x00000801
MAGIC_IMAGES = 0x00000803
_GZIP_MAGIC = b"\x1f\x8b"
_TYPES = {0x08: np.dtype(np.uint8)}  # MNIST-style files only hold unsigned bytes


def _fix_hint(path) -> str:
    return f"Delete {path} and download it again (or replace it with a correct copy)."


def read_bytes(path: Union[str, os.PathLike]) -> bytes:
    """The (decompressed, if gzip) content of a file, with a helpful error when unreadable."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        if head == _GZIP_MAGIC:
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{path} is a corrupt or truncated gzip file ({e}). {_fix_hint(path)}") from e
    except OSError as e:
        raise DataError(f"could not read {path}: {e}") from e


def parse_idx(data: bytes, name: str = "<bytes>", expected_magic: Optional[int] = None) -> np.ndarray:
    """Parse IDX bytes into a read-only numpy array (no copy)."""
    if len(data) < 4:
        raise DataError(f"{name} is too short to be an IDX file ({len(data)} bytes). {_fix_hint(name)}")
    magic = int.from_bytes(data[:4], "big")
    zero, dtype_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if expected_magic is not None and magic != expected_magic:
        raise DataError(
            f"{name} is not the expected IDX file: magic number 0x{magic:08X}, expected "
            f"0x{expected_magic:08X} ({'images' if expected_magic == MAGIC_IMAGES else 'labels'}). "
            f"{_fix_hint(name)}")
    if zero != 0 or dtype_code not in _TYPES or ndim == 0:
        raise DataError(f"{name} is not an unsigned-byte IDX file (magic number 0x{magic:08X}). "
                        f"{_fix_hint(name)}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name} is truncated: {len(data)} bytes, shorter than its {header}-byte "
                        f"header. {_fix_hint(name)}")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _TYPES[dtype_code]
    n_values = int(np.prod(dims, dtype=np.int64))
    expected_len = header + n_values * dtype.itemsize
    if len(data) != expected_len:
        what = "truncated" if len(data) < expected_len else "too long"
        raise DataError(
            f"{name} is {what}: {len(data)} bytes, but its header (shape {dims}) needs "
            f"{expected_len}. {_fix_hint(name)}")
    return np.frombuffer(data, dtype=dtype, count=n_values, offset=header).reshape(dims)


def read_idx(path: Union[str, os.PathLike], expected_magic: Optional[int] = None) -> np.ndarray:
    """Read an IDX file (raw or .gz)."""
    return parse_idx(read_bytes(path), str(path), expected_magic)


def read_idx_images(path: Union[str, os.PathLike]) -> np.ndarray:
    """[N, rows, cols] uint8 images from an ``idx3-ubyte`` file."""
    return read_idx(path, MAGIC_IMAGES)


def read_idx_labels(path: Union[str, os.PathLike]) -> np.ndarray:
    """[N] uint8 labels from an ``idx1-ubyte`` file."""
    return read_idx(path, MAGIC_LABELS)


def write_idx(path: Union[str, os.PathLike], array: np.ndarray, compress: Optional[bool] = None) -> None:
    """Write a uint8 array as IDX (gzip when ``compress`` or the name ends in .gz). For tests and
    for exporting data in MNIST format."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise DataError(f"write_idx only writes uint8 arrays, got {array.dtype}")
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
