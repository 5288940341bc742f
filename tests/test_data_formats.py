"""Parsers of every file format, on small files written in the real formats."""
from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from aevb.data import DataError
from aevb.data import binarized_mnist as bm
from aevb.data import frey as frey_mod
from aevb.data import omniglot as omni_mod
from aevb.data.arrays import load_array
from aevb.data.binarized_mnist import parse_amat, read_amat
from aevb.data.download import Alternative, RemoteFile, file_checksum
from aevb.data.folder import load_folder
from aevb.data.idx import read_idx_images, read_idx_labels, write_idx
from aevb.data.mnist import load_mnist

DEAD = "http://127.0.0.1:9/"  # never contacted: files are present


def f32(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32))


# ----------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_idx_roundtrip_known_values(tmp_path, suffix):
    imgs = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5) * 4
    labels = np.array([7, 0, 9], dtype=np.uint8)
    write_idx(tmp_path / ("img" + suffix), imgs)
    write_idx(tmp_path / ("lab" + suffix), labels)
    raw = (tmp_path / ("img" + suffix)).read_bytes()
    assert raw[:2] == (b"\x1f\x8b" if suffix else b"\x00\x00")
    if not suffix:  # the exact IDX layout: magic 0x803, big-endian dims, then the bytes
        assert raw[:16] == bytes([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5])
        assert raw[16:] == imgs.tobytes()
    got = read_idx_images(tmp_path / ("img" + suffix))
    assert got.shape == (3, 4, 5) and np.array_equal(got, imgs)
    assert np.array_equal(read_idx_labels(tmp_path / ("lab" + suffix)), labels)


def test_idx_wrong_magic(tmp_path):
    write_idx(tmp_path / "lab", np.zeros(10, np.uint8))
    with pytest.raises(DataError) as e:
        read_idx_images(tmp_path / "lab")
    msg = str(e.value)
    assert "magic number 0x00000801" in msg and "0x00000803" in msg
    assert str(tmp_path / "lab") in msg and "download it again" in msg


