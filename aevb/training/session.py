"""The run folder around a training run: created or reopened before the first step, marked
as running, finished, interrupted or failed after the last, and never left half-changed.

A new run is checked whole (output folder, data, likelihood, networks, device) before its folder
is created under its lock; a replacement (``--overwrite``) takes the old run's place only once
its first epoch has trained. A resumed run changes no file until an epoch has trained.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch

from .. import distributed
from ..checkpoints import RUN_ID, new_run_id
from ..config import RunConfig, resolve
from ..convnets import check_fits
from ..data import Dataset, Split, load_configured
from ..data.fingerprint import describe_change, fingerprint as fingerprint_of
from ..devices import resolve_device
from ..distributions import get_likelihood
from ..errors import CheckpointError, ConfigError, DiskFullError, RunError, TrainingDiverged, interruption
from ..io import load_checkpoint
from ..lock import RunLock
from ..runfolder import NewRun, check_new_out, create_run_folder, recover_siblings
from ..runs import BEST_CHECKPOINT, CHECKPOINT, Run, check_output, not_a_run_folder, read_marker, write_marker
from ..version import __version__
from .. import metrics as M
from .estimate import check_memory, memory_of, shape_from_config
from .state import read_resume


def prepare_new(cfg: RunConfig, out: Path, overwrite: bool, given_data: Optional[Dataset], dist):
    """(resolved config, data, NewRun or None) of a new run: everything is checked, then (on
    rank 0) the folder is created and locked with its config and status."""
    def prepare():
        # Under torchrun, rank 0 checks the folder, loads (maybe downloads) the data and
        # creates the run first; the others load the data after it, and an error on any
        # rank stops every rank (see distributed.staged).
        if dist.is_main:
            check_new_out(out, overwrite)
        memory = memory_of(resolve_device(cfg.train.device))  # an unavailable device: refused first
        if given_data is None:  # a model that cannot fit is refused before any cache is built
            shape = shape_from_config(cfg)
            if shape is not None:  # (at the smallest batch the training set's size could give)
                check_memory(cfg, shape, cfg.data.dataset, memory, n_train=0)
        data = given_data if given_data is not None else load_data(cfg)
        rcfg = resolve(cfg, data.kind, data.name, data.image_shape or (1, 1, data.dim), len(data.split("train")))
        check_data_for_likelihood(rcfg, data)
        check_networks_for_data(rcfg, data)
        check_memory(rcfg, data.image_shape or (1, 1, data.dim), data.name, memory, held_bytes(data))
        if not dist.is_main:
            return rcfg, data, None
        fingerprint = data_fingerprint(rcfg) if given_data is None else None
        if fingerprint and fingerprint.get("duplicates"):
            print(f"aevb train: warning: {fingerprint['duplicates']} of the {fingerprint['files']} images in "
                  f"{rcfg.data.dataset} repeat another file byte for byte; copies may fall in both the "
                  "training and the test split", file=sys.stderr)
        new_run = create_run_folder(out, overwrite)
        try:
            memory = given_data.info.get("memory") if given_data is not None else None
            write_marker(new_run.folder, "running", aevb_version=__version__, dataset=data.name, run_id=new_run_id(),
                         **({"data_fingerprint": fingerprint} if fingerprint else {}),
                         **({"data_memory": memory} if memory else {}), **limited(rcfg))
            rcfg.save(new_run.folder / "config.json")
        except BaseException:
            new_run.abandon()
            raise
        return rcfg, data, new_run

    return distributed.staged(prepare)


def held_bytes(data: Dataset) -> int:
    """Bytes of the data held in memory (streamed splits stay on disk), on the host whatever the
    device: batches are sent to the device one at a time."""
    return sum(s.nbytes for s in data.splits().values() if not s.streamed)


def open_resume(run_dir: Union[str, Path], overrides: Optional[RunConfig], given: Optional[Sequence[str]], dist,
                changes: Optional[dict] = None, data=None):
    """(config, checkpoint state or None, data, lock or None) of the run to continue; the lock
    is released again if anything fails here. ``data``: the data again, for a run trained on data
    given in memory (checked to be the same data: shape, type and checksum)."""
    held = {}  # rank 0: the run and its lock

    def read():
        # Under torchrun rank 0 reads the run and hands it to the others (no shared folder
        # needed); an error there stops every rank (see distributed.staged).
        if not dist.is_main:
            return None
        if Path(run_dir).exists() and not Path(run_dir).is_dir():
            raise RunError(f"--resume {not_a_run_folder(Path(run_dir))}")
        run = Run(run_dir)
        held["lock"] = RunLock(run.path).acquire("resume")
        held["run"] = run
        recover_siblings(run.path)  # what an --overwrite killed before its swap left beside it
        cfg, state = read_resume(run, overrides, given, changes)
        return (cfg, state) if not dist.enabled else (cfg.to_dict(), state)

    try:
        if not dist.enabled:
            cfg, state = read()
        else:
            got = distributed.broadcast_object(distributed.staged(read))
            cfg, state = RunConfig.from_dict(got[0]), got[1]

        given_data = data

        def prepare():
            data = load_data(cfg, given_data, run_dir)
            if state is not None and data.dim != int(state["data_dim"]):
                raise RunError(f"the data set now has {data.dim} values per datapoint but the run was "
                               f"trained on {state['data_dim']}; check --data-dir")
            if dist.is_main:
                check_fingerprint(held["run"], cfg)
            resolve_device(cfg.train.device)
            return data

        data = distributed.staged(prepare)
    except BaseException:
        if "lock" in held:
            held["lock"].release()
        raise
    return cfg, state, data, held.get("lock")


def continue_advice(trainer, first: str) -> str:
    """What to do after a failure: ``first``, then resume (or start again when no epoch was saved)."""
    if trainer.saved_epoch:
        return (f"the last checkpoint (epoch {trainer.saved_epoch}) is kept; {first}, then continue with "
                f"`aevb train --resume {trainer.run_dir}`")
    return f"no epoch was saved; {first}, then start again with `aevb train --resume {trainer.run_dir}`"


class RunLifecycle:
    """The run folder around one call of ``Trainer.fit``: the folder, this process's lock
    on it, the replacement that takes an old run's place once its first epoch has trained
    (``--overwrite``), and whether the run is resumed (its files change only once an epoch has
    trained). The trainer calls ``started`` after the call's first epoch, then ``finished``,
    or ``failed`` with the error that stopped it, and ``close`` at the very end."""

    def __init__(self, run_dir: Path, lock: Optional[RunLock] = None, new_run: Optional[NewRun] = None,
                 resumed: bool = False):
        self.run_dir, self.lock, self.new_run, self.resumed = Path(run_dir), lock, new_run, resumed
        # the id every checkpoint of the run carries: run.json's; a run created before run ids
        # takes that of its last checkpoint, or a new one, written to run.json once an epoch trained
        self.run_id = (read_marker(self.run_dir) or {}).get(RUN_ID)
        if self.run_id is None and resumed:
            self.run_id = checkpoint_run_id(self.run_dir / CHECKPOINT) or new_run_id()

    @property
    def pending(self) -> bool:
        """A replacement that has not trained its first epoch: the old run is still untouched."""
        return self.new_run is not None and self.new_run.pending

    def unfinished(self, trainer) -> bool:
        """A resumed run that trained all its epochs but whose status is not 'finished' (its end,
        e.g. the report, failed)."""
        return (self.resumed and (trainer.epoch >= trainer.cfg.train.epochs or trainer.stopped_early)
                and trainer.epoch > 0 and (read_marker(self.run_dir) or {}).get("status") != "finished")

    def started(self, trainer) -> None:
        """The first epoch of this fit trained: a replacement takes the old run's place (the
        trainer's ``run_dir`` follows), a resumed run records its (maybe changed) config and status."""
        if self.pending:
            trainer.tensorboard.close()  # it reopens in the final folder
            self.run_dir = trainer.run_dir = self.new_run.commit()
        if self.resumed:
            trainer.cfg.save(self.run_dir / "config.json")
            again = {M.STOPPED_EARLY: False} if M.STOPPED_EARLY in (read_marker(self.run_dir) or {}) else {}
            ident = {RUN_ID: self.run_id} if self.run_id else {}
            write_marker(self.run_dir, "running", epoch=trainer.epoch, **again, **ident, **limited(trainer.cfg))

    def finished(self, trainer) -> None:
        """Mark the run finished; with a validation split run.json also says which epoch was best
        and whether the early stop ended the run (at its ``epoch``)."""
        extra = {}
        if trainer.best_epoch is not None:
            extra = {M.STOPPED_EARLY: trainer.stopped_early, M.BEST_EPOCH: trainer.best_epoch,
                     M.BEST_VALID_BOUND: trainer.best_bound}
        write_marker(self.run_dir, "finished", epoch=trainer.epoch, **extra)

    def failed(self, trainer, e: BaseException, trained: bool) -> None:
        """Record a failure in the run folder: a replacement that had not trained is deleted
        (the old run was never touched), a resume that trained nothing leaves the run as it
        was, otherwise run.json says interrupted or failed (and why; an unexpected error's
        traceback goes to RUN/error.log)."""
        if self.pending:
            self.new_run.abandon()
            return
        if self.resumed and not trained:
            return
        try:
            if interruption(e) is not None:  # the checkpoint on disk is the last complete epoch
                write_marker(self.run_dir, "interrupted", epoch=trainer.saved_epoch)
            elif isinstance(e, DiskFullError):
                write_marker(self.run_dir, "failed", epoch=trainer.saved_epoch, reason=str(e))
            elif isinstance(e, TrainingDiverged):
                write_marker(self.run_dir, "failed", epoch=trainer.saved_epoch, reason="loss became NaN or infinite")
            elif isinstance(e, Exception):
                log = self.run_dir / "error.log"
                write_marker(self.run_dir, "failed", epoch=trainer.epoch,
                             reason=f"{type(e).__name__}: {' '.join(str(e).split())[:300]} (see error.log)")
                e.aevb_log = log
        except OSError:
            pass  # the original error matters more than the status

    def close(self) -> None:
        """Release this process's lock on the folder."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def checkpoint_run_id(path: Path) -> Optional[str]:
    """The run id a checkpoint carries (None: none, or the file cannot be used)."""
    if not path.is_file():
        return None
    try:
        return load_checkpoint(path, model_only=True, advise=False).get(RUN_ID)
    except CheckpointError:
        return None


def limited(cfg: RunConfig) -> dict:
    """run.json's mark of a quick debug run (train.limit_batches): an epoch of it saw only its
    first batches, and the run must not pass for a full one (every metrics row says so too)."""
    return {M.LIMIT_BATCHES: cfg.train.limit_batches} if cfg.train.limit_batches else {}


def stop_message(trainer) -> str:
    """Why an early-stopped run ended, for the progress output and a resume that trains nothing."""
    since = trainer.epoch - trainer.best_epoch
    return (f"stopped early at epoch {trainer.epoch}: the validation bound has not improved for {since} epoch"
            f"{'s' if since != 1 else ''} (--early-stop {trainer.cfg.train.early_stop}); the best epoch is "
            f"{trainer.best_epoch} (validation loss {-trainer.best_bound:.2f}), kept in {trainer.run_dir / BEST_CHECKPOINT}")


def diverged(trainer, batch: int, skipped: int = 0):
    """Raise TrainingDiverged, saying what is kept and what to try (``skipped``: the run stops
    because more steps than optim.max_skipped_steps were non-finite)."""
    where = f"the loss became NaN or infinite in epoch {trainer.epoch + 1} (batch {batch + 1}); training stopped"
    if skipped:
        limit = trainer.cfg.optim.max_skipped_steps
        where = (f"{skipped} training steps had a NaN or infinite loss or gradient (the last in epoch "
                 f"{trainer.epoch + 1}, batch {batch + 1}), more than the {limit} that --max-skipped-steps "
                 "allows to be left out; training stopped")
    hint = "try a smaller --lr, --grad-clip, or a --min-log-var floor for a gaussian likelihood"
    if trainer.lifecycle.pending:
        target = trainer.lifecycle.new_run.target
        raise TrainingDiverged(f"{where}. The new run was discarded and {target} is unchanged; {hint}.")
    if (trainer.run_dir / CHECKPOINT).is_file():
        # a resume would repeat the same steps exactly (and diverge again): only new settings help
        raise TrainingDiverged(f"{where}. The last good checkpoint (epoch {trainer.saved_epoch}) is kept in "
                               f"{trainer.run_dir / CHECKPOINT} (status failed) and can be evaluated and "
                               f"plotted; to train on, start a new run: {hint}.")
    raise TrainingDiverged(f"{where}, before any checkpoint (status failed). Start again with other "
                           f"settings: `aevb train --out {trainer.run_dir} --overwrite ...`; {hint}.")


def data_fingerprint(cfg: RunConfig) -> Optional[dict]:
    """The fingerprint of ``array:`` / ``folder:`` data (None for named data sets)."""
    return fingerprint_of(cfg.data.dataset)


def check_fingerprint(run: Run, cfg: RunConfig) -> None:
    """Refuse to continue a run on ``array:`` / ``folder:`` data that changed since it started."""
    then = run.info.get("data_fingerprint")
    if not then:
        return
    now = data_fingerprint(cfg)
    if now is None or now.get("sha256") != then.get("sha256"):
        raise RunError(f"--resume {run.path}: the data {describe_change(cfg.data.dataset, then, now)}; the run "
                       "would continue on other data. Put the original data back, or train a new run on the "
                       "new data (--out)")


def distributed_device(device: torch.device, asked: str, dist) -> torch.device:
    """Under torchrun: CUDA means this process's GPU (cuda:LOCAL_RANK); CPU stays CPU."""
    if device.type == "cuda":
        return torch.device("cuda", dist.local_rank % torch.cuda.device_count())
    if device.type == "cpu":
        return device
    if asked == "auto":
        return torch.device("cpu")
    raise ConfigError(f"--device {asked}: several processes (torchrun) train on cpu or cuda only")


