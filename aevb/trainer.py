"""The training loop: minibatch stochastic gradient ascent on a bound, with exact resume.

Minibatches are the rows of a seeded permutation, taken from the data set's splits (in memory,
on the device when they fit, or streamed from the on-disk cache with read-ahead; the same
shuffle gives the same numbers either way), so an epoch does no per-sample Python work. Every epoch ends with the test
(and validation) bound, a metrics row, image grids and an atomic checkpoint that holds the model,
optimizer, schedule, epoch, step and every RNG state: a resumed run continues exactly.
Under ``torchrun`` the same loop trains data-parallel (see aevb/distributed.py).
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .version import __version__
from . import distributed
from .bounds import dataset_bound, elbo_sums
from .config import ConfigError, RunConfig, diff, resolve
from .data import Dataset, Split, load_configured
from .data.base import as_split
from .images import save_grid
from .io import CHECKPOINT_KEYS, CheckpointError, DiskFullError, atomic_write_csv, atomic_write_text, load_checkpoint, save_checkpoint
from .lock import RunLock
from .model import VAE, BoundTerms
from .runs import (CHECKPOINT, NewRun, Run, RunError, check_new_out, create_run_folder, is_run,
                   read_marker, recover_siblings, remove_orphans, resolve_device, write_marker)


from .errors import TrainingDiverged

# Options that may differ when a run is resumed: they change where or how long, not what.
RESUMABLE_CHANGES = {"train.epochs", "train.device", "train.threads", "train.progress",
                     "train.tensorboard", "train.eval_batch_size", "train.images_every",
                     "data.data_dir", "data.download", "data.memory_budget", "data.cache_dir"}


# ---------------------------------------------------------------------------- building blocks
def build_optimizer(params, cfg) -> torch.optim.Optimizer:
    """Adam, Adagrad or SGD from an OptimConfig; weight decay is L2 on every parameter.

    The fused implementations (one kernel over all parameters, CPU and CUDA) are used where this
    PyTorch has them: on a 2-core CPU they halve the optimizer's share of a step."""
    params = list(params)
    if cfg.optimizer == "adam":
        make = lambda **kw: torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kw)
    elif cfg.optimizer == "adagrad":
        make = lambda **kw: torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kw)
    elif cfg.optimizer == "sgd":
        make = lambda **kw: torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                            momentum=cfg.momentum, **kw)
    else:
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose adam, adagrad or sgd")
    devices = {p.device.type for p in params}
    if len(devices) == 1 and devices <= {"cpu", "cuda"}:
        try:
            return make(fused=True)
        except (RuntimeError, TypeError, ValueError):  # no fused kernel for this build or device
            pass
    return make()


def build_scheduler(opt, cfg, epochs: int):
    """A learning-rate schedule stepped once per epoch."""
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=1.0)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_epochs, gamma=cfg.gamma)
    if cfg.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.gamma)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    raise ConfigError(f"unknown schedule {cfg.schedule!r}")


def objective_terms(model: VAE, x: Tensor, obj) -> BoundTerms:
    """The training bound per datapoint: the SGVB ELBO (L samples, closed-form or MC KL) or
    the IWAE bound L_k, with its reconstruction and KL terms for logging."""
    if obj.objective == "iwae":
        return model.iwae(x, obj.k)
    return model.elbo(x, n_samples=obj.samples, kl=obj.kl)


def batch_loss(terms: BoundTerms, obj, beta: float, total: Optional[int] = None) -> Tensor:
    """The minimised loss: minus the mean bound (KL weighted by ``beta`` for the ELBO).

    ``total``: the global batch size when ``terms`` hold one process's shard of it; the loss is
    then minus the shard's sum over ``total``, so the gradients of all shards add up to the
    gradient of the global batch's mean (what data-parallel training sums over processes)."""
    if obj.objective == "iwae" or beta == 1.0:
        per_point = terms.bound
    else:
        per_point = terms.log_px_given_z - beta * terms.kl
    return -per_point.mean() if total is None else -per_point.sum() / total


