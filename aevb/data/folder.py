"""Your own pictures: ``folder:PATH`` loads every PNG / JPEG under PATH (recursively).

* Size: every image is resized (Pillow, Lanczos) to ``image_size`` = (height, width) when given;
  without it all images must have the size of the first one (sorted by path) or a DataError lists
  the others.
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
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .base import KIND_BINARY, KIND_UNIT, DataError, Dataset, Split
from .utils import TEST_SPLIT_SEED, holdout_indices

EXTENSIONS = (".png", ".jpg", ".jpeg")
TEST_FRACTION = 0.1
COLOR_MODES = {"auto": "auto", None: "auto", "grey": "grey", "gray": "grey", "l": "grey",
               "rgb": "rgb", "color": "rgb", "colour": "rgb"}
_GREY_MODES = ("1", "L", "LA", "La")
_MAX_LISTED = 20


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
            unique.append(p)
            continue
        if (st.st_dev, st.st_ino) not in seen_files:
            seen_files.add((st.st_dev, st.st_ino))
            unique.append(p)
    return unique


def _listing(items: Sequence[str]) -> str:
    shown = "\n".join(f"  {s}" for s in items[:_MAX_LISTED])
    more = f"\n  ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return shown + more


def _read(path: Path, color: str, size: Optional[Tuple[int, int]]):
    """(array [H, W, 1 or 3] uint8, original (h, w)). Raises any Pillow / OS error."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        orig = (im.height, im.width)
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            raise ValueError(f"{im.mode} images (16-bit or float) are not supported; save them as 8-bit")
        if color == "grey" or (color == "auto" and im.mode in _GREY_MODES):
            im2 = im.convert("L")
        else:
            im2 = im.convert("RGB")
        if size is not None and (im2.height, im2.width) != size:
            im2 = im2.resize((size[1], size[0]), Image.Resampling.LANCZOS)
        arr = np.asarray(im2, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif color == "auto" and (arr[:, :, 0] == arr[:, :, 1]).all() and (arr[:, :, 0] == arr[:, :, 2]).all():
        arr = arr[:, :, :1]  # an RGB file without colour is grey
    return np.ascontiguousarray(arr), orig


def _file_lists(files: Dict[str, List[Path]], limit: int = 1000):
    """File lists for ``info`` (omitted for big folders: only the count is kept then)."""
    if sum(len(v) for v in files.values()) > limit:
        return {}
    return {k: [str(f) for f in v] for k, v in files.items()}


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


def load_folder(path: Union[str, os.PathLike], image_size=None, color: Optional[str] = None) -> Dataset:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"folder:{path}: {root} is not a folder")
    color = normalise_color(color)
    size = normalise_size(image_size)

    split_dirs = _split_dirs(root) or {"all": root}
    files = {name: find_images(d) for name, d in split_dirs.items()}
    for name, fl in files.items():
        if not fl:
            where = split_dirs[name]
            raise DataError(f"folder:{path}: no images ({', '.join(EXTENSIONS)}) found in {where} "
                            f"(searched recursively)")

    # labels: top-level sub-folder of each split root, when every image is in a sub-folder
    rel = {name: [f.relative_to(split_dirs[name]) for f in fl] for name, fl in files.items()}
    labelled = all(len(r.parts) > 1 for rs in rel.values() for r in rs)
    classes = sorted({r.parts[0] for rs in rel.values() for r in rs}) if labelled else None

    arrays: Dict[str, List[np.ndarray]] = {}
    bad: List[str] = []
    wrong_size: List[str] = []
    target = size
    for name, fl in files.items():
        arrays[name] = []
        for f in fl:
            try:
                arr, orig = _read(f, color, target)
            except Exception as e:  # Pillow raises many types (UnidentifiedImageError, OSError...)
                bad.append(f"{f}: {type(e).__name__}: {e}")
                continue
            if target is None:
                target = orig  # the first readable image sets the size
            elif size is None and orig != target:
                wrong_size.append(f"{f}: {orig[0]}x{orig[1]}")
                continue
            arrays[name].append(arr)
    if bad:
        raise DataError(f"folder:{path}: {len(bad)} image file(s) could not be read; fix or remove them:\n"
                        + _listing(bad))
    if wrong_size:
        raise DataError(
            f"folder:{path}: images have different sizes; the first is {target[0]}x{target[1]} "
            f"(height x width) but these differ:\n{_listing(wrong_size)}\n"
            f"Give an image size (image_size=(H, W), --image-size) to resize them all.")

    any_colour = any(a.shape[2] == 3 for lst in arrays.values() for a in lst)
    channels = 3 if (color == "rgb" or (color == "auto" and any_colour)) else 1

    def stack(lst: List[np.ndarray]) -> np.ndarray:
        out = np.empty((len(lst), channels, target[0], target[1]), dtype=np.uint8)
        for i, a in enumerate(lst):
            out[i] = np.moveaxis(a, 2, 0)  # a grey [H, W, 1] broadcasts to 3 channels
        return out

    def labels_for(name: str) -> Optional[torch.Tensor]:
        if classes is None:
            return None
        index = {c: i for i, c in enumerate(classes)}
        return torch.tensor([index[r.parts[0]] for r in rel[name]], dtype=torch.int64)

    def to_split(x: np.ndarray, y: Optional[torch.Tensor]) -> Split:
        return Split(torch.from_numpy(x.reshape(len(x), -1)).to(torch.float32).div_(255.0), y)

    data = {name: stack(lst) for name, lst in arrays.items()}
    all_x = list(data.values())
    binary = all(bool(np.all((x == 0) | (x == 255))) for x in all_x)
    info = {"source": f"folder:{root}", "folder": str(root),
            "n_files": sum(len(v) for v in files.values()),
            "color": "rgb" if channels == 3 else "grey", "image_size": tuple(target),
            "classes": classes}
    if "all" in data:
        x, y = data["all"], labels_for("all")
        n = len(x)
        if n < 2:
            raise DataError(f"folder:{path}: only {n} image; need at least 2 (train and test)")
        n_test = max(1, int(round(n * TEST_FRACTION)))
        tr, te = holdout_indices(n, n_test, TEST_SPLIT_SEED)
        train = to_split(x[tr], None if y is None else y[torch.from_numpy(tr)])
        test = to_split(x[te], None if y is None else y[torch.from_numpy(te)])
        valid = None
        info["test_split"] = f"fixed seeded hold-out: {n_test} of {n} images (10%, seed {TEST_SPLIT_SEED})"
        info["files"] = _file_lists({"all": files["all"]})
    else:
        train = to_split(data["train"], labels_for("train"))
        test = to_split(data["test"], labels_for("test"))
        valid = to_split(data["valid"], labels_for("valid")) if "valid" in data else None
        info["test_split"] = "sub-folders " + ", ".join(str(d) for d in split_dirs.values())
        info["files"] = _file_lists(files)
    return Dataset(
        name=f"folder:{path}", train=train, valid=valid, test=test,
        image_shape=(channels, target[0], target[1]),
        kind=KIND_BINARY if binary else KIND_UNIT, levels=2 if binary else 256, info=info)
