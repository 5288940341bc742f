"""``load_dataset``: one entry point for every data set, by name or ``folder:`` / ``array:`` spec."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from .base import KIND_BINARY, KIND_REAL, DataError, Dataset, Split, binarized
from .download import data_root
from .imageset import LoadOptions
from .spec import ARRAY, DATASETS, FOLDER, MEMORY, SPEC_FORMS, canonical_name, memory_refusal, parse_spec
from .utils import count_from, split_off

__all__ = ["DATASETS", "SPEC_FORMS", "canonical_name", "dataset_folder", "load_dataset", "as_dataset",
           "load_configured", "prepared", "keep_classes", "load_options"]

BINARIZE_MODES = (None, "static", "dynamic")


def dataset_folder(name: str, data_dir=None) -> Path:
    """Folder holding a built-in data set's files: ``data_dir`` itself when given, else
    ``data_root()/<name>`` (``<name>`` with '_' instead of '-' is accepted when only that exists,
    e.g. ``binarized_mnist``, ``frey_face``)."""
    if data_dir is not None and str(data_dir) != "":
        folder = Path(data_dir).expanduser()
        if folder.exists() and not folder.is_dir():
            raise DataError(f"--data-dir {data_dir} is a file, not a folder; give the folder that holds the "
                            f"{name} files")
        return folder
    root = data_root()
    folder = root / name
    alt = root / name.replace("-", "_")
    if not folder.exists() and alt.exists():
        return alt
    return folder


def _builtin_loader(name: str) -> Callable[[Path, bool], Dataset]:
    if name in ("mnist", "fashion-mnist"):
        from .mnist import load_mnist
        return lambda folder, download: load_mnist(folder, name, download)
    if name == "binarized-mnist":
        from .binarized_mnist import load_binarized_mnist
        return load_binarized_mnist
    if name == "frey-face":
        from .frey import load_frey
        return load_frey
    if name == "omniglot":
        from .omniglot import load_omniglot
        return load_omniglot
    raise DataError(f"no loader for {name!r}")  # pragma: no cover


def _binarize_static(ds: Dataset, seed: int) -> Dataset:
    """One fixed Bernoulli draw per value, seeded; each split gets its own stream so that the
    train images are binarized the same whatever the other splits are. Drawn a block of rows at
    a time (the result is uint8 0/1, in memory)."""
    def draw(split: Optional[Split], offset: int) -> Optional[Split]:
        if split is None:
            return None
        return binarized(split, torch.Generator().manual_seed(int(seed) * 3 + offset))

    return Dataset(name=ds.name, train=draw(ds.train, 0), valid=draw(ds.valid, 1), test=draw(ds.test, 2),
                   image_shape=ds.image_shape, kind=KIND_BINARY, levels=2, dynamic_binarization=False,
                   info=ds.info)


def load_dataset(spec: str, data_dir: Union[str, os.PathLike, None] = None, *, download: bool = True,
                 validation: Union[int, float, None] = 0, binarize: Optional[str] = None,
                 image_size=None, color: Optional[str] = None, seed: int = 0, crop=None,
                 classes: Optional[Sequence[int]] = None, options: Optional[LoadOptions] = None) -> Dataset:
    """Load a data set as [N, D] splits in compact storage (see aevb/data/base.py).

    ``spec``: ``digits`` (embedded, no download), ``mnist``, ``fashion-mnist``,
    ``binarized-mnist``, ``frey-face``, ``omniglot``, ``folder:PATH`` or ``array:PATH``.
    ``data_dir``: the folder that holds this data set's files directly (default
    ``data_root()/<name>``, i.e. ``$AEVB_DATA/<name>`` or ``~/.cache/aevb/<name>``); missing files
    are downloaded there unless ``download=False``.
    ``validation``: count (int) or fraction (float < 1) of the training split held out as
    ``valid`` with a permutation seeded by ``seed`` (a data set with its own validation split
    keeps it). ``binarize``: None, ``"static"`` (one seeded Bernoulli draw per value, the result
    is binary) or ``"dynamic"`` (grey values kept, ``dynamic_binarization=True``: the trainer
    draws fresh binary samples each time). ``image_size`` ((H, W) or int) and ``crop`` (a
    centre crop (h, w) before resizing) apply to ``folder:`` and ``celeba``; ``color`` (auto /
    grey / rgb) to ``folder:``. ``options``: the data cache folder, the memory budget above which
    splits are streamed from disk, skipping unreadable images, progress bars (LoadOptions).
    """
    options = options or LoadOptions()
    parsed = parse_spec(spec)
    spec = parsed.text
    bin_mode = binarize_mode(binarize)
    if parsed.form == MEMORY:
        raise DataError(f"{parsed.record.spec()[:40]}... names data given in memory ({parsed.record.describe()}), "
                        "which aevb cannot load by itself; pass the data themselves (Python: data=...)")

    is_folder, is_array = parsed.form == FOLDER, parsed.form == ARRAY
    if not parsed.pictures:
        if image_size is not None:
            raise DataError(f"image_size only applies to folder:PATH and celeba data, not {spec!r}")
        if crop is not None:
            raise DataError(f"crop only applies to folder:PATH and celeba data, not {spec!r}")
    if not is_folder and color is not None and str(color).lower() not in ("auto", "rgb" if parsed.pictures else "auto"):
        raise DataError(f"color only applies to folder:PATH data, not {spec!r}")

    if is_folder or is_array:
        path = parsed.path
        if is_folder:
            from .folder import load_folder
            ds = load_folder(path, image_size=image_size, color=color, crop=crop, options=options)
        else:
            from .arrays import load_array
            ds = load_array(path, options=options)
    else:
        name = parsed.name
        if name == "digits":
            from .digits import load_digits_dataset
            ds = load_digits_dataset()
        elif name == "celeba":
            from .celeba import load_celeba
            ds = load_celeba(dataset_folder(name, data_dir), image_size=image_size, crop=crop, options=options)
        else:
            folder = dataset_folder(name, data_dir)
            ds = _builtin_loader(name)(folder, download)

    info = dict(ds.info)
    info["spec"] = spec
    ds.info = info
    return prepared(ds, validation=validation, binarize=bin_mode, seed=seed, classes=classes)


def binarize_mode(binarize) -> Optional[str]:
    """None, 'static' or 'dynamic' from a user's ``binarize`` (None, '', 'none', 'no' and 'false'
    mean none); anything else is refused."""
    if binarize is not None and not isinstance(binarize, str):
        raise DataError(f"binarize must be None, 'static' or 'dynamic', got {binarize!r}")
    mode = None if binarize is None or binarize.lower() in ("", "none", "no", "false") else binarize.lower()
    if mode not in BINARIZE_MODES:
        raise DataError(f"binarize must be None, 'static' or 'dynamic', got {binarize!r}")
    return mode


def prepared(ds: Dataset, validation=0, binarize: Optional[str] = None, seed: int = 0,
             classes: Optional[Sequence[int]] = None) -> Dataset:
    """``ds`` as a run uses it: binarized (``binarize``: None, 'static' or 'dynamic'), only the
    labels ``classes``, and ``validation`` (a count or fraction) of the training split held out
    with a permutation seeded by ``seed``; the steps every loaded data set goes through, in this
    order, whether it came from files or from memory."""
    bin_mode = binarize_mode(binarize)
    info = ds.info
    # binarization (before the validation split, so a train image's draw does not depend on it)
    if bin_mode is not None:
        if ds.kind == KIND_REAL:
            raise DataError(f"{ds.name} holds real values outside [0, 1]; it cannot be binarized "
                            f"(binarize={bin_mode!r}). Rescale it to [0, 1] first.")
        if ds.kind == KIND_BINARY:
            info["binarize"] = f"{bin_mode}: data already binary, nothing to do"
        elif bin_mode == "static":
            ds = _binarize_static(ds, seed)
            info["binarize"] = f"static (one Bernoulli draw per value, seed {seed})"
        else:
            ds.dynamic_binarization = True
            info["binarize"] = "dynamic (fresh Bernoulli draws at every use)"

    # only some labels (after binarization, so that an image's draw does not depend on them)
    if classes:
        ds = keep_classes(ds, classes)
        info = ds.info

    # validation split
    if validation:
        if ds.valid is not None:
            info["validation"] = f"kept the data set's own validation split ({len(ds.valid)} datapoints)"
        else:
            n_valid = count_from(validation, len(ds.train), "validation")
            if n_valid > 0:
                train, valid = split_off(ds.train, n_valid, seed)
                ds = Dataset(name=ds.name, train=train, valid=valid, test=ds.test,
                             image_shape=ds.image_shape, kind=ds.kind, levels=ds.levels,
                             dynamic_binarization=ds.dynamic_binarization, info=info)
                info["validation"] = f"{n_valid} of the training datapoints (seeded permutation, seed {seed})"
    ds.info = info
    return ds


def keep_classes(ds: Dataset, classes: Sequence[int]) -> Dataset:
    """``ds`` with only the datapoints whose label is in ``classes``, in every split (e.g. to train
    on some digits and score the others as new data). A data set without labels is refused."""
    wanted = sorted(set(int(c) for c in classes))
    splits = {n: s for n, s in (("train", ds.train), ("valid", ds.valid), ("test", ds.test)) if s is not None}
    unlabelled = [n for n, s in splits.items() if s.y is None]
    if unlabelled:
        raise DataError(f"classes {wanted}: {ds.name} has no labels in its {', '.join(unlabelled)} split; keep "
                        "classes only of a labelled data set (mnist, fashion-mnist, digits, array: with y)")
    kept = {n: s.subset(np.flatnonzero(np.isin(s.y.cpu().numpy(), wanted))) for n, s in splits.items()}
    empty = [n for n, s in kept.items() if len(s) == 0]
    if empty:
        have = sorted(set(int(v) for v in torch.unique(ds.train.y).tolist()))
        raise DataError(f"classes {wanted}: no datapoint in the {' and '.join(empty)} split of {ds.name} has one of "
                        f"these labels; its labels are {have}")
    info = dict(ds.info, classes=f"labels {wanted} only: {len(kept['train'])} of {len(ds.train)} training and "
                                 f"{len(kept['test'])} of {len(ds.test)} test datapoints")
    return Dataset(name=ds.name, train=kept["train"], valid=kept.get("valid"), test=kept["test"],
                   image_shape=ds.image_shape, kind=ds.kind, levels=ds.levels,
                   dynamic_binarization=ds.dynamic_binarization, info=info)


def load_options(d, **overrides) -> LoadOptions:
    """The LoadOptions of a ``DataConfig`` (cache folder, memory budget in bytes, skipping bad
    images), with ``overrides`` (e.g. progress, workers) applied."""
    from .cache import parse_size

    budget = getattr(d, "memory_budget", None)
    opts = dict(cache_dir=getattr(d, "cache_dir", None), skip_bad_images=bool(getattr(d, "skip_bad_images", False)),
                memory_budget=None if budget in (None, "", "auto") else parse_size(budget))
    opts.update(overrides)
    return LoadOptions(**opts)


def as_dataset(data, *, valid=None, test=None, labels=None, validation=0, binarize: Optional[str] = None,
               seed: int = 0, classes: Optional[Sequence[int]] = None, **load_kwargs) -> Dataset:
    """aevb's :class:`Dataset` of what a PyTorch user holds (see aevb/data/memory.py for the
    rules): a tensor or NumPy array of datapoints ([N, D], [N, H, W], [N, C, H, W]; [N, H, W, C]
    is read as channels last), a ``(data, labels)`` pair, a map-style ``torch.utils.data.Dataset``
    whose items are a tensor or ``(tensor, label)``, or a ``DataLoader`` (read once into memory).
    A data-set name or spec (``"mnist"``, ``"array:x.npz"``) goes to :func:`load_dataset` with
    ``load_kwargs``; aevb's own Dataset is returned as it is.

    ``valid`` / ``test``: parts given apart, in the same forms (without ``test`` a fixed seeded
    10 % is held out as test, as for ``array:`` files); ``labels``: one integer per datapoint of
    ``data``. ``validation`` (a count or fraction of the training split, seeded by ``seed``),
    ``binarize`` and ``classes`` act as in :func:`load_dataset`. The data are shared, not
    copied, where they can be (contiguous uint8, bool, float16/32/64 data); the result's
    ``info["memory"]`` records shape, dtype, counts and sha256, and ``info["spec"]`` is the
    ``memory:`` spec a run's config keeps."""
    from .memory import memory_dataset

    given = [n for n, v in (("valid", valid), ("test", test), ("labels", labels)) if v is not None]
    if isinstance(data, Dataset) or isinstance(data, (str, os.PathLike)):
        if given:
            raise DataError(f"{', '.join(given)} apply to data given in memory (a tensor, array, Dataset or "
                            f"DataLoader), not to {data if not isinstance(data, Dataset) else 'an aevb Dataset'}")
        if isinstance(data, Dataset):
            if validation or binarize or classes or load_kwargs:
                raise DataError("an aevb Dataset is used as it is; give validation, binarize and classes to "
                                "load_dataset or as_dataset with the data themselves")
            return data
        return load_dataset(str(data), validation=validation, binarize=binarize, seed=seed, classes=classes,
                            **load_kwargs)
    if load_kwargs:
        raise DataError(f"{', '.join(sorted(load_kwargs))} apply to data sets loaded from files, not to data "
                        "given in memory")
    ds = memory_dataset(data, valid=valid, test=test, labels=labels)
    return prepared(ds, validation=validation, binarize=binarize, seed=seed, classes=classes)


