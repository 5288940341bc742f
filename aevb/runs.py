"""The run folder: what a training run writes and how to open it again.

Layout::

    RUN/
      run.json             marker: format, version, status (running|finished|failed|interrupted)
      config.json          the resolved RunConfig
      metrics.csv          one row per epoch (bounds per datapoint in nats, KL, reconstruction, time)
      metrics.jsonl        the same rows as JSON lines
      checkpoints/last.pt  model, optimizer, schedule, epoch, step, RNG states (atomic, every epoch)
      checkpoints/best.pt  the model of the epoch with the best validation bound (with a validation split)
      images/              reconstructions_epochNNN.png, samples_epochNNN.png, ...
      tensorboard/         TensorBoard event files
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch

from .config import RunConfig
from .data import load_configured
from .devices import check_precision, resolve_device
from .errors import CheckpointError, ConfigError, DataError, RunError
from .checkpoints import RUN_ID
from .io import atomic_write_text, load_checkpoint
from .lock import LOCK_NAME, describe, is_locked, read_lock
from .model import VAE
from . import newdata
from .newdata import Codes, Items, Scores, check_fits, load_items
from .data.base import binarized
from .sampling import model_device, precision_for

RUN_MARKER = "run.json"
CHECKPOINT = Path("checkpoints") / "last.pt"
BEST_CHECKPOINT = Path("checkpoints") / "best.pt"
# the checkpoints a command can take the model from (--checkpoint); "last" is the default
CHECKPOINTS = {"last": CHECKPOINT, "best": BEST_CHECKPOINT}


@dataclasses.dataclass
class LoadedModel:
    """A run's model as loaded from one of its checkpoints: which one, and the epoch it holds."""
    model: VAE
    checkpoint: str  # "last" or "best"
    epoch: int
    image_shape: tuple  # (C, H, W) of the data the model takes
    path: Path

    def describe(self) -> str:
        return f"the {self.checkpoint} checkpoint (epoch {self.epoch})"


def read_marker(path: Union[str, Path]) -> Optional[dict]:
    """The parsed ``run.json`` of an aevb run folder, or None when ``path`` holds none: a folder is
    a run by the content of its marker (``"format": "aevb-run"``), not by a file's name."""
    marker = Path(path) / RUN_MARKER
    try:
        if not marker.is_file() or marker.stat().st_size > 1_000_000:
            return None
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("format") == "aevb-run" else None


def is_run(path: Union[str, Path]) -> bool:
    return read_marker(path) is not None