def kl_weight(obj, epoch_progress: float) -> float:
    """beta, ramped linearly from 0 over ``warmup_epochs`` (fractional epochs count)."""
    if obj.warmup_epochs and epoch_progress < obj.warmup_epochs:
        return obj.beta * epoch_progress / obj.warmup_epochs
    return obj.beta


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Learning-rate factor of step ``step`` (0-based) under a linear warm-up over ``warmup_steps``."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
def training_precision(device: torch.device, precision: str):
    """The autocast context of a training step: ``bf16`` runs the networks' matrix products and
    convolutions in bfloat16 (about 2x faster convolutions on CPUs with AMX / AVX512-BF16 and on
    recent GPUs); the VAE casts their outputs back, so the bound is summed in float32."""
    enabled = precision == "bf16" and device.type in ("cpu", "cuda")
    return torch.autocast(device_type=device.type if enabled else "cpu", dtype=torch.bfloat16, enabled=enabled)


def binarize_batch(x: Tensor, dynamic: bool) -> Tensor:
    """Dynamic binarization: a fresh x ~ Bernoulli(x) every time a batch is used."""
    return torch.bernoulli(x) if dynamic else x


def rng_state(shuffle: torch.Generator) -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "shuffle": shuffle.get_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": random.getstate(),
    }


