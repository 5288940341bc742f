"""The one parser of data-set specs, and what aevb knows of each named data set.

A spec names data: a built-in data set (``mnist``, with aliases such as ``fmnist`` or
``celeb-a``), ``folder:PATH`` (pictures), ``array:PATH`` (a .npy or .npz file; ``npy:`` and
``npz:`` are read the same), ``memory:...`` (the record of data a run was given in memory:
shape, dtype, counts and sha256, see :class:`MemoryRecord`), and where a split is asked for
(new data), ``NAME:SPLIT`` (``mnist:test``) or a plain path to a folder, an array file or an
image file. Every caller (the loaders, fingerprints, config validation, the memory estimate,
new-data sources) parses through :func:`parse_spec`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

from .base import SPLITS, DataError

# Built-in data sets, in the order shown to users, with the image shape (C, H, W) of each
# (celeba's depends on --crop and --image-size: CELEBA_SIZE is its files' own size).
DATASETS = ("digits", "mnist", "fashion-mnist", "binarized-mnist", "frey-face", "omniglot", "celeba")
NAMED_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28),
                "binarized-mnist": (1, 28, 28), "frey-face": (1, 28, 20), "omniglot": (1, 28, 28)}
CELEBA_SIZE = (218, 178)
# named data sets of pictures, to which --image-size, --crop (and --color rgb) apply
PICTURE_SETS = ("celeba",)
SPEC_FORMS = ("folder:PATH", "array:PATH")
ALIASES = {
    "sklearn-digits": "digits",
    "fashion": "fashion-mnist", "fmnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
    "binary-mnist": "binarized-mnist", "bmnist": "binarized-mnist", "binarizedmnist": "binarized-mnist",
    "frey": "frey-face", "freyface": "frey-face", "frey-faces": "frey-face",
    "omni": "omniglot",
    "celeb-a": "celeba", "celebfaces": "celeba",
}
ARRAY_PREFIXES = ("array", "npy", "npz")
ARRAY_SUFFIXES = (".npy", ".npz")
MEMORY_PREFIX = "memory"

# the forms a parsed spec takes
NAMED, FOLDER, ARRAY, MEMORY, FILE = "named", "folder", "array", "memory", "file"


def canonical_name(name: str) -> str:
    """The built-in data set a user-typed name refers to (case, '_' and aliases tolerated)."""
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS + SPEC_FORMS)}")
    return key


def named_shape(name: str, image_size=None, crop=None) -> Tuple[int, int, int]:
    """The image shape (C, H, W) of the built-in data set ``name`` (canonical), for celeba after
    the ``crop`` and ``image_size`` (H, W) given."""
    if name == "celeba":
        size = image_size or crop or CELEBA_SIZE
        return (3, int(size[0]), int(size[1]))
    return NAMED_SHAPES[name]


# ------------------------------------------------------------------ data given in memory
@dataclass(frozen=True)
class MemoryRecord:
    """What a run keeps of data it was given in memory: the ``shape`` and ``dtype`` of the data
    as given, the datapoints of each part given (``counts``: train, and valid / test when they
    were given apart) and the sha256 of the bytes of the rows (train, valid, test in order)."""

    shape: Tuple[int, ...]
    dtype: str
    counts: Dict[str, int] = field(default_factory=dict)
    sha256: str = ""

    def spec(self) -> str:
        """The spec of these data, e.g. ``memory:1000x28x28:uint8:<sha256>``; parts given apart
        follow the shape: ``memory:900x784+valid50+test50:float32:<sha256>``."""
        extra = "".join(f"+{n}{c}" for n, c in self.counts.items() if n != "train")
        return f"{MEMORY_PREFIX}:{'x'.join(map(str, self.shape))}{extra}:{self.dtype}:{self.sha256}"

    def describe(self) -> str:
        """'1000 x 28 x 28 uint8' (with the parts given apart, if any)."""
        extra = [f"{c} {n}" for n, c in self.counts.items() if n != "train"]
        return " x ".join(map(str, self.shape)) + f" {self.dtype}" + (
            f", with {' and '.join(extra)} datapoints given apart" if extra else "")

    def image_shape(self) -> Tuple[int, int, int]:
        """(C, H, W) of a datapoint, by the rule of ``array:`` data."""
        from .arrays import Shaped, image_shape_of

        return tuple(int(s) for s in image_shape_of(Shaped(self.shape), self.spec())[0])

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.dtype, "counts": dict(self.counts), "sha256": self.sha256}

    @classmethod
    def from_dict(cls, d: dict) -> "MemoryRecord":
        return cls(shape=tuple(int(s) for s in d["shape"]), dtype=str(d["dtype"]),
                   counts={str(k): int(v) for k, v in d.get("counts", {}).items()}, sha256=str(d["sha256"]))


class MemorySpecError(DataError):
    """A ``memory:`` spec that is not a record aevb wrote (config validation names the setting)."""


_MEMORY = re.compile(r"^(?P<shape>\d+(?:x\d+)+)(?P<parts>(?:\+(?:valid|test)\d+)*):(?P<dtype>[a-z]+\d*)"
                     r":(?P<sha>[0-9a-f]{64})$")


def parse_memory(text: str) -> MemoryRecord:
    """The record in a ``memory:`` spec (see :meth:`MemoryRecord.spec`); DataError if malformed."""
    m = _MEMORY.match(text.strip()[len(MEMORY_PREFIX) + 1:])
    if not text.strip().lower().startswith(MEMORY_PREFIX + ":") or m is None:
        raise MemorySpecError(f"{text.strip()!r} is not the record of data given in memory (memory:SHAPE:DTYPE:SHA256, "
                        "e.g. memory:1000x28x28:uint8:<64 hex digits>); aevb writes it itself when a run is "
                        "trained on a tensor or array")
    shape = tuple(int(s) for s in m["shape"].split("x"))
    counts = {"train": shape[0]}
    for name, count in re.findall(r"\+(valid|test)(\d+)", m["parts"]):
        counts[name] = int(count)
    return MemoryRecord(shape=shape, dtype=m["dtype"], counts=counts, sha256=m["sha"])


# ------------------------------------------------------------------ the parser
@dataclass(frozen=True)
class Spec:
    """A parsed spec: ``form`` (named, folder, array, memory, or file: one image file),
    ``text`` (as given, stripped), ``name`` (the canonical built-in name), ``path``, ``split``
    (NAME:SPLIT), ``record`` (memory) and ``bare`` (a plain path, without ``folder:`` or
    ``array:``)."""

    text: str
    form: str
    name: Optional[str] = None
    path: Optional[Path] = None
    split: Optional[str] = None
    record: Optional[MemoryRecord] = None
    bare: bool = False

    @property
    def pictures(self) -> bool:
        """Pictures whose size and crop a run sets (folder: and celeba)."""
        return self.form == FOLDER or self.name in PICTURE_SETS

    def shape(self, image_size=None, crop=None, color=None) -> Optional[Tuple[int, int, int]]:
        """The image shape (C, H, W) as far as the spec and the settings say it without reading
        data: the fixed shape of a named data set, the header of an array file, the configured
        size of pictures (grey unless rgb is asked); None when only the data can say."""
        if self.form == ARRAY:
            from .arrays import header_image_shape

            return header_image_shape(self.path)
        if self.form == NAMED:
            return named_shape(self.name, image_size, crop)
        if self.form == MEMORY:
            return self.record.image_shape()
        if self.form == FOLDER and image_size is not None:
            return (3 if color == "rgb" else 1, int(image_size[0]), int(image_size[1]))
        return None


def parse_spec(text, *, splits: bool = False) -> Spec:
    """``text`` parsed (see the module docs). ``splits``: the new-data forms are allowed too,
    ``NAME:SPLIT`` and plain paths (an existing folder, an array file, an image file: a path
    that exists wins over NAME:SPLIT). Unknown names, empty paths, malformed memory records and
    unknown splits raise one DataError line."""
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"no data set given; choose one of: {', '.join(DATASETS + SPEC_FORMS)}")
    text = text.strip()
    prefix, sep, rest = text.partition(":")
    key = prefix.lower()
    if sep and key in ("folder",) + ARRAY_PREFIXES:
        if not rest.strip():
            raise DataError(f"{text!r}: give a path after '{prefix}:'")
        return Spec(text, FOLDER if key == "folder" else ARRAY, path=Path(rest.strip()).expanduser())
    if key == MEMORY_PREFIX and (sep or not splits):
        if not sep:
            raise DataError("'memory' names data given in memory; pass the data itself (Python: data=...)")
        return Spec(text, MEMORY, record=parse_memory(text))
    if splits:
        path = Path(text).expanduser()
        if sep and not path.exists():  # NAME:SPLIT
            if rest.strip().lower() not in SPLITS:
                raise DataError(f"{text!r}: give a split after the data set's name ({', '.join(SPLITS)}), "
                                f"e.g. {prefix}:test")
            return Spec(text, NAMED, name=canonical_name(prefix), split=rest.strip().lower())
        if path.is_dir():
            return Spec(text, FOLDER, path=path, bare=True)
        if path.is_file():
            return Spec(text, ARRAY if path.suffix.lower() in ARRAY_SUFFIXES else FILE, path=path, bare=True)
        if not sep and path.suffix:
            raise DataError(f"{text}: file not found")
        try:  # a bare name: the caller says that a split is needed
            return Spec(text, NAMED, name=canonical_name(text))
        except DataError:
            return Spec(text, NAMED)
    return Spec(text, NAMED, name=canonical_name(text))


def short_name(text: str) -> str:
    """A short name of the data a spec names, for a run folder's default name: the built-in
    name, the last part of a folder's or file's path, ``memory`` (the text itself when it does
    not parse: the loader says what is wrong with it)."""
    try:
        spec = parse_spec(text)
    except DataError:
        return str(text).strip()
    if spec.form == MEMORY:
        return MEMORY_PREFIX
    if spec.path is not None:
        return spec.path.name or str(spec.path).rstrip("/").split("/")[-1]
    return spec.name


def memory_refusal(record: MemoryRecord, run: Optional[str] = None,
                   ask: str = "pass --data SOURCE (Python: data=...)") -> DataError:
    """The one line said when the data of a run trained in memory are asked for from its config
    (``run``: the run folder; None when the config is not yet a run's, e.g. a new training;
    ``ask``: how the caller takes the data instead)."""
    if run is None:
        return DataError(f"data.dataset names data given in memory ({record.describe()}), which cannot be loaded "
                         "from a config; pass the data themselves (Python: data=...), or --data SOURCE to a "
                         "command that takes it")
    return DataError(f"{run} was trained on data given in memory ({record.describe()}); {ask}")