def write_marker(path: Path, status: str, **extra) -> None:
    """Update ``run.json`` (status and ``extra`` fields), atomically: if it cannot be written
    (a full disk) the old marker stays whole."""
    info = {"format": "aevb-run", "version": 1, "status": status,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    prev = read_marker(path)
    if prev is not None:
        info = {**prev, **info}
    info.update(extra)
    atomic_write_text(path / RUN_MARKER, json.dumps(info, indent=2) + "\n")


# ------------------------------------------------------------------ output paths of other commands
def check_writable(folder: Path, label: str = "--out", option: str = "--out") -> None:
    """Refuse unless something can be created at ``folder``: its nearest existing ancestor must be
    a folder where a file can really be written (a probe file is made and removed)."""
    probe = folder
    while not probe.exists():
        if probe.is_symlink():
            raise RunError(f"{label}: {probe} is a broken symbolic link; choose another {option}")
        probe = probe.parent
    if not probe.is_dir():
        raise RunError(f"{label}: {probe} is a file, so nothing can be created under it; choose another {option}")
    try:  # a real write: also catches read-only and pseudo file systems
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise RunError(f"{label}: cannot write into {probe} ({e.strerror or e}); choose another {option}") from None


# what a run's own writer owns: other commands never write there
PROTECTED_FILES = (RUN_MARKER, "config.json", "metrics.csv", "metrics.jsonl", LOCK_NAME, "error.log")
PROTECTED_DIRS = ("checkpoints", "tensorboard", "latents")


def check_output(path: Union[str, Path], option: str = "--out", folder: bool = False,
                 suffixes: Sequence[str] = ()) -> Path:
    """Refuse an output path before any work is done: a folder where a file is wanted (or the
    reverse), a wrong file type, a place that cannot be written, or a file a run's writer owns
    (its checkpoints, config, marker, metrics). Returns the path."""
    path = Path(path)
    label = f"{option} {path}"
    if folder:
        if path.exists() and not path.is_dir():
            raise RunError(f"{label} is a file; give a folder")
    else:
        if path.is_dir():
            raise RunError(f"{label} is a folder; give a file name (e.g. {path / ('out' + (suffixes[0] if suffixes else ''))})")
        if suffixes and path.suffix.lower() not in suffixes:
            raise RunError(f"{label}: the file name must end in {' or '.join(suffixes)}")
        if path.exists() and not os.access(path, os.W_OK):
            raise RunError(f"{label} cannot be written (permission denied); choose another {option}")
    check_writable(path if folder else path.parent, label, option)
    refuse_run_owned(path, label, option)
    return path


def refuse_run_owned(path: Path, label: str, option: str) -> None:
    """Refuse a path inside what a run's training owns (its checkpoints/, tensorboard/, latents/,
    run.json, config.json, metrics, lock, error.log)."""
    full = Path(path).resolve()
    for ancestor in full.parents:
        if is_run(ancestor):
            rel = full.relative_to(ancestor)
            if rel.parts[0] in PROTECTED_DIRS or (len(rel.parts) == 1 and rel.parts[0] in PROTECTED_FILES):
                raise RunError(f"{label} would write into {rel} of the run {ancestor}, which only its training "
                               f"writes; choose another {option}")


def missing_checkpoint_of_finished(path: Path) -> str:
    """What to do about a finished run whose checkpoint was deleted (a resume cannot help)."""
    return (f"{path} is a finished run whose checkpoint {path / CHECKPOINT} is missing (deleted or moved); "
            f"restore it from a copy, or train the run again with `aevb train --out {path} --overwrite ...`")


def not_a_run_folder(path: Path) -> str:
    """Why ``path``, which is not a folder, cannot be a run, and what to give instead."""
    if not path.exists():
        return f"{path} does not exist; give the folder that `aevb train` wrote"
    what = "a file" if path.is_file() else "not a folder"
    inside = next((a for a in path.resolve().parents if is_run(a)), None)
    instead = (f"it is inside the run {inside}: give that folder" if inside is not None
               else f"give the folder that `aevb train` wrote (the one holding {RUN_MARKER})")
    return f"{path} is {what}, not a run folder; {instead}"


class Run:
    """An existing run folder. ``Run(path)`` checks that it is one; a run of your own encoder and
    decoder modules takes instances of them, ``Run(path, encoder=..., decoder=...)``, whose copies
    receive the checkpoint's weights each time the model is loaded."""

    def __init__(self, path: Union[str, Path], encoder=None, decoder=None):
        self.path = Path(path)
        # a run of the user's own modules: instances of them, copied for every model loaded
        self.encoder, self.decoder = encoder, decoder
        self._shapes: dict = {}  # image shape of each checkpoint file a model was loaded from (see _file_key)
        if not self.path.is_dir():
            raise RunError(not_a_run_folder(self.path))
        if not is_run(self.path):
            raise RunError(f"{self.path} is not an aevb run folder (no {RUN_MARKER} with format aevb-run); "
                           "give the folder that `aevb train --out` wrote")
        cfg_path = self.path / "config.json"
        try:
            self.config = RunConfig.from_dict(json.loads(cfg_path.read_text()))
        except FileNotFoundError:
            raise RunError(f"{self.path} has no config.json; the run folder is damaged") from None
        except (OSError, ValueError) as e:  # json.JSONDecodeError and ConfigError are ValueErrors
            raise RunError(f"{cfg_path} could not be read ({_first_line(e)}); the run folder is damaged") from None

    @property
    def info(self) -> dict:
        return read_marker(self.path) or {}

    @property
    def run_id(self) -> Optional[str]:
        """The run's id (run.json's ``run_id``): every checkpoint it writes carries it, and a
        checkpoint of another run is refused. None for a run created before run ids."""
        value = self.info.get(RUN_ID)
        return str(value) if value else None

    @property
    def status(self) -> str:
        """The marker's status, except that a run marked 'running' whose writer is gone (killed,
        or its machine crashed: no live lock) is 'stopped'; it continues with --resume."""
        status = str(self.info.get("status", "unknown"))
        if status == "running" and not is_locked(self.path):
            return "stopped"
        return status

    def require_finished(self, tail: str = "") -> None:
        """Refuse (RunError, one line ending in ``tail``) a run that is being trained (a live
        lock: its checkpoint changes every epoch) or that stopped before it finished (killed,
        interrupted, failed): its weights are not those of the run it was configured to be."""
        if is_locked(self.path):
            raise RunError(f"{self.path} is still training, its checkpoint changing every epoch (written by "
                           f"{describe(read_lock(self.path))}); wait until it finishes{tail}")
        status = self.status
        if status != "finished":
            info = self.info
            # a killed writer's marker still holds the epoch it started from: ask its checkpoint
            epoch = self._saved_epoch() if status == "stopped" else info.get("epoch")
            total = self.config.train.epochs
            when = f"after epoch {epoch} of {total}" if epoch is not None else "before its first epoch ended"
            reason = f": {info['reason']}" if status == "failed" and info.get("reason") else ""
            raise RunError(f"{self.path} is not finished (status {status!r}) {when}{reason}; finish it with "
                           f"`aevb train --resume {self.path}`{tail}")

    def _saved_epoch(self) -> Optional[int]:
        """The epoch of the last checkpoint (None when there is none that can be read)."""
        try:
            return int(load_checkpoint(self.checkpoint_path, "cpu", model_only=True, run_id=self.run_id)["epoch"])
        except CheckpointError:
            return None

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def images_dir(self) -> Path:
        return self.path / "images"

    def checkpoint_file(self, checkpoint: str = "last", python: bool = False) -> Path:
        """The path of the run's ``last`` or ``best`` checkpoint; RunError saying what to do when
        it is not there (best.pt exists only in runs trained with a validation split), naming the
        option ``--checkpoint`` (the commands check it first) or, with ``python``, the argument
        ``checkpoint`` of the methods that load the model."""
        if checkpoint not in CHECKPOINTS:
            raise ConfigError(f"checkpoint {checkpoint!r} is not one of a run's checkpoints: choose "
                              + " or ".join(CHECKPOINTS))
        path = self.path / CHECKPOINTS[checkpoint]
        if path.is_file():
            return path
        last = "checkpoint='last'" if python else "--checkpoint last"
        if checkpoint == "best":
            if not self.config.data.validation:
                raise RunError(f"{self.path} has no best checkpoint: the best epoch is the one with the highest "
                               f"validation bound, and this run was trained without a validation split. Use "
                               f"{last} (the default), or train a run with a validation split (--validation N)")
            if self.checkpoint_path.is_file():
                raise RunError(f"{self.path} has no {BEST_CHECKPOINT} (deleted or moved, or the run was trained by "
                               f"an aevb that kept no best checkpoint); restore it from a copy, or use {last}")
        raise RunError(self.no_checkpoint_message())

    def checkpoint(self, map_location="cpu", checkpoint: str = "last", model_only: bool = False) -> dict:
        """The ``last`` (default) or ``best`` checkpoint's state. ``model_only``: only the model's
        entries, read memory-mapped, never the optimizer state (aevb.io.load_checkpoint)."""
        return load_checkpoint(self.checkpoint_file(checkpoint, python=True), map_location, model_only=model_only,
                               run_id=self.run_id)

    def no_checkpoint_message(self) -> str:
        if is_locked(self.path):
            return (f"{self.path} has no checkpoint yet: it is still training its first epoch "
                    f"({describe(read_lock(self.path))}); wait for the first epoch to end")
        status = self.status
        if status == "finished":
            return missing_checkpoint_of_finished(self.path)
        return (f"{self.path} has no checkpoint ({CHECKPOINT}): the run stopped (status {status}) before its "
                f"first epoch ended. Start it again from scratch with `aevb train --resume {self.path}` "
                f"(its saved settings), or replace it with `aevb train --out {self.path} --overwrite ...`")

    def load_model(self, device="cpu", checkpoint: str = "last"):
        """The VAE with the weights of the ``last`` (default) or ``best`` checkpoint, in eval mode."""
        return self.open_model(device, checkpoint).model

    def open_model(self, device="cpu", checkpoint: str = "last") -> LoadedModel:
        """The model of the ``last`` or ``best`` checkpoint with the epoch it holds: every command
        that uses the model loads it here, reading only its weights (not the optimizer state).
        The model is built without memory (on the meta device) and takes the checkpoint's
        memory-mapped tensors as its own, so on the CPU its weights are pages of the file, read
        as they are used, not a copy in anonymous memory."""
        path = self.checkpoint_file(checkpoint, python=True)
        state = load_checkpoint(path, device, model_only=True, run_id=self.run_id)
        modules = {"encoder": self.encoder, "decoder": self.decoder}
        if self.encoder is not None:  # new instances of the user's modules each time
            modules = {k: copy.deepcopy(v) for k, v in modules.items()}
        model = VAE.from_checkpoint(self.config, state, path, **modules)
        shape = self._shapes[_file_key(path)] = self.image_shape(state)
        return LoadedModel(model.to(device).eval(), checkpoint, int(state["epoch"]), shape, path)

    def load_data(self, download: Optional[bool] = None, progress: bool = True,
                  memory_budget: Optional[str] = None, data=None):
        """The data set as configured for this run (same splits, same seed); ``memory_budget``
        (a size such as 500MB) replaces the run's own for where the data are held. ``data``: the
        data again (a tensor, array, Dataset, DataLoader or spec), for a run trained on data given
        in memory (which cannot be loaded from its config) or to evaluate the run on other data of
        its shape."""
        d = self.config.data
        if memory_budget is not None:
            d = dataclasses.replace(d, memory_budget=memory_budget)
        return load_configured(d, download=download, progress=progress, data=data, run=self.path,
                               image_shape=self.image_shape() if data is not None else None)

    # ------------------------------------------------------------------ new data
    def image_shape(self, state: Optional[dict] = None) -> tuple:
        """(C, H, W) of the data the model takes (from its checkpoint: the last one, or the best
        one where it is the only one; the shape a model loaded from that same file had, without
        reading it again)."""
        if state is None:
            self._any_checkpoint()
            files = [p for p in (self.checkpoint_path, self.path / BEST_CHECKPOINT) if p.is_file()]
            for path in files:
                known = self._shapes.get(_file_key(path))
                if known is not None:
                    return known
            for i, path in enumerate(files):  # a refused last.pt does not hide the shape best.pt holds
                try:
                    state = load_checkpoint(path, "cpu", model_only=True, run_id=self.run_id)
                    break
                except CheckpointError:
                    if i == len(files) - 1:
                        raise
        shape = state.get("image_shape")
        return tuple(int(s) for s in shape) if shape else (1, 1, int(state["data_dim"]))

    def _any_checkpoint(self) -> Path:
        """The last checkpoint, or the best one when only it is there (RunError when neither is)."""
        for path in (self.checkpoint_path, self.path / BEST_CHECKPOINT):
            if path.is_file():
                return path
        raise RunError(self.no_checkpoint_message())

    def preprocess(self, source, skip_bad_images: bool = False, progress: bool = False, seed: int = 0,
                   model=None) -> "Items":
        """``source`` (``folder:DIR``, ``array:FILE``, ``mnist:test``, an image file or a list of
        them, PIL images, a numpy array or a tensor) prepared as this run's own data were (image
        size, crop, colour, scaling, binarization), with each item's identity: an
        :class:`aevb.newdata.Items` whose ``split`` gives batches, marked as this run's. Data
        that do not fit the model raise DataError naming both shapes; unreadable images too,
        unless ``skip_bad_images`` (then ``items.skipped`` lists them)."""
        seed = newdata.check_seed(seed)
        if model is None:
            self._any_checkpoint()  # refused before any data are read
        newdata.check_pictures(_pil_images(source), "source")
        items = load_items(source, self.config.data, skip_bad_images=skip_bad_images, progress=progress, seed=seed)
        items = check_fits(items, self.image_shape(), self.config.model.likelihood, str(self.path))
        items.prepared_for = (str(self.path.resolve()), self._preparation())
        return items

    def _preparation(self) -> dict:
        """The data settings that decide how new data are prepared for this run."""
        d = dataclasses.asdict(self.config.data)
        return {k: d.get(k) for k in PREPARATION}

    def check_items(self, items: "Items") -> "Items":
        """Refuse (DataError, one line) items that :meth:`preprocess` of another run prepared in
        another way than this run prepares its data (another image size, crop, colour,
        binarization, data set or seed), and items that do not fit the model; items prepared
        the same way (e.g. for a copy of this run) are used as they are."""
        mark = items.prepared_for
        if mark is not None and mark[0] != str(self.path.resolve()):
            theirs, mine = mark[1], self._preparation()
            differ = [f"{k} {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in PREPARATION
                      if theirs.get(k) != mine.get(k)]
            if differ:
                raise DataError(f"these items were prepared for the run {mark[0]}, whose data settings differ from "
                                f"those of {self.path} ({'; '.join(differ)}); prepare them for this run: "
                                "run.preprocess(source)")
        return check_fits(items, self.image_shape(), self.config.model.likelihood, str(self.path))

    def _model_and_items(self, source, device, seed: int = 0, checkpoint: str = "last", **kw):
        if isinstance(source, Items):
            self.check_items(source)
        model = self.load_model(_python_device(device), checkpoint)
        items = source if isinstance(source, Items) else self.preprocess(source, model=model, seed=seed, **kw)
        return model, items

    def encode(self, source, samples: int = 0, seed: int = 0, device="cpu", checkpoint: str = "last",
               precision: str = "fp32", **kw) -> Codes:
        """The posterior q(z|x) of each item of ``source`` (see :meth:`preprocess`, or an ``Items``
        it returned) as :class:`aevb.newdata.Codes`: ``.mu``, ``.log_var`` [N, J] float64, ``.ids``,
        and with ``samples`` > 0 draws ``.z`` [N, samples, J]; ``codes["mu"]`` and ``keys()`` as on
        a dict, ``codes.to_pandas()`` one row per item. ``checkpoint``: the model of the ``last``
        or ``best`` checkpoint, here and in score, reconstruct and decode. ``precision="bf16"``
        runs the network in bfloat16 autocast, here and in score, reconstruct and decode (its
        outputs are converted to float32)."""
        samples, seed = newdata.check_samples(samples), newdata.check_seed(seed)
        check_precision(precision)
        model, items = self._model_and_items(source, device, seed, checkpoint, **kw)
        with precision_for(model, precision):
            return newdata.encode_items(model, items, samples, seed)

    def score(self, source, k: int = 1, seed: int = 0, device="cpu", checkpoint: str = "last",
              background=None, compressor: Optional[str] = newdata.DEFAULT_COMPRESSOR,
              reference: Optional[str] = None, rank_by: str = newdata.DEFAULT_RANK_BY, precision: str = "fp32",
              **kw) -> Scores:
        """Bounds per item of ``source`` in nats as :class:`aevb.newdata.Scores`: ``.elbo``,
        ``.lk``, ``.lk_se`` (the bound engine with ``k`` importance samples and seeded noise: the
        numbers ``aevb evaluate`` gives), and ``bpd_elbo``, ``bpd_lk`` where the data are discrete
        (as ``aevb score`` writes them); with the novelty scores of :mod:`aevb.newdata.novelty`
        (higher: more novel): ``complexity`` and ``novelty`` (bits; ``compressor=None`` leaves them
        out) and, with ``background`` (a finished background run or its folder: see
        :meth:`check_background`), ``background_lk`` and ``lr`` (nats). ``reference`` ("test" or
        "valid") adds ``percentile``: the percentage of the run's own split whose ``rank_by`` score
        (novelty, lr, lk or elbo) is below the item's. ``precision="bf16"`` runs the networks in
        bfloat16 autocast (the bounds are still summed in float32): faster for large MLPs and conv
        networks on CPUs with bfloat16 arithmetic."""
        k, seed = newdata.check_k(k), newdata.check_seed(seed)
        check_precision(precision)
        compressor = newdata.check_compressor(compressor)
        bg = None if background is None else self.check_background(background)
        why = newdata.missing_rank(rank_by, bg is not None, None, option=False)
        if why:
            raise ConfigError(why)
        if reference is not None and reference not in ("test", "valid"):
            raise ConfigError(f"reference must be 'test' or 'valid' (the run's own split); got {reference!r}")
        model, items = self._model_and_items(source, device, seed, checkpoint, **kw)
        bg_model = None if bg is None else bg.load_model(model_device(model))
        if rank_by == "novelty" and reference is not None:
            why = newdata.missing_rank(rank_by, bg is not None, items.kind, option=False)
            if why:
                raise ConfigError(why)
        likelihood = self.config.model.likelihood
        with precision_for(model, precision):
            cols = newdata.score_novelty(model, items, k, likelihood, seed, compressor=compressor, background=bg_model)
            if reference is not None:
                ref = newdata.score_novelty(model, self.own_items(reference, seed), k, likelihood, seed,
                                            compressor=compressor, background=bg_model)
                cols = newdata.rank_against(cols, ref, rank_by)
        return cols

    def typicality(self, source, k: int = 1, reference: str = "test", bootstrap: int = 1000, alpha: float = 0.01,
                   train_items: int = newdata.TYPICALITY_TRAIN, seed: int = 0, device="cpu",
                   checkpoint: str = "last", **kw) -> "newdata.Typicality":
        """The typicality test of ``source`` taken as one set (Nalisnick et al. 2019): is the mean
        -L_k of its items as far from the training set's mean (the entropy estimate, over at most
        ``train_items`` training items drawn with ``seed``) as a set of as many items of the run's
        ``reference`` split is in a fraction ``alpha`` of ``bootstrap`` draws? An
        :class:`aevb.newdata.Typicality`: ``statistic``, ``threshold``, ``p_value``, ``novel``."""
        k, seed = newdata.check_k(k), newdata.check_seed(seed)
        if reference not in ("test", "valid"):
            raise ConfigError(f"reference must be 'test' or 'valid' (the run's own split); got {reference!r}")
        model, items = self._model_and_items(source, device, seed, checkpoint, **kw)
        data = self.load_data(progress=False)
        nll = -newdata.score(model, items.split, k, seed).lk.numpy()
        return self.typicality_of(model, nll, k, reference, seed, data, bootstrap, alpha, train_items)

    def typicality_of(self, model, nll, k: int, reference: str, seed: int, data, bootstrap: int = 1000,
                      alpha: float = 0.01, train_items: int = newdata.TYPICALITY_TRAIN, progress: bool = False,
                      ref_nll=None) -> "newdata.Typicality":
        """:meth:`typicality` of a set whose -L_k are ``nll`` (nats), scored by ``model`` with ``k``
        samples; ``ref_nll``: the reference split's -L_k when already computed."""
        train = self.own_items("train", seed, data)
        rows = newdata.train_sample(len(train), int(train_items), seed)
        train_nll = -newdata.score(model, train.split.subset(rows), k, seed, progress).lk.numpy()
        if ref_nll is None:
            ref_nll = -newdata.score(model, self.own_items(reference, seed, data).split, k, seed, progress).lk.numpy()
        return newdata.typicality_test(nll, train_nll, ref_nll, bootstrap, alpha, seed, reference)

    def own_items(self, split: str, seed: int = 0, data=None) -> Items:
        """The run's own ``split`` ("train", "valid", "test"; with its --classes) as ``Items``,
        binarized once with ``seed`` when the run binarizes dynamically (one fixed draw, as
        ``aevb evaluate`` scores it)."""
        data = data if data is not None else self.load_data(progress=False)
        s, kind, levels = data.split(split), data.kind, data.levels
        if data.dynamic_binarization:
            s, kind, levels = binarized(s, torch.Generator().manual_seed(int(seed))), "binary", 2
        return Items(split=s, ids=[str(i) for i in range(len(s))], image_shape=tuple(self.image_shape()),
                     kind=kind, levels=levels, source=f"the {split} split of {self.path}")

    def check_background(self, background, option: str = "background", allow_unfinished: bool = False) -> "Run":
        """The background run ``background`` (a Run or its folder) for the likelihood ratio, refused
        (one line naming ``option``) when it is this run, unfinished (unless ``allow_unfinished``),
        or when its model takes data of another shape or prepared another way (binarization, image
        size, crop, colour) or has another likelihood: its bound must be of the same values."""
        try:
            bg = background if isinstance(background, Run) else Run(background)
        except RunError as e:
            raise RunError(f"{option}: {e}") from None
        if bg.path.resolve() == self.path.resolve():
            raise ConfigError(f"{option} {bg.path} is the run itself; give a run of the same network trained on "
                              f"perturbed data: `aevb train --background-of {self.path} --out RUN`")
        if not allow_unfinished:
            try:
                bg.require_finished()
            except RunError as e:
                raise RunError(f"{option}: {e}") from None
        if not bg.checkpoint_path.is_file():
            raise RunError(f"{option}: {bg.no_checkpoint_message()}")
        mine, theirs = tuple(self.image_shape()), tuple(bg.image_shape())
        if mine != theirs:
            raise DataError(f"{option} {bg.path} takes {newdata.describe_shape(theirs)} but {self.path} takes "
                            f"{newdata.describe_shape(mine)}; give a background run trained on this run's data "
                            f"(`aevb train --background-of {self.path}`)")
        a, b = dataclasses.asdict(self.config.data), dataclasses.asdict(bg.config.data)
        differ = [f"{key} {b.get(key)!r} there, {a.get(key)!r} here" for key in BACKGROUND_PREPARATION
                  if a.get(key) != b.get(key)]
        if self.config.model.likelihood != bg.config.model.likelihood:
            differ.append(f"likelihood {bg.config.model.likelihood!r} there, {self.config.model.likelihood!r} here")
        if differ:
            raise DataError(f"{option} {bg.path} prepares or models its data unlike {self.path} "
                            f"({'; '.join(differ)}), so their bounds are not of the same values; train one with "
                            f"`aevb train --background-of {self.path}`")
        return bg

    def reconstruct(self, source, device="cpu", checkpoint: str = "last", precision: str = "fp32", **kw):
        """The mean of p(x|z) at z = E_q[z|x] for each item of ``source``: a float tensor [N, D]."""
        check_precision(precision)
        model, items = self._model_and_items(source, device, checkpoint=checkpoint, **kw)
        with precision_for(model, precision):
            return torch.cat([r for _, r in newdata.reconstruction_blocks(model, items.split)])

    def decode(self, z, device="cpu", checkpoint: str = "last", precision: str = "fp32"):
        """The mean of p(x|z) [N, D] for codes ``z``: an [N, J] array or tensor, the result of
        :meth:`encode` (its ``mu``) or its ``to_pandas()`` (the ``mu_j`` columns), or a file that
        ``aevb encode`` wrote (.npz, .npy, .csv). Another width, NaN, or codes so large that the
        decoder overflows raise DataError in one line."""
        check_precision(precision)
        model = self.load_model(_python_device(device), checkpoint)
        _, codes = newdata.codes_of(z, int(model.latent_dim), "z")
        with precision_for(model, precision):
            return newdata.decode(model, codes, name="z")

    def metrics(self) -> List[dict]:
        p = self.path / "metrics.jsonl"
        if not p.is_file():
            return []
        rows = []
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    raise RunError(f"{p}, line {i}, is not JSON; the run's metrics are damaged "
                                   "(they are rewritten from the checkpoint by the next epoch of "
                                   f"`aevb train --resume {self.path}`)") from None
        return rows

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


# the data settings that decide how a run prepares new data (aevb.newdata.load_items): items
# prepared by a run whose values differ are refused by another run (Run.check_items)
PREPARATION = ("dataset", "validation", "binarize", "image_size", "crop", "color", "seed")
# the data settings a background run (Run.check_background) must share with the run: how the
# items both models score are prepared
BACKGROUND_PREPARATION = ("binarize", "image_size", "crop", "color")


def _python_device(device) -> torch.device:
    """The device of a Python method's ``device`` argument (a name or a torch.device), refused as
    ``--device`` is (aevb.devices.resolve_device) but naming the argument."""
    return resolve_device(str(device) if isinstance(device, torch.device) else device, cpu_advice="device='cpu'")


def _pil_images(source) -> list:
    """The PIL images of a source (one, or a list of them), else []."""
    items = source if isinstance(source, (list, tuple)) else [source]
    return [s for s in items if type(s).__module__.startswith("PIL.") and hasattr(s, "size")]


def _file_key(path: Path) -> tuple:
    """A file as it is now (path, inode, size, modification time): a checkpoint rewritten since
    is another key."""
    try:
        st = path.stat()
    except OSError:
        return (str(path),)
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


def _first_line(e) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def load_run(path: Union[str, Path]) -> Run:
    return Run(path)