def set_rng_state(state: dict, shuffle: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    shuffle.set_state(state["shuffle"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def _write_metrics(path: Path, history: List[dict]) -> None:
    atomic_write_text(path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    atomic_write_csv(path / "metrics.csv", history)


# ---------------------------------------------------------------------------- the trainer
class Callback:
    """Hooks a trainer calls; override what you need."""

    def on_epoch_end(self, trainer: "Trainer", record: dict) -> None:
        pass

    def on_train_end(self, trainer: "Trainer") -> None:
        pass


class Trainer:
    """Trains one run into a folder. Use ``Trainer.new`` or ``Trainer.resume``, then ``fit()``.

    Attributes: ``cfg`` (resolved RunConfig), ``run_dir``, ``data`` (Dataset), ``model``,
    ``optimizer``, ``scheduler``, ``epoch`` (completed epochs), ``step``, ``history``.
    """

    def __init__(self, cfg: RunConfig, run_dir: Path, data: Dataset, state: Optional[dict] = None,
                 callbacks: Sequence[Callback] = ()):
        self.cfg, self.run_dir, self.data = cfg, Path(run_dir), data
        self.callbacks = list(callbacks)
        t = cfg.train
        if t.threads:
            torch.set_num_threads(int(t.threads))
        self.dist = distributed.init()
        self.device = resolve_device(t.device)
        if self.dist.enabled:
            self.device = _distributed_device(self.device, t.device, self.dist)
        if state is None:
            torch.manual_seed(t.seed)  # model initialisation and the noise stream
            np.random.seed(t.seed % 2 ** 32)
            random.seed(t.seed)
            self.model = VAE.from_config(cfg.model, data.dim, data.image_shape)
            if self.dist.rank > 0:  # the same initial model, but every process its own noise
                _seed_noise(distributed.rank_seed(t.seed, self.dist.rank))
        else:
            self.model = VAE.from_config(cfg.model, data.dim, data.image_shape)
            with _checkpoint_errors(run_dir):
                self.model.load_state_dict(state["model"])
        self.model.to(self.device).train()
        distributed.broadcast_module(self.model)
        self.optimizer = build_optimizer(self.model.parameters(), cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, t.epochs)
        self.shuffle = torch.Generator().manual_seed(t.seed)
        self.epoch, self.step, self.history = 0, 0, []
        if state is not None:
            with _checkpoint_errors(run_dir):
                self.optimizer.load_state_dict(state["optimizer"])
                self.scheduler.load_state_dict(state["scheduler"])
                self.epoch, self.step = int(state["epoch"]), int(state["step"])
                self.history = list(state["history"])
                self._restore_rng(state)
        self.splits = _place(data, self.device)
        self.sample_z = torch.randn(64, cfg.model.latent_dim, generator=torch.Generator().manual_seed(t.seed + 2))
        self._writer = None
        self._lock: Optional[RunLock] = None  # this process's lock on run_dir (rank 0)
        self._new_run: Optional[NewRun] = None  # a new run (maybe replacing an old one on its first epoch)
        self._resumed = False  # config.json and run.json are rewritten only once an epoch has trained
        self.saved_epoch = self.epoch  # the epoch of the checkpoint on disk

    def _restore_rng(self, state: dict) -> None:
        """Every process gets back its own RNG states when the run continues with as many
        processes as it was saved with; otherwise the shuffling stream (shared by all processes)
        is restored and the other processes draw fresh noise, with a warning."""
        saved = int(state.get("world_size", 1))
        rank, world = self.dist.rank, self.dist.world_size
        if saved == world and rank > 0:
            set_rng_state(state["rng_ranks"][rank], self.shuffle)
            return
        set_rng_state(state["rng"], self.shuffle)
        if saved != world:
            if rank > 0:
                _seed_noise(distributed.rank_seed(self.cfg.train.seed + 1_000_003 * self.epoch, rank))
            else:
                print(f"aevb train: warning: {self.run_dir} was trained with {saved} process(es) and "
                      f"continues with {world}; training goes on correctly (same global batch size), "
                      "but not value for value as a run never stopped", file=sys.stderr, flush=True)

    # -------------------------------------------------------------- construction
    @classmethod
    def new(cls, cfg: RunConfig, out: Union[str, Path], overwrite: bool = False,
            data: Optional[Dataset] = None, callbacks: Sequence[Callback] = ()) -> "Trainer":
        """Start a fresh run in ``out``. Loads the data, resolves and checks the config, the data
        against the likelihood and the device, and only then creates (and locks) the folder.
        With ``overwrite`` an existing run is replaced only once the new one has trained its
        first epoch (aevb.runs.NewRun); until then it is untouched."""
        out = Path(out)
        dist = distributed.init()
        given_data = data

        def prepare():
            # Under torchrun, rank 0 checks the folder, loads (maybe downloads) the data and
            # creates the run first; the others load the data after it, and an error on any
            # rank stops every rank (see distributed.staged).
            if dist.is_main:
                check_new_out(out, overwrite)
            data = given_data if given_data is not None else load_data(cfg)
            rcfg = resolve(cfg, data.kind, data.name)
            check_data_for_likelihood(rcfg, data)
            check_networks_for_data(rcfg, data)
            resolve_device(rcfg.train.device)  # an unavailable device is refused before writing
            if not dist.is_main:
                return rcfg, data, None
            fingerprint = data_fingerprint(rcfg) if given_data is None else None
            if fingerprint and fingerprint.get("duplicates"):
                print(f"aevb train: warning: {fingerprint['duplicates']} of the {fingerprint['files']} images in "
                      f"{rcfg.data.dataset} repeat another file byte for byte; copies may fall in both the "
                      "training and the test split", file=sys.stderr)
            new_run = create_run_folder(out, overwrite)
            try:
                write_marker(new_run.folder, "running", aevb_version=__version__, dataset=data.name,
                             **({"data_fingerprint": fingerprint} if fingerprint else {}))
                rcfg.save(new_run.folder / "config.json")
            except BaseException:
                new_run.abandon()
                raise
            return rcfg, data, new_run

        cfg, data, new_run = distributed.staged(prepare)
        try:
            trainer = cls(cfg, new_run.folder if new_run else out, data, callbacks=callbacks)
        except BaseException:
            if new_run is not None:
                new_run.abandon()
            raise
        trainer._new_run = new_run
        trainer._lock = new_run.lock if new_run else None
        return trainer

    @classmethod
    def resume(cls, run_dir: Union[str, Path], overrides: Optional[RunConfig] = None,
               given: Sequence[str] = (), callbacks: Sequence[Callback] = ()) -> "Trainer":
        """Continue the run in ``run_dir`` from its last checkpoint (or from scratch, with its
        saved config, when it stopped before its first checkpoint). ``overrides`` holds options
        the user gave (dotted names in ``given``); any that contradict the saved config, except
        those in RESUMABLE_CHANGES (e.g. more epochs), raise ConfigError. Nothing in the run
        folder changes until an epoch has trained."""
        dist = distributed.init()
        held = {}  # rank 0: the run and its lock

        def read():
            # Under torchrun rank 0 reads the run and hands it to the others (no shared folder
            # needed); an error there stops every rank (see distributed.staged).
            if not dist.is_main:
                return None
            run = Run(run_dir)
            held["lock"] = RunLock(run.path).acquire("resume")
            held["run"] = run
            recover_siblings(run.path)  # what an --overwrite killed before its swap left beside it
            cfg, state = _read_resume(run, overrides, given)
            return (cfg, state) if not dist.enabled else (cfg.to_dict(), state)

        try:
            if not dist.enabled:
                cfg, state = read()
            else:
                got = distributed.broadcast_object(distributed.staged(read))
                cfg, state = RunConfig.from_dict(got[0]), got[1]
            run_path = Path(run_dir)

            def prepare():
                data = load_data(cfg)
                if state is not None and data.dim != int(state["data_dim"]):
                    raise RunError(f"the data set now has {data.dim} values per datapoint but the run was "
                                   f"trained on {state['data_dim']}; check --data-dir")
                if dist.is_main:
                    check_fingerprint(held["run"], cfg)
                resolve_device(cfg.train.device)
                return data

            data = distributed.staged(prepare)
            trainer = cls(cfg, run_path, data, state=state, callbacks=callbacks)
        except BaseException:
            if "lock" in held:
                held["lock"].release()
            raise
        trainer._lock, trainer._resumed = held.get("lock"), True
        return trainer

    # -------------------------------------------------------------- the loop
    def fit(self) -> List[dict]:
        """Train until ``cfg.train.epochs`` epochs are done; returns the metrics history.

        On any failure the run's status says so (failed / interrupted; RUN/error.log holds the
        traceback of an unexpected error), the last checkpoint is kept, and a replacement
        (``--overwrite``) that had not trained an epoch is deleted, leaving the old run as it was.
        A resume that trains nothing changes no file."""
        t = self.cfg.train
        main = self.dist.is_main  # under torchrun only rank 0 writes files and runs callbacks
        if self.epoch >= t.epochs:
            if main and self.unfinished:  # every epoch trained, but the end failed: finish it now
                try:
                    for cb in self.callbacks:
                        cb.on_train_end(self)
                    write_marker(self.run_dir, "finished", epoch=self.epoch)
                finally:
                    self._end()
            self._end()
            return self.history
        if main:
            remove_orphans(self.run_dir)
        first = self.epoch
        try:
            while self.epoch < t.epochs:
                record = self.train_epoch()
                if main and self.epoch == first + 1:
                    self._started()
                if main:
                    for cb in self.callbacks:
                        cb.on_epoch_end(self, record)
            if main:
                for cb in self.callbacks:
                    cb.on_train_end(self)
                write_marker(self.run_dir, "finished", epoch=self.epoch)
        except BaseException as e:
            if main and isinstance(e, DiskFullError) and not (self._new_run and self._new_run.pending):
                e = DiskFullError(e.path, e.needed, advice=self._continue_advice("free some space on that disk"))
            if main:
                self._failed(e, trained=self.epoch > first)
            self._end()
            if isinstance(e, DiskFullError):
                raise e from None
            raise
        self._end()
        return self.history

    def _continue_advice(self, first: str) -> str:
        if self.saved_epoch:
            return (f"the last checkpoint (epoch {self.saved_epoch}) is kept; {first}, then continue with "
                    f"`aevb train --resume {self.run_dir}`")
        return f"no epoch was saved; {first}, then start again with `aevb train --resume {self.run_dir}`"

    @property
    def unfinished(self) -> bool:
        """A resumed run that trained all its epochs but whose status is not 'finished' (its end,
        e.g. the report, failed)."""
        return (self._resumed and self.epoch >= self.cfg.train.epochs and self.epoch > 0
                and (read_marker(self.run_dir) or {}).get("status") != "finished")

    def _started(self) -> None:
        """The first epoch of this session trained: a replacement takes the old run's place, a
        resumed run records its (maybe changed) config and status."""
        if self._new_run is not None and self._new_run.pending:
            self._close()  # TensorBoard reopens in the final folder
            self.run_dir = self._new_run.commit()
        if self._resumed:
            self.cfg.save(self.run_dir / "config.json")
            write_marker(self.run_dir, "running", epoch=self.epoch)

    def _failed(self, e: BaseException, trained: bool) -> None:
        """Record a failure in the run folder (see fit)."""
        if self._new_run is not None and self._new_run.pending:
            self._new_run.abandon()  # the old run was never touched
            return
        if self._resumed and not trained:
            return  # nothing trained: the run is still what it was
        try:
            if isinstance(e, KeyboardInterrupt):
                write_marker(self.run_dir, "interrupted", epoch=self.epoch)
            elif isinstance(e, DiskFullError):
                write_marker(self.run_dir, "failed", epoch=self.saved_epoch, reason=str(e))
            elif isinstance(e, TrainingDiverged):
                write_marker(self.run_dir, "failed", epoch=self.saved_epoch, reason="loss became NaN or infinite")
            elif isinstance(e, Exception):
                log = self.run_dir / "error.log"
                write_marker(self.run_dir, "failed", epoch=self.epoch,
                             reason=f"{type(e).__name__}: {' '.join(str(e).split())[:300]} (see error.log)")
                e.aevb_log = log
        except OSError:
            pass  # the original error matters more than the status

    def _end(self) -> None:
        self._close()
        if self._lock is not None:
            self._lock.release()

    def train_epoch(self) -> dict:
        cfg, t, obj = self.cfg, self.cfg.train, self.cfg.objective
        train_split = self.splits["train"]
        n, bs = len(train_split), t.batch_size
        n_batches = (n + bs - 1) // bs
        dynamic = self.data.dynamic_binarization
        perm = torch.randperm(n, generator=self.shuffle)
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        rank, world, sharded = self.dist.rank, self.dist.world_size, self.dist.enabled
        local_seen = 0
        t0 = time.perf_counter()
        bar = self._bar(n_batches)
        self.model.train()
        batch_idx = [perm[b * bs:(b + 1) * bs] for b in range(n_batches)]
        if sharded:  # this process's share of each global batch
            totals = [len(i) for i in batch_idx]
            batch_idx = [i[rank::world] for i in batch_idx]
        for b, xb in enumerate(train_split.batches(batch_idx, self.device)):
            beta = kl_weight(obj, self.epoch + b / n_batches)
            if sharded:
                total = totals[b]
                local_seen += len(xb)
            xb = binarize_batch(xb, dynamic)
            with training_precision(self.device, t.precision):
                terms = objective_terms(self.model, xb, obj)
            loss = batch_loss(terms, obj, beta, total if sharded else None)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if sharded:  # sum over processes: the gradient of the global batch's mean
                distributed.all_reduce_gradients(self.model.parameters())
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            warm = warmup_factor(self.step, cfg.optim.warmup_steps)
            if warm < 1.0:  # the epoch's scheduled rate, scaled for this step only
                scheduled = [g["lr"] for g in self.optimizer.param_groups]
                for g in self.optimizer.param_groups:
                    g["lr"] *= warm
            self.optimizer.step()
            if warm < 1.0:
                for g, lr in zip(self.optimizer.param_groups, scheduled):
                    g["lr"] = lr
            self.step += 1
            with torch.no_grad():
                sums += torch.stack([terms.bound.sum(), terms.log_px_given_z.sum(), terms.kl.sum()]).double()
            if bar is not None and (b % 20 == 0 or b == n_batches - 1):
                seen = local_seen if sharded else min((b + 1) * bs, n)
                running = sums[0].item() / max(seen, 1)
                if not math.isfinite(running) and not sharded:  # sharded: checked after the epoch, on all ranks
                    self._diverged(b)
                bar.set_postfix_str(f"loss {-running:.2f} nats")
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        distributed.all_reduce_sum(sums)
        train = (sums / n).tolist()
        if not all(math.isfinite(v) for v in train):
            self._diverged(n_batches - 1)
        train_time = time.perf_counter() - t0
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.epoch += 1
        record = {"epoch": self.epoch, "step": self.step,
                  "train_bound": train[0], "train_log_px_given_z": train[1], "train_kl": train[2]}
        for name in ("test", "valid"):
            if name not in self.splits:
                continue
            m = self._split_bound(self.splits[name])
            if not math.isfinite(m["bound"]):
                self._diverged(n_batches - 1)
            record.update({f"{name}_bound": m["bound"], f"{name}_log_px_given_z": m["log_px_given_z"],
                           f"{name}_kl": m["kl"]})
        record.update({"beta": kl_weight(obj, self.epoch - 1) if obj.objective == "elbo" else 1.0,
                       "lr": lr, "train_time_s": train_time,
                       "epoch_time_s": time.perf_counter() - t0})
        self.history.append(record)
        self._epoch_outputs(record)
        self._log(record)
        return record

    def _split_bound(self, x: Split) -> Dict[str, float]:
        """dataset_bound of a test/validation split; under torchrun every process takes a
        contiguous share of the rows (its own noise seed) and the sums are added up."""
        t = self.cfg.train
        if not self.dist.enabled:
            return dataset_bound(self.model, x, t.eval_batch_size, self.data.dynamic_binarization, seed=t.seed + 1)
        share = x.subset(np.array_split(np.arange(len(x)), self.dist.world_size)[self.dist.rank])
        sums = elbo_sums(self.model, share, t.eval_batch_size, self.data.dynamic_binarization,
                          seed=distributed.rank_seed(t.seed + 1, self.dist.rank))
        s = (distributed.all_reduce_sum(sums) / len(x)).tolist()
        return {"bound": s[0], "log_px_given_z": s[1], "kl": s[2]}

    # -------------------------------------------------------------- outputs
    def _epoch_outputs(self, record: dict) -> None:
        if self.dist.enabled:
            state = self.checkpoint_state()  # a collective: every rank takes part
            if not self.dist.is_main:
                return
            save_checkpoint(state, self.run_dir / CHECKPOINT)
            self.saved_epoch = self.epoch
            self._epoch_files(record, checkpoint=False)
            return
        self._epoch_files(record)

    def _epoch_files(self, record: dict, checkpoint: bool = True) -> None:
        t = self.cfg.train
        if checkpoint:  # first: if it cannot be written, nothing else of this epoch is
            self.write_checkpoint()
        _write_metrics(self.run_dir, self.history)
        if t.images_every and (self.epoch % t.images_every == 0 or self.epoch == t.epochs):
            self.write_images(self.run_dir / "images", suffix=f"_epoch{self.epoch:03d}")
        w = self.writer
        if w is not None:
            for k, v in record.items():
                if k not in ("epoch", "step"):
                    w.add_scalar(k.replace("_", "/", 1), v, self.epoch)
            w.flush()

    @torch.no_grad()
    def write_images(self, folder: Path, suffix: str = "") -> Dict[str, Path]:
        """8 test images over their reconstructions, and 64 samples (likelihood means) from a
        fixed set of prior draws, so grids of successive epochs are comparable."""
        self.model.eval()
        shape = self.data.image_shape
        x = self.splits["test"].rows(0, 8, self.device)
        rec = self.model.reconstruct(x)
        samples = self.model.likelihood.mean(self.model.decode(self.sample_z.to(self.device)))
        self.model.train()
        out = {"reconstructions": save_grid(folder / f"reconstructions{suffix}.png", torch.cat([x, rec]), shape, 8),
               "samples": save_grid(folder / f"samples{suffix}.png", samples, shape, 8)}
        w = self.writer
        if w is not None:
            from .images import grid

            for name, path in out.items():
                g = grid(torch.cat([x, rec]) if name == "reconstructions" else samples, shape, 8)
                w.add_image(name, g, self.epoch, dataformats="HWC")
        return out

    def checkpoint_state(self) -> dict:
        """Everything a resume needs. Under torchrun it also holds every process's RNG states
        (``rng_ranks``) and ``world_size``; call it on every rank then (it gathers)."""
        state = {
            "format": "aevb-checkpoint", "version": 1, "aevb_version": __version__,
            "epoch": self.epoch, "step": self.step,
            "data_dim": self.data.dim, "image_shape": list(self.data.image_shape),
            "config": json.dumps(self.cfg.to_dict()),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng_state(self.shuffle),
            "history": self.history,
        }
        if self.dist.enabled:
            state["world_size"] = self.dist.world_size
            state["rng_ranks"] = distributed.all_gather_object(state["rng"])
        return state

    def write_checkpoint(self) -> Path:
        path = self.run_dir / CHECKPOINT
        save_checkpoint(self.checkpoint_state(), path)
        self.saved_epoch = self.epoch
        return path

    @property
    def writer(self):
        if self._writer is None and self.cfg.train.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: the CSV/JSON metrics still exist
                self.cfg.train.tensorboard = False
                return None
            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        return self._writer

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _bar(self, total: int):
        if not self.cfg.train.progress or not self.dist.is_main:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"epoch {self.epoch + 1}/{self.cfg.train.epochs}", unit="batch",
                    leave=False, dynamic_ncols=True, disable=None, file=sys.stderr)

    def _log(self, r: dict) -> None:
        if not self.cfg.train.progress or not self.dist.is_main:
            return
        done, total = self.epoch, self.cfg.train.epochs
        per_epoch = sum(h["epoch_time_s"] for h in self.history[-5:]) / len(self.history[-5:])
        eta = per_epoch * (total - done)
        extra = f"  valid {-r['valid_bound']:.2f}" if "valid_bound" in r else ""
        print(f"epoch {done:>3}/{total}  train loss {-r['train_bound']:.2f}  test loss {-r['test_bound']:.2f}"
              f"{extra}  (-bound, nats/datapoint)  KL {r['test_kl']:.2f}  {r['epoch_time_s']:.1f}s"
              f"  ETA {_fmt_time(eta)}", file=sys.stderr, flush=True)

    def _diverged(self, batch: int):
        where = f"the loss became NaN or infinite in epoch {self.epoch + 1} (batch {batch + 1}); training stopped"
        hint = "try a smaller --lr, --grad-clip, or a --min-log-var floor for a gaussian likelihood"
        if self._new_run is not None and self._new_run.pending:
            target = self._new_run.target
            raise TrainingDiverged(f"{where}. The new run was discarded and {target} is unchanged; {hint}.")
        if (self.run_dir / CHECKPOINT).is_file():
            # a resume would repeat the same steps exactly (and diverge again): only new settings help
            raise TrainingDiverged(f"{where}. The last good checkpoint (epoch {self.epoch}) is kept in "
                                   f"{self.run_dir / CHECKPOINT} (status failed) and can be evaluated and "
                                   f"plotted; to train on, start a new run: {hint}.")
        raise TrainingDiverged(f"{where}, before any checkpoint (status failed). Start again with other "
                               f"settings: `aevb train --out {self.run_dir} --overwrite ...`; {hint}.")


# ---------------------------------------------------------------------------- helpers
RESUME_KEYS = CHECKPOINT_KEYS + ("optimizer", "scheduler", "rng", "history")


def _read_resume(run: Run, overrides: Optional[RunConfig], given: Sequence[str]):
    """(config, checkpoint state) of the run to continue, with the allowed overrides applied.
    The state is None for a run that stopped before its first checkpoint: it starts again from
    scratch with its saved config."""
    cfg = run.config
    if overrides is not None:
        clashes = [k for k in diff(cfg, overrides) if k in given and k not in RESUMABLE_CHANGES]
        if clashes:
            detail = "; ".join(f"{k}: run has {_get(cfg, k)!r}, asked {_get(overrides, k)!r}" for k in clashes)
            raise ConfigError(f"--resume {run.path}: options contradict the run's config ({detail}). "
                              "Drop them to continue the run as configured, or start a new run.")
        for k in given:
            if k in RESUMABLE_CHANGES:
                _set(cfg, k, _get(overrides, k))
    if not run.checkpoint_path.exists():
        if run.info.get("status") == "finished":
            raise RunError(f"{run.path} says it finished but its checkpoint {CHECKPOINT} is missing; the run "
                           "folder is damaged: restore the checkpoint, or train a new run")
        return cfg, None
    return cfg, load_checkpoint(run.checkpoint_path, required=RESUME_KEYS)


def data_fingerprint(cfg: RunConfig) -> Optional[dict]:
    from .data.fingerprint import fingerprint

    return fingerprint(cfg.data.dataset)


def check_fingerprint(run: Run, cfg: RunConfig) -> None:
    """Refuse to continue a run on ``array:`` / ``folder:`` data that changed since it started."""
    from .data.fingerprint import describe_change

    then = run.info.get("data_fingerprint")
    if not then:
        return
    now = data_fingerprint(cfg)
    if now is None or now.get("sha256") != then.get("sha256"):
        raise RunError(f"--resume {run.path}: the data {describe_change(cfg.data.dataset, then, now)}; the run "
                       "would continue on other data. Put the original data back, or train a new run on the "
                       "new data (--out)")


@contextlib.contextmanager
def _checkpoint_errors(run_dir):
    """A checkpoint whose parts do not fit the run's config is a CheckpointError, not a crash."""
    try:
        yield
    except (KeyError, IndexError, RuntimeError, ValueError, TypeError) as e:
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        raise CheckpointError(f"the checkpoint of {run_dir} does not fit its config.json ({type(e).__name__}: "
                              f"{detail}); the run folder is damaged") from None


def _distributed_device(device: torch.device, asked: str, dist) -> torch.device:
    """Under torchrun: CUDA means this process's GPU (cuda:LOCAL_RANK); CPU stays CPU."""
    if device.type == "cuda":
        return torch.device("cuda", dist.local_rank % torch.cuda.device_count())
    if device.type == "cpu":
        return device
    if asked == "auto":
        return torch.device("cpu")
    raise ConfigError(f"--device {asked}: several processes (torchrun) train on cpu or cuda only")


def _place(data: Dataset, device: torch.device) -> Dict[str, Split]:
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


def _seed_noise(seed: int) -> None:
    """Seed the global streams that draw this process's training noise."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def load_data(cfg: RunConfig) -> Dataset:
    """The run's data set (see aevb.data.load_configured)."""
    return load_configured(cfg.data, progress=bool(cfg.train.progress))


def check_data_for_likelihood(cfg: RunConfig, data: Dataset) -> None:
    """Refuse data the chosen likelihood cannot model (e.g. values outside [0, 1] for Bernoulli)."""
    from .distributions import get_likelihood

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
        from .convnets import check_fits

        check_fits(data.image_shape, m.channels, m.kernel_size, f"conv network on {data.name}")


def _get(cfg: RunConfig, dotted: str):
    sec, name = dotted.split(".")
    return getattr(getattr(cfg, sec), name)


def _set(cfg: RunConfig, dotted: str, value) -> None:
    sec, name = dotted.split(".")
    setattr(getattr(cfg, sec), name, value)


def _fmt_time(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def train(cfg: RunConfig, out: Union[str, Path], overwrite: bool = False, data: Optional[Dataset] = None,
          callbacks: Sequence[Callback] = ()) -> Optional[Run]:
    """Train a new run into ``out`` and return it (the Python entry point). Under torchrun,
    processes on a machine without the run folder (other than rank 0's) get None."""
    trainer = Trainer.new(cfg, out, overwrite=overwrite, data=data, callbacks=callbacks)
    trainer.fit()
    if not trainer.dist.is_main and not is_run(trainer.run_dir):
        return None
    return Run(trainer.run_dir)
