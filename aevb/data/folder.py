"""Your own pictures: ``folder:PATH`` loads every PNG / JPEG under PATH (recursively).

* Size: every image is resized (Pillow, Lanczos) to ``image_size`` = (height, width) when given;
  without it all images must have the size of the first one (sorted by path), read from the
  headers before anything is decoded, or a one-line DataError names a file of each size.
* Colour: ``color="auto"`` (default) gives RGB (3 channels) if any image has colour, else grey
  (1 channel); ``"grey"`` converts everything to grey (ITU-R 601-2 luma), ``"rgb"`` to RGB. An RGB
  file whose three channels are equal counts as grey. Alpha channels are dropped.
* Values: 8-bit levels / 255, KIND_UNIT with 256 levels (KIND_BINARY, 2 levels, when every pixel
  is 0 or 255).
* Labels: when every image sits in a sub-folder, the name of the top-level sub-folder under the
  split's root is the class (sorted names -> 0, 1, ...); otherwise no labels.
* Splits: if PATH has sub-folders ``train`` and ``test`` (and optionally ``valid`` / ``val``),
  they are the splits; otherwise a fixed 10% of the images (seeded with ``TEST_SPLIT_SEED``,
  the same in every run) is held out as test.
* Crop: ``crop`` = (h, w) takes the central h x w of every image before it is resized.
* Storage: the decoded pixels go into the on-disk cache (aevb/data/imageset.py) once, in
  parallel; later runs reuse it, and data larger than the memory budget are streamed from it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from .base import DataError, Dataset
from .imageset import COLOR_CHANNELS, ImagePlan, LoadOptions, check_splits_share_no_file, open_image_dataset

EXTENSIONS = (".png", ".jpg", ".jpeg")
# colour modes a setting may name (imageset.COLOR_CHANNELS), and the spellings read as them
COLOR_MODES = {"auto": "auto", None: "auto", **{c: c for c in COLOR_CHANNELS},
               **{"gray": "grey", "l": "grey", "color": "rgb", "colour": "rgb"}}


def normalise_color(color: Optional[str]) -> str:
    key = color.lower() if isinstance(color, str) else color
    if key not in COLOR_MODES:
        raise DataError(f"unknown color mode {color!r}; expected auto, grey or rgb")
    return COLOR_MODES[key]


def normalise_size(image_size) -> Optional[Tuple[int, int]]:
    """None, an int (square) or (height, width) -> (height, width)."""
    if image_size is None:
        return None
    if isinstance(image_size, str):
        parts = image_size.lower().replace("x", ",").split(",")
        try:
            image_size = tuple(int(p) for p in parts if p.strip())
        except ValueError as e:
            raise DataError(f"image size must be H,W or one number, got {image_size!r}") from e
    if isinstance(image_size, (int, np.integer)):
        image_size = (int(image_size), int(image_size))
    image_size = tuple(int(s) for s in image_size)
    if len(image_size) == 1:
        image_size = (image_size[0], image_size[0])
    if len(image_size) != 2 or min(image_size) < 1:
        raise DataError(f"image size must be (height, width) with positive values, got {image_size}")
    return image_size


def find_images(root: Path) -> List[Path]:
    """All PNG / JPEG files under ``root`` (recursively, hidden files and folders skipped), sorted.

    Symbolic links are followed, but a folder is entered once however many links lead to it (a
    link loop ends there), and a file reached by several paths is listed once (its first path
    in sorted order): no image is loaded twice, nor lands in both train and test."""
    return [p for p, _ in _find_with_identities(root)]


def _find_with_identities(root: Path) -> List[Tuple[Path, Optional[Tuple[int, int]]]]:
    """find_images, each path with its (device, inode) (None for a broken link)."""
    out, seen_dirs, seen_files = [], set(), set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(EXTENSIONS):
                out.append(Path(dirpath) / f)
    unique = []
    for p in sorted(out):
        try:
            st = p.stat()
        except OSError:  # a broken link: reported when it cannot be read
            unique.append((p, None))
            continue
        if (st.st_dev, st.st_ino) not in seen_files:
            seen_files.add((st.st_dev, st.st_ino))
            unique.append((p, (st.st_dev, st.st_ino)))
    return unique




def _split_dirs(root: Path) -> Optional[Dict[str, Path]]:
    subs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    if "train" in subs and "test" in subs:
        dirs = {"train": subs["train"], "test": subs["test"]}
        for v in ("valid", "val", "validation"):
            if v in subs:
                dirs["valid"] = subs[v]
                break
        return dirs
    return None


def _file_lists(files: Dict[str, List[Path]], limit: int = 1000):
    """File lists for ``info`` (omitted for big folders: only the count is kept then)."""
    if sum(len(v) for v in files.values()) > limit:
        return {}
    return {k: [str(f) for f in v] for k, v in files.items()}


def folder_plan(path: Union[str, os.PathLike], image_size=None, color: Optional[str] = None,
                crop=None) -> ImagePlan:
    """Which files form which split, with labels, for ``folder:PATH`` (no pixels read)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"folder:{path}: {root} is not a folder")
    color = normalise_color(color)
    size = normalise_size(image_size)
    crop = normalise_size(crop)

    split_dirs = _split_dirs(root) or {"all": root}
    found = {name: _find_with_identities(d) for name, d in split_dirs.items()}
    files = {name: [p for p, _ in f] for name, f in found.items()}
    for name, fl in files.items():
        if not fl:
            where = split_dirs[name]
            raise DataError(f"folder:{path}: no images ({', '.join(EXTENSIONS)}) found in {where} "
                            f"(searched recursively)")
    check_splits_share_no_file(files, f"folder:{path}", {name: [k for _, k in f] for name, f in found.items()})

    # labels: top-level sub-folder of each split root, when every image is in a sub-folder
    rel = {name: [f.relative_to(split_dirs[name]) for f in fl] for name, fl in files.items()}
    labelled = all(len(r.parts) > 1 for rs in rel.values() for r in rs)
    classes = sorted({r.parts[0] for rs in rel.values() for r in rs}) if labelled else None
    labels = {}
    for name in files:
        if classes is None:
            labels[name] = None
        else:
            index = {c: i for i, c in enumerate(classes)}
            labels[name] = np.array([index[r.parts[0]] for r in rel[name]], dtype=np.int64)
    info = {"source": f"folder:{root}", "folder": str(root),
            "n_files": sum(len(v) for v in files.values()), "classes": classes,
            "files": _file_lists(files)}
    if "all" not in files:
        info["test_split"] = "sub-folders " + ", ".join(str(d) for d in split_dirs.values())
    return ImagePlan(name=f"folder:{path}", kind="folder", root=root, files=files, labels=labels,
                     size=size, color=color, crop=crop, info=info)


def load_folder(path: Union[str, os.PathLike], image_size=None, color: Optional[str] = None,
                crop=None, options: Optional[LoadOptions] = None) -> Dataset:
    """Images under ``path`` as a Dataset (8-bit levels / 255, KIND_UNIT with 256 levels, or
    KIND_BINARY when every pixel is 0 or 255)."""
    ds = open_image_dataset(folder_plan(path, image_size, color, crop), options or LoadOptions())
    ds.info["color"] = "rgb" if ds.image_shape[0] == 3 else "grey"
    ds.info["image_size"] = tuple(ds.image_shape[1:])
    return ds