def load_configured(d, download: Optional[bool] = None, progress: bool = True,
                    options: Optional[LoadOptions] = None, data=None, run=None, exact: bool = False,
                    image_shape=None, ask: Optional[str] = None) -> Dataset:
    """The data set a run's ``DataConfig`` describes: the one way a run (training, resume,
    evaluation, plots, the report) and `aevb data prepare` get their data. ``download``
    overrides ``d.download``; ``options`` replaces ``load_options(d, progress=progress)``.

    ``data``: the data to use instead (anything :func:`as_dataset` takes: a source such as
    ``array:FILE``, or a tensor, array, Dataset or DataLoader), split, binarized and held out
    with the run's own settings. A run trained on data given in memory (``d.dataset`` is a
    ``memory:`` record) needs it: without it one DataError line names ``run`` (the run folder)
    and the data's shape; with it the data must have the run's datapoint shape, and with
    ``exact`` (a resume) the same shape, dtype, counts and sha256 (:func:`check_same_data`).
    ``image_shape``: the (C, H, W) the run's model takes, which data given must have."""
    parsed = parse_spec(d.dataset)
    if data is not None:
        own = dict(validation=d.validation, binarize=d.binarize, seed=d.seed, classes=getattr(d, "classes", None))
        if isinstance(data, (str, os.PathLike)) and parsed.form != MEMORY:
            # another source for a run on files: read with the run's own picture settings
            ds = load_dataset(str(data), d.data_dir if str(data).strip() == d.dataset.strip() else None,
                              download=d.download if download is None else download,
                              image_size=d.image_size if parse_spec(str(data)).pictures else None,
                              color=d.color if parse_spec(str(data)).form == FOLDER else None,
                              crop=getattr(d, "crop", None) if parse_spec(str(data)).pictures else None,
                              options=options or load_options(d, progress=progress), **own)
        else:
            ds = as_dataset(data, **own)
        if parsed.form == MEMORY:
            check_same_data(parsed.record, ds, run, exact=exact)
        if image_shape is not None and tuple(ds.image_shape) != tuple(int(s) for s in image_shape):
            got, want = ("x".join(map(str, s)) for s in (ds.image_shape, image_shape))
            given = data if isinstance(data, (str, os.PathLike)) else "the data given"
            raise DataError(f"{given} has datapoints of {got} (C x H x W) but {run or 'the run'} takes {want}; "
                            "give data of the run's shape")
        return ds
    if parsed.form == MEMORY:
        raise memory_refusal(parsed.record, run, *([ask] if ask else []))
    return load_dataset(d.dataset, d.data_dir, download=d.download if download is None else download,
                        validation=d.validation, binarize=d.binarize, image_size=d.image_size,
                        color=d.color, seed=d.seed, crop=getattr(d, "crop", None),
                        classes=getattr(d, "classes", None), options=options or load_options(d, progress=progress))


def check_same_data(record, ds: Dataset, run=None, exact: bool = True) -> None:
    """Refuse (one DataError line) data ``ds`` for a run trained on data given in memory whose
    record is ``record`` (a MemoryRecord, or the run's ``memory:`` spec): another datapoint
    shape always; with ``exact`` (a resume: the data must be the run's own) another dtype,
    count or content (sha256 of the bytes), e.g. another array of the same shape."""
    from .memory import check_matches

    if isinstance(record, str):
        record = parse_spec(record).record
    check_matches(record, ds, str(run) if run else "the run", exact=exact)
