"""load_dataset: names, data folders, validation splits, binarization."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from aevb.data import DATASETS, DataError, Dataset, Split, data_root, dataset_folder, load_dataset
from aevb.data import frey as frey_mod
from aevb.data.download import RemoteFile, file_checksum
from scipy.io import savemat


def test_public_names():
    assert DATASETS == ("digits", "mnist", "fashion-mnist", "binarized-mnist", "frey-face", "omniglot", "celeba")
    assert callable(data_root) and Dataset and Split


def test_unknown_name_lists_choices():
    with pytest.raises(DataError) as e:
        load_dataset("cifar-100")
    msg = str(e.value)
    assert "'cifar-100'" in msg
    for name in DATASETS + ("folder:PATH", "array:PATH"):
        assert name in msg
    with pytest.raises(DataError, match="give a path"):
        load_dataset("folder:")


def test_digits():
    ds = load_dataset("digits")
    assert ds.name == "digits" and ds.image_shape == (1, 8, 8) and ds.dim == 64
    assert ds.kind == "unit" and ds.levels == 17 and ds.valid is None
    assert len(ds.train) == 1438 and len(ds.test) == 359
    assert ds.train.materialize().dtype == torch.float32 and ds.train.y.dtype == torch.int64
    assert torch.equal(ds.train.materialize() * 16, (ds.train.materialize() * 16).round())  # levels k / 16
    assert float(ds.train.materialize().max()) == 1.0 and float(ds.train.materialize().min()) == 0.0
    assert sorted(ds.train.y.unique().tolist()) == list(range(10)) and ds.n_classes == 10
    # matches scikit-learn's data
    from sklearn.datasets import load_digits
    raw = load_digits()
    all_x = torch.cat([ds.train.materialize(), ds.test.materialize()]) * 16
    assert float(all_x.sum()) == float(raw.images.sum())
    # the test split is fixed whatever the seed
    assert torch.equal(load_dataset("digits", seed=5).test.materialize(), ds.test.materialize())


def test_validation_split():
    base = load_dataset("digits")
    ds = load_dataset("digits", validation=100, seed=3)
    assert len(ds.valid) == 100 and len(ds.train) == 1338 and torch.equal(ds.test.materialize(), base.test.materialize())
    # the parts are a partition of the original training set (labels travel with images)
    merged = torch.cat([ds.train.materialize(), ds.valid.materialize()])
    merged_y = torch.cat([ds.train.y, ds.valid.y])
    order_a = sorted(zip(map(tuple, merged.tolist()), merged_y.tolist()))
    order_b = sorted(zip(map(tuple, base.train.materialize().tolist()), base.train.y.tolist()))
    assert order_a == order_b
    again = load_dataset("digits", validation=100, seed=3)
    other = load_dataset("digits", validation=100, seed=4)
    assert torch.equal(again.valid.materialize(), ds.valid.materialize()) and not torch.equal(other.valid.materialize(), ds.valid.materialize())
    frac = load_dataset("digits", validation=0.25)
    assert len(frac.valid) == round(0.25 * 1438)
    with pytest.raises(DataError, match="nothing to train"):
        load_dataset("digits", validation=1438)
    with pytest.raises(DataError, match="fraction"):
        load_dataset("digits", validation=1.5)


def test_binarize_static_and_dynamic():
    unit = load_dataset("digits")
    st = load_dataset("digits", binarize="static", seed=1)
    assert st.kind == "binary" and st.levels == 2 and not st.dynamic_binarization
    assert set(st.train.materialize().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(st.train.y, unit.train.y)
    # pixels that are 0 stay 0, pixels that are 1 stay 1; the mean is about preserved
    assert float(st.train.materialize()[unit.train.materialize() == 0].sum()) == 0
    assert float(st.train.materialize()[unit.train.materialize() == 1].min()) == 1
    assert abs(float(st.train.materialize().mean()) - float(unit.train.materialize().mean())) < 0.01
    assert torch.equal(load_dataset("digits", binarize="static", seed=1).train.materialize(), st.train.materialize())
    assert not torch.equal(load_dataset("digits", binarize="static", seed=2).train.materialize(), st.train.materialize())
    # the train draw does not depend on the validation split
    stv = load_dataset("digits", binarize="static", seed=1, validation=50)
    assert torch.equal(torch.cat([stv.train.materialize(), stv.valid.materialize()]).sum(0), st.train.materialize().sum(0))
    dyn = load_dataset("digits", binarize="dynamic")
    assert dyn.dynamic_binarization and dyn.kind == "unit" and dyn.levels == 17
    assert torch.equal(dyn.train.materialize(), unit.train.materialize())
    with pytest.raises(DataError, match="static"):
        load_dataset("digits", binarize="sometimes")


def test_binarize_real_data_refused(tmp_path):
    np.savez(tmp_path / "r.npz", x_train=np.linspace(-3, 3, 40).reshape(10, 4), x_test=np.ones((2, 4)))
    ds = load_dataset(f"array:{tmp_path / 'r.npz'}")
    assert ds.kind == "real"
    with pytest.raises(DataError, match="cannot be binarized"):
        load_dataset(f"array:{tmp_path / 'r.npz'}", binarize="dynamic")


def test_folder_and_array_specs(tmp_path):
    for i in range(5):
        Image.fromarray(np.full((6, 6), i * 40, np.uint8)).save(tmp_path / f"{i}.png")
    ds = load_dataset(f"folder:{tmp_path}", image_size=(3, 3), validation=1)
    assert ds.image_shape == (1, 3, 3) and len(ds.train) == 3 and len(ds.valid) == 1 and len(ds.test) == 1
    vals = sorted(round(float(x[0]) * 255) for x in torch.cat([ds.train.materialize(), ds.valid.materialize(), ds.test.materialize()]))
    assert vals == [0, 40, 80, 120, 160]
    with pytest.raises(DataError, match="only applies to folder"):
        load_dataset("digits", image_size=(4, 4))
    with pytest.raises(DataError, match="only applies to folder"):
        load_dataset("digits", color="rgb")


def test_data_dir_and_root_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("AEVB_DATA", str(tmp_path))
    assert dataset_folder("mnist") == tmp_path / "mnist"
    (tmp_path / "frey_face").mkdir()
    assert dataset_folder("frey-face") == tmp_path / "frey_face"  # underscore spelling accepted
    assert dataset_folder("frey-face", tmp_path / "x") == tmp_path / "x"
    # a small frey file in the underscore folder, found through AEVB_DATA and an alias
    ff = (np.arange(560 * 20) % 256).astype(np.uint8).reshape(560, 20)
    savemat(tmp_path / "frey_face" / "frey_rawface.mat", {"ff": ff})
    monkeypatch.setattr(frey_mod, "FILE", RemoteFile(
        "frey_rawface.mat", ["http://127.0.0.1:9/"], md5=file_checksum(tmp_path / "frey_face" / "frey_rawface.mat")))
    ds = load_dataset("Frey_Face", download=False)
    assert len(ds.train) == 18 and len(ds.test) == 2 and ds.info["spec"] == "Frey_Face"
    ds2 = load_dataset("frey", data_dir=tmp_path / "frey_face", download=False)
    assert torch.equal(ds.train.materialize(), ds2.train.materialize())
    with pytest.raises(DataError) as e:
        load_dataset("frey-face", data_dir=tmp_path / "empty", download=False)
    assert "frey_rawface.mat" in str(e.value) and str(tmp_path / "empty") in str(e.value)


def test_classes_keep_only_those_labels_in_every_split(tmp_path):
    from aevb.data import load_dataset
    from aevb.data.base import DataError

    full = load_dataset("digits")
    ds = load_dataset("digits", classes=[3, 1], validation=50)
    for name, s in ds.splits().items():
        assert set(s.y.tolist()) == {1, 3}, name
    n_full = sum(int(((s.y == 1) | (s.y == 3)).sum()) for s in (full.train, full.test))
    assert len(ds.train) + len(ds.valid) + len(ds.test) == n_full
    kept = full.test.y.numpy()
    keep_rows = [i for i, v in enumerate(kept) if v in (1, 3)]
    assert torch.equal(ds.test.materialize(), full.test.materialize()[keep_rows])  # the same rows, in order
    with pytest.raises(DataError, match=r"labels are \[0, 1, 2"):
        load_dataset("digits", classes=[42])
    import numpy as np

    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((40, 3)).astype(np.float32))
    with pytest.raises(DataError, match="no labels"):
        load_dataset(f"array:{tmp_path / 'x.npy'}", classes=[0])