def place_splits(data: Dataset, device: torch.device) -> Dict[str, Split]:
    """The splits where training reads them: in-memory splits on ``device`` (a GPU keeps them
    whole, compact, when they take under half its free memory), streamed ones stay on disk."""
    out = {}
    for name, split in data.splits().items():
        if device.type == "cuda" and not split.streamed:
            free, _ = torch.cuda.mem_get_info(device)
            if split.nbytes < free // 2:
                split = split.to(device)
        elif device.type != "cuda" and not split.streamed:
            split = split.to(device)
        out[name] = split
    return out


def load_data(cfg: RunConfig, data=None, run: Union[str, Path, None] = None) -> Dataset:
    """The run's data set (see aevb.data.load_configured); a --cache-dir is checked first like
    every output (never inside a run's own files). ``data``: the data of a run trained on data
    given in memory, which must be the same (``run`` names the run in messages)."""
    check_cache_dir(cfg)
    return load_configured(cfg.data, progress=bool(cfg.train.progress), data=data, run=run, exact=data is not None,
                           ask=f"resume it with the same data from Python: aevb.resume({str(run)!r}, data=...)")


def check_cache_dir(cfg: RunConfig) -> None:
    if cfg.data.cache_dir:
        check_output(Path(cfg.data.cache_dir).expanduser(), "--cache-dir", folder=True)


def check_data_for_likelihood(cfg: RunConfig, data: Dataset) -> None:
    """Refuse data the chosen likelihood cannot model (e.g. values outside [0, 1] for Bernoulli)."""
    lik = get_likelihood(cfg.model.likelihood, sigma=cfg.model.sigma, mean_activation=cfg.model.mean_activation,
                         components=cfg.model.components)
    try:
        lik.check_levels(data.levels, data.kind, data.dynamic_binarization, data.name)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for name, split in data.splits().items():
        # 8-bit and binary storage cannot hold other values than its first rows show the kind of;
        # float storage is checked whole, a block at a time
        step = split.block_rows()
        blocks = [split.rows(0, step)] if split.storage_dtype == "uint8" else split.batches(step)
        for xb in blocks:
            try:
                lik.check_data(xb, f"the {name} split of {data.name}")
            except ValueError as e:
                raise ConfigError(str(e)) from None


def check_networks_for_data(cfg: RunConfig, data: Dataset) -> None:
    """Refuse conv networks that cannot produce the data's image shape (before any file is written)."""
    m = cfg.model
    if "conv" in (m.encoder_network, m.decoder_network):
        check_fits(data.image_shape, m.channels, m.kernel_size, f"conv network on {data.name}")