def test_idx_truncated(tmp_path):
    write_idx(tmp_path / "img", np.ones((4, 28, 28), np.uint8))
    data = (tmp_path / "img").read_bytes()
    (tmp_path / "img").write_bytes(data[:-100])
    with pytest.raises(DataError, match=r"truncated.*Delete"):
        read_idx_images(tmp_path / "img")
    (tmp_path / "head").write_bytes(data[:10])  # shorter than the header
    with pytest.raises(DataError, match="truncated"):
        read_idx_images(tmp_path / "head")
    gz = gzip.compress(data)
    (tmp_path / "img.gz").write_bytes(gz[: len(gz) // 2])  # truncated gzip stream
    with pytest.raises(DataError, match=r"img\.gz.*(corrupt or truncated)"):
        read_idx_images(tmp_path / "img.gz")


def _write_mnist(folder, gz: bool, n_train=6, n_test=3, seed=0):
    rng = np.random.RandomState(seed)
    arrs = {
        "train-images-idx3-ubyte": rng.randint(0, 256, size=(n_train, 28, 28)).astype(np.uint8),
        "train-labels-idx1-ubyte": rng.randint(0, 10, size=n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.randint(0, 256, size=(n_test, 28, 28)).astype(np.uint8),
        "t10k-labels-idx1-ubyte": rng.randint(0, 10, size=n_test).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, a in arrs.items():
        write_idx(folder / (stem + (".gz" if gz else "")), a)
    return arrs


def test_fashion_mnist_from_uncompressed_files(tmp_path):
    arrs = _write_mnist(tmp_path, gz=False)
    ds = load_mnist(tmp_path, "fashion-mnist", download=False)
    assert ds.name == "fashion-mnist" and ds.kind == "unit" and ds.levels == 256
    assert torch.equal(ds.train.materialize(), f32(arrs["train-images-idx3-ubyte"].reshape(6, 784)) / 255)
    assert torch.equal(ds.test.materialize() * 255, f32(arrs["t10k-images-idx3-ubyte"].reshape(3, 784)))
    assert ds.train.y.dtype == torch.int64
    assert ds.train.y.tolist() == arrs["train-labels-idx1-ubyte"].tolist()
    assert ds.info["classes"][9] == "Ankle boot"


def test_mnist_checks_uncompressed_md5(tmp_path):
    _write_mnist(tmp_path, gz=False)  # not the real MNIST: its published md5s do not match
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte has the wrong checksum.*6bbc9ace"):
        load_mnist(tmp_path, "mnist", download=False)


def test_mnist_label_image_count_mismatch(tmp_path, monkeypatch):
    arrs = _write_mnist(tmp_path, gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", arrs["train-labels-idx1-ubyte"][:4])
    import aevb.data.mnist as m
    files = tuple(RemoteFile(rf.name, [DEAD], md5=file_checksum(tmp_path / rf.name)) for rf in m.MNIST_FILES)
    monkeypatch.setattr(m, "MNIST_FILES", files)
    with pytest.raises(DataError, match="6 images but 4 labels"):
        load_mnist(tmp_path, "mnist", download=False)


# ----------------------------------------------------------------------------------- .amat


def _amat_text(rows: np.ndarray, newline="\n") -> bytes:
    return newline.join(" ".join(str(v) for v in r) for r in rows).encode() + newline.encode()


def test_parse_amat_exact(tmp_path):
    rng = np.random.RandomState(1)
    rows = (rng.rand(5, 784) < 0.3).astype(np.uint8)
    text = _amat_text(rows)
    assert np.array_equal(parse_amat(text), rows)
    assert np.array_equal(parse_amat(_amat_text(rows, "\r\n")), rows)
    assert np.array_equal(parse_amat(text.replace(b" ", b"  ")), rows)  # odd spacing: slow path
    (tmp_path / "a.amat").write_bytes(text)
    (tmp_path / "a.amat.gz").write_bytes(gzip.compress(text))
    assert np.array_equal(read_amat(tmp_path / "a.amat"), rows)
    assert np.array_equal(read_amat(tmp_path / "a.amat.gz"), rows)


def test_parse_amat_bad_rows():
    rows = np.zeros((3, 784), np.uint8)
    lines = _amat_text(rows).decode().splitlines()
    short = lines.copy()
    short[1] = short[1][:-2]  # 783 values
    with pytest.raises(DataError, match="line 2 has 783 values, expected 784"):
        parse_amat("\n".join(short).encode(), "x.amat")
    two = lines.copy()
    two[0] = "0 0 0 0 2" + two[0][9:]
    with pytest.raises(DataError, match=r"x\.amat: line 1, value 5 is '2'.*0 or 1"):
        parse_amat("\n".join(two).encode(), "x.amat")
    with pytest.raises(DataError, match="empty"):
        parse_amat(b"  \n", "x.amat")


def test_load_binarized_mnist_small(tmp_path, monkeypatch):
    rng = np.random.RandomState(2)
    data = {s: (rng.rand(n, 784) < 0.5).astype(np.uint8) for s, n in (("train", 7), ("valid", 3), ("test", 4))}
    files = {}
    for s, rows in data.items():
        text = _amat_text(rows)
        name = f"binarized_mnist_{s}.amat"
        if s == "valid":  # one split stored as .gz, checked through the sha1 of its content
            (tmp_path / (name + ".gz")).write_bytes(gzip.compress(text))
        else:
            (tmp_path / name).write_bytes(text)
        files[s] = RemoteFile(name, [DEAD + name], sha1=hashlib.sha1(text).hexdigest(),
                              alternatives=(Alternative(name + ".gz", md5="0" * 32, gzip_of_primary=True),))
    monkeypatch.setattr(bm, "FILES", files)
    ds = bm.load_binarized_mnist(tmp_path, download=False, check_sizes=False)
    assert ds.kind == "binary" and ds.levels == 2 and ds.train.y is None
    for s in ("train", "valid", "test"):
        assert torch.equal(getattr(ds, s).materialize(), f32(data[s]))
    with pytest.raises(DataError, match="has 7 images, expected 50000"):
        bm.load_binarized_mnist(tmp_path, download=False)


# ----------------------------------------------------------------------------------- .mat


def test_frey(tmp_path, monkeypatch):
    n = 30
    imgs = (np.arange(n * 28 * 20) % 251).astype(np.uint8).reshape(n, 28, 20)
    imgs[0] = 0
    imgs[0, 0, 19] = 255  # top-right pixel: checks the orientation
    ff = imgs.reshape(n, 560).T  # (560, N): one image per column, row-major 28 x 20
    savemat(tmp_path / "frey_rawface.mat", {"ff": ff})
    got = frey_mod.read_frey(tmp_path / "frey_rawface.mat")
    assert got.shape == (n, 28, 20) and np.array_equal(got, imgs)
    assert got[0, 0, 19] == 255 and got[0, 27, 0] == 0
    rf = RemoteFile("frey_rawface.mat", [DEAD], md5=file_checksum(tmp_path / "frey_rawface.mat"))
    monkeypatch.setattr(frey_mod, "FILE", rf)
    ds = frey_mod.load_frey(tmp_path, download=False)
    assert ds.image_shape == (1, 28, 20) and ds.kind == "unit" and ds.levels == 256
    assert len(ds.train) == 27 and len(ds.test) == 3
    test_idx = ds.info["test_indices"]
    train_idx = sorted(set(range(n)) - set(test_idx))
    assert torch.equal(ds.test.materialize(), f32(imgs[test_idx].reshape(3, -1)) / 255)
    assert torch.equal(ds.train.materialize(), f32(imgs[train_idx].reshape(27, -1)) / 255)
    # fixed split: the same every time
    assert frey_mod.load_frey(tmp_path, download=False).info["test_indices"] == test_idx


def test_frey_bad_variable(tmp_path):
    savemat(tmp_path / "f.mat", {"faces": np.zeros((560, 3), np.uint8)})
    with pytest.raises(DataError, match="no variable 'ff'.*faces"):
        frey_mod.read_frey(tmp_path / "f.mat")


def _omniglot_file(path, n_train=6, n_test=4):
    rng = np.random.RandomState(3)
    tr = (rng.randint(0, 256, size=(n_train, 28, 28)) / 255.0)
    te = (rng.randint(0, 256, size=(n_test, 28, 28)) / 255.0)
    tr[0] = 0
    tr[0, 0, 27] = 1.0  # top-right
    # chardata.mat layout: one image per column, stored column-major (Fortran order)
    def to_cols(a):
        return np.stack([im.reshape(-1, order="F") for im in a], axis=1)

    t_tr = np.zeros((50, n_train))
    t_tr[np.arange(n_train) % 50, np.arange(n_train)] = 1
    t_te = np.zeros((50, n_test))
    t_te[(np.arange(n_test) * 7) % 50, np.arange(n_test)] = 1
    savemat(path, {"data": to_cols(tr), "testdata": to_cols(te), "target": t_tr, "testtarget": t_te})
    return tr, te


def test_omniglot(tmp_path, monkeypatch):
    tr, te = _omniglot_file(tmp_path / "chardata.mat")
    x_tr, x_te, y_tr, y_te = omni_mod.read_omniglot(tmp_path / "chardata.mat")
    assert np.array_equal(x_tr, tr.reshape(6, 784).astype(np.float32))
    assert np.array_equal(x_te, te.reshape(4, 784).astype(np.float32))
    assert x_tr[0].reshape(28, 28)[0, 27] == 1.0 and x_tr[0].reshape(28, 28)[27, 0] == 0.0
    # the IWAE code's own transformation gives the same vectors
    raw = np.stack([im.reshape(-1, order="F") for im in tr], axis=1)
    iwae = raw.T.reshape((-1, 28, 28)).reshape((-1, 784), order="F")
    assert np.array_equal(x_tr, iwae.astype(np.float32))
    assert y_tr.tolist() == list(range(6)) and y_te.tolist() == [0, 7, 14, 21]
    monkeypatch.setattr(omni_mod, "FILE", RemoteFile("chardata.mat", [DEAD], md5=file_checksum(tmp_path / "chardata.mat")))
    ds = omni_mod.load_omniglot(tmp_path, download=False)
    assert ds.image_shape == (1, 28, 28) and ds.kind == "unit" and ds.levels is None
    assert torch.equal(ds.train.materialize(), torch.from_numpy(x_tr)) and ds.test.y.tolist() == [0, 7, 14, 21]


def test_omniglot_bad_values(tmp_path):
    savemat(tmp_path / "c.mat", {"data": np.full((784, 2), 3.0), "testdata": np.zeros((784, 2))})
    with pytest.raises(DataError, match="outside"):
        omni_mod.read_omniglot(tmp_path / "c.mat")
    savemat(tmp_path / "d.mat", {"data": np.zeros((100, 2)), "testdata": np.zeros((784, 2))})
    with pytest.raises(DataError, match=r"shape \(100, 2\), expected \(784, N\)"):
        omni_mod.read_omniglot(tmp_path / "d.mat")


# ----------------------------------------------------------------------------------- folder


def _grey(v, h=4, w=5):
    a = (np.arange(h * w).reshape(h, w) * 7 + v) % 256
    return a.astype(np.uint8)


def test_folder_grey_with_labels(tmp_path):
    for cls, vals in (("cats", (1, 2, 3, 4, 5, 6)), ("dogs", (10, 20, 30, 40))):
        (tmp_path / cls / "deeper").mkdir(parents=True)
        for i, v in enumerate(vals):
            sub = tmp_path / cls / ("deeper" if i == 0 else "")
            Image.fromarray(_grey(v)).save(sub / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    ds = load_folder(tmp_path)
    assert ds.image_shape == (1, 4, 5) and ds.kind == "unit" and ds.levels == 256
    assert ds.info["classes"] == ["cats", "dogs"]
    assert len(ds.train) + len(ds.test) == 10 and len(ds.test) == 1
    # every loaded image is one of ours with the right label
    expected = {tuple(_grey(v).ravel().tolist()): 0 for v in (1, 2, 3, 4, 5, 6)}
    expected.update({tuple(_grey(v).ravel().tolist()): 1 for v in (10, 20, 30, 40)})
    seen = []
    for split in (ds.train, ds.test):
        for x, y in zip(split.materialize(), split.y):
            key = tuple((x * 255).round().to(torch.int64).tolist())
            assert expected[key] == int(y)
            seen.append(key)
    assert sorted(seen) == sorted(expected)


def test_folder_rgb_auto_and_grey(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[1, 2] = (10, 20, 30)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(_grey(3)).save(tmp_path / "b.png")
    Image.fromarray(np.repeat(_grey(9)[..., None], 3, axis=2)).save(tmp_path / "c.png")  # RGB w/o colour
    ds = load_folder(tmp_path)
    assert ds.image_shape == (3, 4, 5) and ds.train.y is None
    allx = torch.cat([ds.train.materialize(), ds.test.materialize()]).view(-1, 3, 4, 5) * 255
    allx = allx.round().to(torch.uint8)
    found_rgb = [x for x in allx if x[0, 0, 0] == 200]
    assert len(found_rgb) == 1
    assert found_rgb[0][:, 1, 2].tolist() == [10, 20, 30]
    found_grey = [x for x in allx if torch.equal(x[0], torch.from_numpy(_grey(3)))]
    assert len(found_grey) == 1 and torch.equal(found_grey[0][1], found_grey[0][2])
    # only greys -> 1 channel (the colourless RGB file counts as grey)
    (tmp_path / "a.png").unlink()
    assert load_folder(tmp_path).image_shape == (1, 4, 5)
    # forced grey on a colour file: Pillow's luma
    Image.fromarray(rgb).save(tmp_path / "a.png")
    ds = load_folder(tmp_path, color="grey")
    assert ds.image_shape == (1, 4, 5)
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    flat = torch.cat([ds.train.materialize(), ds.test.materialize()]) * 255
    assert any(torch.equal(row.round(), f32(luma.ravel())) for row in flat)
    assert load_folder(tmp_path, color="rgb").image_shape == (3, 4, 5)


def test_folder_jpeg_resize_and_sizes(tmp_path):
    rng = np.random.RandomState(4)
    pics = [rng.randint(0, 256, size=(12, 10, 3)).astype(np.uint8) for _ in range(3)]
    for i, p in enumerate(pics):
        Image.fromarray(p).save(tmp_path / f"p{i}.jpg", quality=95)
    Image.fromarray(pics[0][:8, :8]).save(tmp_path / "small.JPEG")
    with pytest.raises(DataError) as e:
        load_folder(tmp_path)
    assert (f"{tmp_path / 'p0.jpg'} is 12x10 but {tmp_path / 'small.JPEG'} is 8x8 (height x width); "
            "give an image size to resize them all to (e.g. --image-size 12 10; image_size=(12, 10) in Python)") in str(e.value)
    ds = load_folder(tmp_path, image_size=(6, 7))
    assert ds.image_shape == (3, 6, 7) and ds.dim == 3 * 6 * 7
    # values are exactly Pillow's decode + Lanczos resize
    with Image.open(tmp_path / "p0.jpg") as im:
        ref = np.asarray(im.convert("RGB").resize((7, 6), Image.Resampling.LANCZOS))
    ref = f32(np.moveaxis(ref, 2, 0).ravel())
    allx = torch.cat([ds.train.materialize(), ds.test.materialize()]) * 255
    assert any(torch.allclose(row, ref, atol=1e-3) for row in allx)
    assert load_folder(tmp_path, image_size=5).image_shape == (3, 5, 5)


def test_folder_train_test_subfolders(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("x", "y"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_grey(i + (50 if cls == "y" else 0))).save(tmp_path / split / cls / f"{i}.png")
    ds = load_folder(tmp_path)
    assert len(ds.train) == 6 and len(ds.test) == 4 and ds.valid is None
    assert ds.train.y.tolist() == [0, 0, 0, 1, 1, 1] and ds.test.y.tolist() == [0, 0, 1, 1]
    assert torch.equal(ds.test.materialize()[2] * 255, f32(_grey(50).ravel()))


def test_folder_errors(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_folder(tmp_path / "empty")
    with pytest.raises(DataError, match="not a folder"):
        load_folder(tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(_grey(1)).save(bad / "good.png")
    Image.fromarray(_grey(2)).save(bad / "good2.png")
    (bad / "broken.png").write_bytes(b"this is not a png")
    data = (bad / "good.png").read_bytes()
    (bad / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        load_folder(bad)
    msg = str(e.value)
    assert "2 image file(s) could not be read" in msg
    assert str(bad / "broken.png") in msg and str(bad / "cut.png") in msg and "good.png" not in msg


# ----------------------------------------------------------------------------------- arrays


def test_array_npz_splits_and_labels(tmp_path):
    rng = np.random.RandomState(5)
    x_tr, x_te, x_va = rng.rand(8, 6).astype(np.float32), rng.rand(3, 6).astype(np.float32), rng.rand(2, 6)
    np.savez(tmp_path / "d.npz", x_train=x_tr, x_test=x_te, X_Valid=x_va,
             y_train=np.arange(8), y_test=np.array([1, 2, 3]), y_valid=np.array([0, 0]))
    ds = load_array(tmp_path / "d.npz")
    assert ds.kind == "unit" and ds.levels is None and ds.image_shape == (1, 1, 6)
    assert torch.equal(ds.train.materialize(), f32(x_tr)) and torch.equal(ds.test.materialize(), f32(x_te))
    assert torch.equal(ds.valid.materialize(), f32(x_va)) and ds.test.y.tolist() == [1, 2, 3]
    assert ds.train.y.dtype == torch.int64


def test_array_single_uint8_images(tmp_path):
    imgs = (np.arange(20 * 3 * 4) % 256).astype(np.uint8).reshape(20, 3, 4)
    np.save(tmp_path / "a.npy", imgs)
    ds = load_array(tmp_path / "a.npy")
    assert ds.image_shape == (1, 3, 4) and ds.kind == "unit" and ds.levels == 256
    assert len(ds.train) == 18 and len(ds.test) == 2
    allx = torch.cat([ds.train.materialize(), ds.test.materialize()])
    assert sorted(map(tuple, (allx * 255).round().tolist())) == sorted(map(tuple, f32(imgs.reshape(20, -1)).tolist()))
    assert torch.equal(load_array(tmp_path / "a.npy").test.materialize(), ds.test.materialize())  # fixed split


def test_array_layouts_and_kinds(tmp_path):
    rng = np.random.RandomState(6)
    nhwc = rng.rand(5, 4, 6, 3).astype(np.float32) * 10 - 5
    np.savez(tmp_path / "h.npz", train=nhwc[:4], test=nhwc[4:])
    ds = load_array(tmp_path / "h.npz")
    assert ds.image_shape == (3, 4, 6) and ds.kind == "real" and ds.levels is None
    assert torch.equal(ds.train.materialize(), f32(np.moveaxis(nhwc[:4], 3, 1).reshape(4, -1)))
    nchw = (rng.rand(5, 1, 4, 4) < 0.5).astype(np.float64)
    np.savez(tmp_path / "c.npz", x_train=nchw[:3], x_test=nchw[3:])
    ds = load_array(tmp_path / "c.npz")
    assert ds.image_shape == (1, 4, 4) and ds.kind == "binary" and ds.levels == 2
    assert torch.equal(ds.test.materialize(), f32(nchw[3:].reshape(2, -1)))
    flat = rng.rand(10, 16)
    np.save(tmp_path / "f.npy", flat)
    assert load_array(tmp_path / "f.npy").image_shape == (1, 4, 4)
    bits = (rng.rand(10, 9) < 0.5).astype(np.uint8)  # uint8 0/1: binary as is, not / 255
    np.save(tmp_path / "b.npy", bits)
    ds = load_array(tmp_path / "b.npy")
    assert ds.kind == "binary" and ds.levels == 2 and float(torch.cat([ds.train.materialize(), ds.test.materialize()]).sum()) == bits.sum()


def test_array_errors(tmp_path):
    x = np.random.RandomState(7).rand(6, 4)
    x[2, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x_train=x, x_test=x)
    with pytest.raises(DataError, match=r"'x_train' has 1 NaN or infinite"):
        load_array(tmp_path / "nan.npz")
    np.savez(tmp_path / "keys.npz", foo=np.zeros((3, 4)), bar=np.zeros((3, 4)))
    with pytest.raises(DataError, match="keys found: foo, bar"):
        load_array(tmp_path / "keys.npz")
    np.savez(tmp_path / "lab.npz", x_train=np.zeros((3, 4)), y_train=np.arange(2))
    with pytest.raises(DataError, match="2 labels for 3 datapoints"):
        load_array(tmp_path / "lab.npz")
    np.save(tmp_path / "5d.npy", np.zeros((2, 2, 2, 2, 2)))
    with pytest.raises(DataError, match="expected"):
        load_array(tmp_path / "5d.npy")
    with pytest.raises(DataError, match="not found"):
        load_array(tmp_path / "missing.npy")
