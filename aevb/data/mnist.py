"""MNIST and Fashion-MNIST from their original IDX files.

Values are the 8-bit grey levels divided by 255 (KIND_UNIT, 256 levels), image shape (1, 28, 28),
labels 0..9; the official 60000 / 10000 train / test split.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Sequence, Tuple, Union

from .base import KIND_UNIT, DataError, Dataset, Split
from .download import Alternative, RemoteFile, fetch, url_join
from .idx import read_idx_images, read_idx_labels
from .spec import NAMED_SHAPES
from .utils import labels_tensor, rows_uint8

MNIST_URLS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)

# (file, md5 of the .gz, md5 of the uncompressed file or None)
_MNIST_SUMS = {
    "train-images-idx3-ubyte": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
}
# torchvision's values; the uncompressed md5s are not published, so an uncompressed copy is
# accepted unverified (its IDX structure is still checked).
_FASHION_SUMS = {
    "train-images-idx3-ubyte": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", None),
    "train-labels-idx1-ubyte": ("25c81989df183df01b3e8a0aad5dffbe", None),
    "t10k-images-idx3-ubyte": ("bef4ecab320f06d8554ea6380940ec79", None),
    "t10k-labels-idx1-ubyte": ("bb300cfdad3c16e7a12a480ee83cd310", None),
}

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")


def _files(sums: Dict[str, Tuple[str, str]], bases: Sequence[str]) -> Tuple[RemoteFile, ...]:
    out = []
    for stem, (gz_md5, raw_md5) in sums.items():
        name = stem + ".gz"
        out.append(RemoteFile(
            name, tuple(url_join(b, name) for b in bases), md5=gz_md5,
            alternatives=(Alternative(stem, md5=raw_md5),
                          # the LeCun page's files were sometimes saved with a dot instead of '-'
                          Alternative(stem.replace("-idx", ".idx"), md5=raw_md5))))
    return tuple(out)


MNIST_FILES = _files(_MNIST_SUMS, MNIST_URLS)
FASHION_FILES = _files(_FASHION_SUMS, FASHION_URLS)


def load_mnist(folder: Union[str, os.PathLike], variant: str = "mnist", download: bool = True) -> Dataset:
    """MNIST (``variant="mnist"``) or Fashion-MNIST (``"fashion-mnist"``) from ``folder``
    (downloading the four files there if missing)."""
    if variant == "mnist":
        files = MNIST_FILES
    elif variant == "fashion-mnist":
        files = FASHION_FILES
    else:
        raise DataError(f"unknown MNIST variant {variant!r}; expected 'mnist' or 'fashion-mnist'")
    folder = Path(folder)
    paths = fetch(files, folder, download=download)
    tr_x = read_idx_images(paths["train-images-idx3-ubyte.gz"])
    tr_y = read_idx_labels(paths["train-labels-idx1-ubyte.gz"])
    te_x = read_idx_images(paths["t10k-images-idx3-ubyte.gz"])
    te_y = read_idx_labels(paths["t10k-labels-idx1-ubyte.gz"])
    for x, y, what in ((tr_x, tr_y, "train"), (te_x, te_y, "t10k")):
        if x.shape[0] != y.shape[0]:
            raise DataError(f"{variant} {what}: {x.shape[0]} images but {y.shape[0]} labels in {folder}; "
                            f"the files do not belong together, delete them and download again")
        if tuple(x.shape[1:]) != NAMED_SHAPES[variant][1:]:
            raise DataError(f"{variant} {what} images are {x.shape[1:]}, expected "
                            f"{'x'.join(map(str, NAMED_SHAPES[variant][1:]))}")
        if y.size and int(y.max()) > 9:
            raise DataError(f"{variant} {what} labels go up to {int(y.max())}, expected 0..9")
    info = {
        "source": "http://yann.lecun.com/exdb/mnist/" if variant == "mnist"
        else "https://github.com/zalandoresearch/fashion-mnist",
        "folder": str(folder),
        "files": {k: str(v) for k, v in paths.items()},
        "test_split": "official",
    }
    if variant == "fashion-mnist":
        info["classes"] = list(FASHION_CLASSES)
    else:
        info["classes"] = [str(i) for i in range(10)]
    return Dataset(
        name=variant,
        train=Split(rows_uint8(tr_x), labels_tensor(tr_y), scale=255.0),
        test=Split(rows_uint8(te_x), labels_tensor(te_y), scale=255.0),
        image_shape=NAMED_SHAPES[variant], kind=KIND_UNIT, levels=256, info=info)
