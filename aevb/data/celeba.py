"""CelebA (Liu et al., ICCV 2015): aligned and cropped faces, 178 x 218 RGB JPEGs.

Expects, in the data folder, ``img_align_celeba/*.jpg`` and the official partition file
``list_eval_partition.txt`` (lines ``000001.jpg 0``; 0 = train 162,770, 1 = valid 19,867,
2 = test 19,962). Rows whose image files are absent are left out, with one line saying how many.
The images are full 218 x 178 by default; ``image_size`` resizes and ``crop`` takes the central
region first (the common 64 x 64 convention: ``crop=(148, 148), image_size=(64, 64)``).

CelebA is distributed through the authors' page (Google Drive) under a research-only agreement,
so aevb does not download it: the message names the files and the page.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Union

from .base import DataError, Dataset
from .cache import say
from .folder import normalise_size
from .imageset import ImagePlan, LoadOptions, check_splits_share_no_file, open_image_dataset
from .spec import CELEBA_SIZE

PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
IMAGES = "img_align_celeba"
PARTITION = "list_eval_partition.txt"
SPLITS = {0: "train", 1: "valid", 2: "test"}
OFFICIAL_SIZES = {"train": 162770, "valid": 19867, "test": 19962}
FULL_SIZE = CELEBA_SIZE  # (height, width) of the aligned files


def read_partition(path: Path) -> Dict[str, List[str]]:
    """{split: [file names]} from ``list_eval_partition.txt``."""
    out: Dict[str, List[str]] = {s: [] for s in SPLITS.values()}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise DataError(f"cannot read the CelebA partition file {path} ({e.strerror})") from None
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataError(f"{path}, line {n}: expected 'FILE.jpg 0|1|2', got {line.strip()[:80]!r}; "
                            f"it is not CelebA's {PARTITION}")
        out[SPLITS[int(parts[1])]].append(parts[0])
    if not any(out.values()):
        raise DataError(f"{path} names no images; it is not CelebA's {PARTITION}")
    check_disjoint(out, str(path))
    return out


def check_disjoint(splits: Dict[str, List[str]], source: str) -> None:
    """Refuse a partition that lists one file in two splits (or twice in one): a test bound would
    then measure training data."""
    where: Dict[str, str] = {}
    repeated: List[str] = []
    for split, names in splits.items():
        for name in names:
            if name in where:
                repeated.append(f"{name} ({where[name]} and {split})")
            else:
                where[name] = split
    if repeated:
        shown = ", ".join(repeated[:5]) + (f" and {len(repeated) - 5} more" if len(repeated) > 5 else "")
        raise DataError(f"{source} lists {len(repeated)} image(s) more than once: {shown}; every image must be in "
                        f"one split only (otherwise the test bound measures training data). Use CelebA's "
                        f"official {PARTITION}, or remove the repeated lines")


def _missing_message(folder: Path, what: str) -> str:
    return (f"CelebA: {what}. Put the aligned and cropped CelebA images in {folder / IMAGES}/ "
            f"(000001.jpg ... 202599.jpg, from img_align_celeba.zip) and the official partition file "
            f"{folder / PARTITION} there, from {PAGE} (the data set cannot be downloaded automatically: "
            f"its agreement must be accepted on that page); or pass --data-dir with the folder that holds them")


def celeba_plan(folder: Union[str, os.PathLike], image_size=None, crop=None) -> ImagePlan:
    folder = Path(folder).expanduser()
    images = folder / IMAGES
    partition = folder / PARTITION
    if not partition.is_file():
        what = "is a folder, not a file" if partition.is_dir() else "is missing"
        raise DataError(_missing_message(folder, f"the partition file {partition} {what}"))
    if not images.is_dir():
        what = "is a file, not a folder" if images.exists() else "is missing"
        raise DataError(_missing_message(folder, f"the image folder {images} {what}"))
    names = read_partition(partition)
    present = set(os.listdir(images))
    files, absent = {}, 0
    for split, fl in names.items():
        have = [images / f for f in fl if f in present]
        absent += len(fl) - len(have)
        files[split] = have
    check_splits_share_no_file(files, f"CelebA's {partition}")
    if not any(files.values()):
        raise DataError(_missing_message(folder, f"none of the {sum(map(len, names.values()))} images that "
                                                 f"{PARTITION} names is in {images}"))
    for split in ("train", "test"):
        if not files[split]:
            raise DataError(f"CelebA: no image of the {split} split is in {images}; "
                            f"at least one train and one test image are needed")
    if not files["valid"]:
        del files["valid"]
    if absent:
        counts = ", ".join(f"{len(v)} {k}" for k, v in files.items())
        say(f"celeba: {absent} of the {sum(map(len, names.values()))} images in {PARTITION} are not in "
            f"{images} and are left out; using {counts}")
    size = normalise_size(image_size)
    crop = normalise_size(crop)
    if size is None:
        size = crop or FULL_SIZE
    info = {"source": PAGE, "folder": str(folder),
            "test_split": f"official partition ({PARTITION})",
            "absent_rows": absent, "counts": {k: len(v) for k, v in files.items()},
            "crop": list(crop) if crop else None}
    return ImagePlan(name="celeba", kind="celeba", root=folder, files=files, labels={},
                     size=size, color="rgb", crop=crop, extra_sources=[partition], info=info)


def load_celeba(folder: Union[str, os.PathLike], image_size=None, crop=None,
                options: Optional[LoadOptions] = None) -> Dataset:
    """CelebA as a Dataset of 8-bit RGB rows (values / 255), through the data cache."""
    return open_image_dataset(celeba_plan(folder, image_size, crop), options or LoadOptions())
