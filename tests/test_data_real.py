"""The real data files, when a copy sits in shared/datasets beside the repository (skipped
otherwise)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aevb.data import load_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _folder(name: str, *files: str) -> Path:
    folder = SHARED / name
    if not all((folder / f).is_file() for f in files):
        pytest.skip(f"no real {name} files in {folder}")
    return folder


def test_real_mnist():
    folder = _folder("mnist", "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    ds = load_dataset("mnist", folder, download=False)  # how fast: benchmarks/bench_data.py
    assert ds.train.materialize().shape == (60000, 784) and ds.test.materialize().shape == (10000, 784)
    assert ds.train.materialize().dtype == torch.float32 and ds.kind == "unit" and ds.levels == 256
    assert float(ds.train.materialize().min()) == 0.0 and float(ds.train.materialize().max()) == 1.0
    assert ds.train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the well-known first labels
    assert ds.test.y[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(ds.train.y).tolist()[:2] == [5923, 6742]  # published class counts
    assert abs(float(ds.train.materialize().mean()) - 0.1307) < 1e-3  # the usual normalisation constant
    x = ds.train.materialize()[:100] * 255
    assert torch.equal(x, x.round())  # 8-bit levels


def test_real_binarized_mnist():
    folder = _folder("binarized_mnist", "binarized_mnist_train.amat.gz")
    ds = load_dataset("binarized-mnist", folder, download=False, validation=5000)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (50000, 10000, 10000)  # their valid kept
    assert ds.kind == "binary" and ds.levels == 2 and ds.dim == 784 and ds.train.y is None
    for s in (ds.train, ds.valid, ds.test):
        assert bool(((s.materialize() == 0) | (s.materialize() == 1)).all())
    assert 0.1 < float(ds.train.materialize().mean()) < 0.16


def test_real_frey_face():
    folder = _folder("frey_face", "frey_rawface.mat")
    ds = load_dataset("frey-face", folder, download=False)
    assert len(ds.train) + len(ds.test) == 1965 and len(ds.test) == 196
    assert ds.image_shape == (1, 28, 20) and ds.dim == 560 and ds.kind == "unit"
    lo = float(torch.cat([ds.train.materialize(), ds.test.materialize()]).min() * 255)
    hi = float(torch.cat([ds.train.materialize(), ds.test.materialize()]).max() * 255)
    assert round(lo) == 8 and round(hi) == 238  # pixel range stated in SOURCES.md


def test_real_via_root(monkeypatch):
    _folder("frey_face", "frey_rawface.mat")
    monkeypatch.setenv("AEVB_DATA", str(SHARED))
    ds = load_dataset("frey-face", download=False)
    assert len(ds.train) == 1769
