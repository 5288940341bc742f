"""Download / checksum machinery against a local HTTP server (no internet needed)."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from aevb.data import DataError, load_dataset
from aevb.data import download as dl
from aevb.data import mnist as mnist_mod
from aevb.data.download import Alternative, RemoteFile, data_root, fetch, file_checksum, verify_file
from aevb.data.idx import write_idx


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path):
    """(served folder, base URL) of an HTTP server on 127.0.0.1 serving tmp_path/'served'."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def dead_url():
    """A URL on a port where nothing listens (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/"


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


PAYLOAD = bytes(range(256)) * 5000  # 1.28 MB: several chunks


def _no_temp_files(folder: Path):
    return [p.name for p in folder.iterdir() if p.name.endswith(".part")] == []


def test_download_and_checksum_ok(server, tmp_path, dead_url):
    served, base = server
    (served / "a.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "dest" / "sub"  # created on demand
    rf = RemoteFile("a.bin", [base + "a.bin"], md5=md5(PAYLOAD),
                    sha256=hashlib.sha256(PAYLOAD).hexdigest())
    paths = fetch([rf], dest, progress=False)
    assert paths["a.bin"] == dest / "a.bin"
    assert (dest / "a.bin").read_bytes() == PAYLOAD
    assert _no_temp_files(dest)
    # a second call uses the present file and needs no server
    paths = fetch([rf.with_urls([dead_url + "a.bin"])], dest, progress=False)
    assert paths["a.bin"].read_bytes() == PAYLOAD


def test_mirror_fallback_after_dead_and_404(server, tmp_path, dead_url):
    served, base = server
    (served / "b.bin").write_bytes(b"hello mirror")
    rf = RemoteFile("b.bin", [dead_url + "b.bin", base + "missing/b.bin", base + "b.bin"],
                    sha1=hashlib.sha1(b"hello mirror").hexdigest())
    paths = fetch([rf], tmp_path / "d", progress=False)
    assert paths["b.bin"].read_bytes() == b"hello mirror"


def test_url_override(server, tmp_path, dead_url):
    served, base = server
    (served / "c.bin").write_bytes(b"xyz")
    rf = RemoteFile("c.bin", [dead_url + "c.bin"], md5=md5(b"xyz"))
    paths = fetch([rf], tmp_path / "d", progress=False, urls={"c.bin": [base + "c.bin"]})
    assert paths["c.bin"].read_bytes() == b"xyz"


def test_wrong_checksum_download_leaves_nothing(server, tmp_path):
    served, base = server
    (served / "a.bin").write_bytes(b"corrupted content")
    dest = tmp_path / "dest"
    rf = RemoteFile("a.bin", [base + "a.bin"], md5=md5(b"the real content"))
    with pytest.raises(DataError) as e:
        fetch([rf], dest, progress=False)
    msg = str(e.value)
    assert "a.bin" in msg and "wrong checksum" in msg
    assert md5(b"the real content") in msg and md5(b"corrupted content") in msg
    assert not (dest / "a.bin").exists()
    assert list(dest.iterdir()) == []  # no temp file either


def test_unreachable_names_files_and_folder(tmp_path, dead_url):
    dest = tmp_path / "where" / "mnist"
    files = [RemoteFile("one.gz", [dead_url + "one.gz"], md5="0" * 32),
             RemoteFile("two.gz", [dead_url + "two.gz", dead_url + "mirror/two.gz"], md5="1" * 32)]
    with pytest.raises(DataError) as e:
        fetch(files, dest, progress=False, timeout=5)
    msg = str(e.value)
    assert "one.gz" in msg and "two.gz" in msg  # every missing file
    assert str(dest.absolute()) in msg or str(dest.resolve()) in msg  # exact folder
    assert dead_url + "one.gz" in msg and dead_url + "mirror/two.gz" in msg
    assert "--data-dir" in msg and "AEVB_DATA" in msg
    assert not (dest / "one.gz").exists()


def test_download_disabled(tmp_path):
    rf = RemoteFile("f.mat", ["https://example.invalid/f.mat"], md5="0" * 32)
    with pytest.raises(DataError, match="downloading is disabled") as e:
        fetch([rf], tmp_path / "nowhere", download=False)
    assert "f.mat" in str(e.value) and str(tmp_path / "nowhere") in str(e.value)
    assert not (tmp_path / "nowhere").exists()  # nothing created when not downloading


def test_present_file_with_wrong_checksum(tmp_path, dead_url):
    (tmp_path / "a.bin").write_bytes(b"bad")
    good = md5(b"good")
    rf = RemoteFile("a.bin", [dead_url + "a.bin"], md5=good)
    with pytest.raises(DataError) as e:
        fetch([rf], tmp_path, progress=False)
    msg = str(e.value)
    assert str(tmp_path / "a.bin") in msg and good in msg and md5(b"bad") in msg
    assert "delete" in msg
    assert (tmp_path / "a.bin").read_bytes() == b"bad"  # never overwritten silently


def test_alternatives(tmp_path, dead_url):
    text = b"0 1 1 0\n1 1 0 0\n"
    sha1 = hashlib.sha1(text).hexdigest()
    gz = gzip.compress(text, compresslevel=1)
    # gz with an unknown md5: accepted through the sha1 of its decompressed bytes
    (tmp_path / "x.amat.gz").write_bytes(gz)
    rf = RemoteFile("x.amat", [dead_url + "x.amat"], sha1=sha1,
                    alternatives=(Alternative("x.amat.gz", md5="f" * 32, gzip_of_primary=True),))
    assert fetch([rf], tmp_path, progress=False)["x.amat"] == tmp_path / "x.amat.gz"
    # gz whose decompressed content is wrong: error naming the gz
    (tmp_path / "x.amat.gz").write_bytes(gzip.compress(b"0 0 0 0\n"))
    with pytest.raises(DataError, match=r"x\.amat\.gz.*wrong checksum"):
        fetch([rf], tmp_path, progress=False)
    # an uncompressed alternative with its own md5
    (tmp_path / "raw").write_bytes(b"raw bytes")
    rf2 = RemoteFile("raw.gz", [dead_url], md5="0" * 32, alternatives=(Alternative("raw", md5=md5(b"raw bytes")),))
    assert fetch([rf2], tmp_path, progress=False)["raw.gz"] == tmp_path / "raw"
    rf3 = RemoteFile("raw.gz", [dead_url], md5="0" * 32, alternatives=(Alternative("raw", md5="2" * 32),))
    with pytest.raises(DataError, match="wrong checksum"):
        fetch([rf3], tmp_path, progress=False)


def test_checksum_helpers(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(PAYLOAD)
    assert file_checksum(p, "md5") == md5(PAYLOAD)
    assert file_checksum(p, "sha256") == hashlib.sha256(PAYLOAD).hexdigest()
    verify_file(p, md5=md5(PAYLOAD).upper())  # case-insensitive
    with pytest.raises(DataError, match="wrong checksum"):
        verify_file(p, sha1="0" * 40)


def test_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("AEVB_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("AEVB_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "aevb"


def test_load_dataset_downloads_mnist_from_server(server, tmp_path, monkeypatch):
    """End to end: the MNIST URL table pointed at the local server, files written in IDX gz."""
    served, base = server
    rng = np.random.RandomState(0)
    tr_x = rng.randint(0, 256, size=(12, 28, 28)).astype(np.uint8)
    tr_y = rng.randint(0, 10, size=12).astype(np.uint8)
    te_x = rng.randint(0, 256, size=(5, 28, 28)).astype(np.uint8)
    te_y = rng.randint(0, 10, size=5).astype(np.uint8)
    for stem, arr in (("train-images-idx3-ubyte", tr_x), ("train-labels-idx1-ubyte", tr_y),
                      ("t10k-images-idx3-ubyte", te_x), ("t10k-labels-idx1-ubyte", te_y)):
        write_idx(served / (stem + ".gz"), arr)
    files = tuple(RemoteFile(rf.name, [base + rf.name], md5=file_checksum(served / rf.name))
                  for rf in mnist_mod.MNIST_FILES)
    monkeypatch.setattr(mnist_mod, "MNIST_FILES", files)
    monkeypatch.setenv("AEVB_DATA", str(tmp_path / "root"))
    ds = load_dataset("mnist")
    assert (tmp_path / "root" / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    assert torch.equal(ds.train.materialize(), torch.from_numpy(tr_x.reshape(12, -1).astype(np.float32) / 255))
    assert torch.equal(ds.test.y, torch.from_numpy(te_y.astype(np.int64)))
    assert ds.kind == "unit" and ds.levels == 256 and ds.image_shape == (1, 28, 28)


def test_real_mnist_table_is_sane():
    names = [rf.name for rf in mnist_mod.MNIST_FILES]
    assert names == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                     "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert mnist_mod.MNIST_FILES[0].urls[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz"
    assert mnist_mod.MNIST_FILES[0].md5 == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert mnist_mod.FASHION_FILES[3].md5 == "bb300cfdad3c16e7a12a480ee83cd310"
    assert dl.TIMEOUT_S <= 60
