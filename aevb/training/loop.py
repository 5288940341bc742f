"""The training loop: minibatch stochastic gradient ascent on a bound, with exact resume.

It reads like the textbook loop: for each epoch, shuffle, take minibatches, step on the loss;
then the test (and validation) bound, a metrics row, image grids and an atomic checkpoint that
holds everything a resume needs. The parts around it live beside it: the objective
(objective.py), optimisers (aevb/optimizers.py), checkpoint state (state.py), the run folder's
life cycle (session.py), and metrics, images, TensorBoard and progress (callbacks.py).

Minibatches are the rows of a seeded permutation, taken from the data set's splits (in memory,
on the device when they fit, or streamed from the on-disk cache with read-ahead; the same
shuffle gives the same numbers either way), so an epoch does no per-sample Python work. Under
``torchrun`` the same loop trains data-parallel (see aevb/distributed.py).
"""
from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .. import denormals, distributed, linear, threads
from ..bounds import dataset_bound, elbo_sums, eval_rows
from ..config import RunConfig
from ..data import Dataset, Split
from ..devices import precision_context, resolve_device
from ..errors import ConfigError, DiskFullError, RunError, interruption
from ..io import save_checkpoint
from ..model import VAE
from ..pretrained import upgrade_checkpoint
from ..optimizers import build_optimizer, build_scheduler, warmup_factor
from ..runfolder import remove_orphans
from ..runs import CHECKPOINT, Run, is_run
from .. import metrics as M
from . import session
from .callbacks import (BestCheckpoint, Callback, EarlyStopping, callback_key, ImageGrids, LastCheckpoint, MetricsFiles, ProgressBar,
                        TensorBoard, epoch_images, write_images)
from .objective import (batch_loss, binarize_batch, kl_weight, objective_terms, poison_if_nonfinite,
                        step_is_finite)
from .report import ReportCallback
from .state import checkpoint_errors, checkpoint_state, restore_best, restore_rng, resume_changes, seed_noise


class Trainer:
    """Trains one run into a folder. Use ``Trainer.new`` or ``Trainer.resume``, then ``fit()``.

    Attributes: ``cfg`` (resolved RunConfig), ``run_dir``, ``data`` (Dataset), ``model``,
    ``optimizer``, ``scheduler``, ``epoch`` (completed epochs), ``step``, ``history``,
    ``best_epoch`` and ``best_bound`` (the best validation bound so far; None without a
    validation split), ``stopped_early``, ``method`` (None: gradient ascent on the configured
    bound) and ``should_stop``: a callback sets it to end training after the current step (the
    epoch under way ends there, with its bounds, metrics row and checkpoint).

    ``method``: another way to train the model, such as the paper's wake-sleep or Monte Carlo EM
    baselines (aevb.baselines): a callable ``method(model)`` returning an object with
    ``step(x, idx) -> dict`` (one minibatch ``x`` [B, D] and its rows' positions ``idx`` [B] in
    the training split; it updates the model itself), ``state_dict()`` and ``load_state_dict()``
    (kept in the checkpoint, so that such a run resumes exactly too). Its epochs' training
    columns are empty: the method optimises no bound of its own.
    """

    def __init__(self, cfg: RunConfig, run_dir: Path, data: Dataset, state: Optional[dict] = None,
                 callbacks: Sequence[Callback] = (), model: Optional[torch.nn.Module] = None,
                 method: Optional[Callable] = None):
        self.cfg, self.run_dir, self.data = cfg, Path(run_dir), data
        t = cfg.train
        self.callbacks = list(callbacks)  # the user's, after the built-in ones
        if t.report and not any(isinstance(cb, ReportCallback) for cb in self.callbacks):
            self.callbacks.insert(0, ReportCallback())  # figures and report.html, as `aevb train` writes them
        self.dist = distributed.init()
        self.device = resolve_device(t.device)
        if self.dist.enabled:
            self.device = session.distributed_device(self.device, t.device, self.dist)
        if state is None:
            seed_noise(t.seed)  # model initialisation and the noise stream
            self.model = model if model is not None else VAE.from_config(cfg.model, data.dim, data.image_shape)
            if (cfg.model.center_inputs or cfg.model.output_bias_from_data) and hasattr(self.model, "fit_to_data"):
                self.model.fit_to_data(*data.split("train").moments())  # draws no random numbers
            if self.dist.rank > 0:  # the same initial model, but every process its own noise
                seed_noise(distributed.rank_seed(t.seed, self.dist.rank))
        else:
            self.model = model if model is not None else VAE.from_config(cfg.model, data.dim, data.image_shape)
            with checkpoint_errors(run_dir):
                self.model.load_state_dict(state["model"])
        self.model.to(self.device).train()
        distributed.broadcast_module(self.model)
        if method is not None and self.dist.enabled:
            raise ConfigError("a training method other than the bound's gradient trains in one process; "
                              "run it without torchrun")
        self.method = method(self.model) if method is not None else None
        self.should_stop = False
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, t.epochs)
        self.shuffle = torch.Generator().manual_seed(t.seed)
        self.epoch, self.step, self.history = 0, 0, []
        self.skipped_steps = 0  # non-finite steps left out, over the whole run
        self.batch_losses: List[float] = []  # the last epoch's training loss per step
        self.best = BestCheckpoint()  # the best validation epoch and best.pt
        self.early_stopping = EarlyStopping()
        if state is not None:
            with checkpoint_errors(run_dir):
                if isinstance(self.model, VAE):  # a checkpoint of the layout before latent cells
                    state = upgrade_checkpoint(state, self.model, self.optimizer)
                self.optimizer.load_state_dict(state["optimizer"])
                self.scheduler.load_state_dict(state["scheduler"])
                self.epoch, self.step = int(state["epoch"]), int(state["step"])
                self.skipped_steps = int(state.get("skipped_steps", 0))
                self.history = list(state["history"])
                self.best.epoch, self.best.bound = restore_best(state, self.history)
                restore_rng(self, state)
            restore_parts(self, state)
        self.splits = session.place_splits(data, self.device)
        self.sample_seed = t.seed + 2  # the same prior draws every epoch
        self.tensorboard = TensorBoard(bool(t.tensorboard))
        self.progress = ProgressBar(bool(t.progress) and self.dist.is_main)
        # the built-in callbacks, in the order an epoch's outputs are written: best.pt before last.pt,
        # then metrics, images, TensorBoard and the epoch line; the user's callbacks come after them
        self.builtins: List[Callback] = [self.best, self.early_stopping, LastCheckpoint(), MetricsFiles(),
                                         ImageGrids(), self.tensorboard, self.progress]
        self.epoch_batches = 0  # steps of the epoch under way
        self.epoch_sums: Optional[torch.Tensor] = None  # its applied steps' summed bound, log p(x|z), KL (device)
        self.epoch_count = 0  # and how many datapoints they cover
        self.trained: List[torch.Tensor] = []  # the optimizer's parameters, listed at each epoch's start
        self.saved: List[Path] = []  # checkpoints written this epoch, relative to the run folder
        self.lifecycle = session.RunLifecycle(self.run_dir)  # the run folder's life cycle (new / resume set it up)
        self.saved_epoch = self.epoch  # the epoch of the checkpoint on disk

    # -------------------------------------------------------------- construction
    @classmethod
    def new(cls, cfg: RunConfig, out: Union[str, Path], overwrite: bool = False,
            data: Optional[Dataset] = None, callbacks: Sequence[Callback] = (),
            model: Optional[torch.nn.Module] = None, method: Optional[Callable] = None) -> "Trainer":
        """Start a fresh run in ``out``. Loads the data, resolves and checks the config, the data
        against the likelihood and the device, and only then creates (and locks) the folder.
        With ``overwrite`` an existing run is replaced only once the new one has trained its
        first epoch (aevb.runs.NewRun); until then it is untouched. ``model``: a ready-made
        model (an aevb ``VAE``) trained instead of one built from ``cfg.model``; it is moved to
        the device, and ``fit_to_data`` is still called where the config asks."""
        out = Path(out)
        check_model(model)
        cfg, data, new_run = session.prepare_new(cfg, out, overwrite, data, distributed.init())
        try:
            trainer = cls(cfg, new_run.folder if new_run else out, data, callbacks=callbacks, model=model,
                          method=method)
        except BaseException:
            if new_run is not None:
                new_run.abandon()
            raise
        trainer.lifecycle = session.RunLifecycle(trainer.run_dir, new_run.lock if new_run else None, new_run)
        return trainer

    @classmethod
    def resume(cls, run_dir: Union[str, Path], overrides: Optional[RunConfig] = None,
               given: Optional[Sequence[str]] = None, callbacks: Sequence[Callback] = (),
               model: Optional[torch.nn.Module] = None, data=None, method: Optional[Callable] = None,
               **changes) -> "Trainer":
        """Continue the run in ``run_dir`` from its last checkpoint (or from scratch, with its
        saved config, when it stopped before its first checkpoint).

        Changes come as keyword arguments named like the config fields ``--resume`` accepts
        (``epochs=20``, ``early_stop=5``, ``device="cuda"``; see RESUMABLE_CHANGES), or as a
        whole config ``overrides`` (e.g. the run's ``config`` with some fields changed): every
        option in which it differs from the saved config is a change, or only the dotted names
        in ``given`` (what the command line typed). A change a resume does not allow raises
        ConfigError; nothing is silently ignored. Nothing in the run folder changes until an
        epoch has trained. ``model``: the ready-made model the run was started with (see
        ``new``); its state is loaded from the checkpoint. ``data``: the data again, for a run
        trained on data given in memory (they must be the same: shape, type and checksum).
        ``method``: the training method the run was started with (see the class)."""
        check_model(model)
        dotted = resume_changes(changes)
        cfg, state, data, lock = session.open_resume(run_dir, overrides, given, distributed.init(), dotted, data)
        try:
            trainer = cls(cfg, Path(run_dir), data, state=state, callbacks=callbacks, model=model, method=method)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        trainer.lifecycle = session.RunLifecycle(trainer.run_dir, lock, resumed=True)
        return trainer

    # -------------------------------------------------------------- the loop
    def fit(self) -> List[dict]:
        """Train until ``cfg.train.epochs`` epochs are done, or until the validation bound has not
        improved for ``cfg.train.early_stop`` epochs; returns the metrics history.

        On any failure the run's status says so (failed / interrupted; RUN/error.log holds the
        traceback of an unexpected error), the last checkpoint is kept, and a replacement
        (``--overwrite``) that had not trained an epoch is deleted, leaving the old run as it was.
        A resume that trains nothing changes no file. It runs on ``train.threads`` CPU threads, or
        on as many as suit the size of a step (aevb.threads), and leaves the process's count as it
        was."""
        t = self.cfg.train
        try:
            with threads.using(t.threads, threads.linear_flops(self.model, t.batch_size)):
                return self._fit()
        finally:  # the step's weight-sized buffers (aevb.linear) are not kept with the trained model
            linear.release_buffers(self.model)

    def _fit(self) -> List[dict]:
        t = self.cfg.train
        main = self.dist.is_main  # under torchrun only rank 0 writes files and runs the user's callbacks
        if self.epoch >= t.epochs or self.stopped_early:
            if main and self.unfinished:  # every epoch trained, but the end failed: finish it now
                try:
                    self._hook("on_train_end")
                    self.lifecycle.finished(self)
                finally:
                    self.close()
            self.close()
            return self.history
        if main:
            remove_orphans(self.run_dir)
        first = self.epoch
        if self.history:  # a run stopped early continues (a larger --early-stop): that row no longer ends it
            self.history[-1].pop(M.STOPPED_EARLY, None)
        try:
            self._hook("on_train_start")
            while self.epoch < t.epochs and not self.stopped_early and not self.should_stop:
                record = self.train_epoch()
                if main and self.epoch == first + 1:
                    self.lifecycle.started(self)
                if main:  # the user's callbacks see the run folder where it stays
                    for path in self.saved:
                        self._hook("on_save_checkpoint", self.run_dir / path, builtins=False)
                    self._hook("on_train_epoch_end", record, builtins=False)
            self._hook("on_train_end")
            if main:
                self.lifecycle.finished(self)
        except BaseException as caught:
            e = caught
            if interruption(e) is not None and not isinstance(e, KeyboardInterrupt):
                e = KeyboardInterrupt()  # Ctrl-C that a later error replaced: the run was interrupted
            if main and isinstance(e, DiskFullError) and not self.lifecycle.pending:
                e = DiskFullError(e.path, e.needed, advice=session.continue_advice(self, "free some space on that disk"))
            self._exception_hooks(e)
            if main:
                self.lifecycle.failed(self, e, trained=self.epoch > first)
            self.close()
            if isinstance(e, DiskFullError):
                raise e from None
            if e is not caught:
                raise e from caught
            raise
        self.close()
        return self.history

    def _hook(self, name: str, *args, builtins: bool = True, user: bool = True) -> None:
        """Call hook ``name`` of the built-in callbacks (those that every process needs on every
        rank, the others on rank 0), then of the user's (rank 0)."""
        main = self.dist.is_main
        for cb in (self.builtins if builtins else []) + (self.callbacks if user else []):
            if main or getattr(cb, "every_rank", False):
                getattr(cb, name)(self, *args)

    def _exception_hooks(self, error: BaseException) -> None:
        """``on_exception`` of every callback; a callback that fails there is reported on stderr and
        does not replace the error that stopped training."""
        main = self.dist.is_main
        for cb in self.builtins + self.callbacks:
            if main or getattr(cb, "every_rank", False):
                try:
                    cb.on_exception(self, error)
                except Exception as failure:
                    print(f"aevb: warning: {type(cb).__name__}.on_exception failed: {type(failure).__name__}: "
                          f"{failure}", file=sys.stderr)

    @property
    def unfinished(self) -> bool:
        """A resumed run that trained all its epochs (or stopped early) but whose status is not 'finished'."""
        return self.lifecycle.unfinished(self)

    @property
    def stopped_early(self) -> bool:
        """The validation bound has not improved for ``cfg.train.early_stop`` epochs: training ends."""
        return self.early_stopping.due(self)

    @property
    def best_epoch(self) -> Optional[int]:
        """The epoch with the best validation bound so far (None without a validation split)."""
        return self.best.epoch

    @property
    def best_bound(self) -> Optional[float]:
        return self.best.bound

    def diverged(self, batch: int, skipped: int = 0):
        """Raise TrainingDiverged for a non-finite loss in ``batch`` of the epoch under way."""
        session.diverged(self, batch, skipped=skipped)

    def close(self) -> None:
        """Close what this trainer opened: TensorBoard's files and the lock on the run folder (fit
        does it; call it for a trainer that will not fit)."""
        self.tensorboard.close()
        self.lifecycle.close()

    def train_epoch(self) -> dict:
        """One epoch: the training steps, the test (and validation) bound, the metrics row, and
        the built-in callbacks' outputs (best.pt, last.pt, metrics, images, TensorBoard, the epoch
        line); returns the row. ``fit`` then calls the user's callbacks. Denormal numbers are
        flushed to zero meanwhile, in every CPU thread (aevb.denormals)."""
        with denormals.flushed():
            return self._train_epoch()

    def _train_epoch(self) -> dict:
        cfg, t, obj = self.cfg, self.cfg.train, self.cfg.objective
        train_split = self.splits["train"]
        n, bs = len(train_split), t.batch_size
        n_batches = (n + bs - 1) // bs
        if t.limit_batches:  # a quick debug run: the first batches of the same shuffle
            n_batches = min(n_batches, t.limit_batches)
        dynamic = self.data.dynamic_binarization
        perm = torch.randperm(n, generator=self.shuffle)
        # sums of the applied steps' bound, log p(x|z) and KL, and how many datapoints they cover
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        self.epoch_sums, self.epoch_count, self.epoch_batches, self.saved = sums, 0, n_batches, []
        # each applied step's loss (-inf: skipped), for the epoch's first and largest batch loss
        batch_losses = torch.full((n_batches,), -math.inf, dtype=torch.float64, device=self.device)
        rank, world, sharded = self.dist.rank, self.dist.world_size, self.dist.enabled
        t0 = time.perf_counter()
        self._hook("on_train_epoch_start")
        self.model.train()
        batch_idx = [perm[b * bs:(b + 1) * bs] for b in range(n_batches)]
        self.trained = [p for group in self.optimizer.param_groups for p in group["params"]]
        if sharded:  # this process's share of each global batch
            totals = [len(i) for i in batch_idx]
            batch_idx = [i[rank::world] for i in batch_idx]
        for b, xb in enumerate(train_split.batches(batch_idx, self.device)):
            xb = binarize_batch(xb, dynamic, cfg.data.perturb, self.data.levels)
            if self.method is not None:  # another training method updates the model itself
                outputs = {**self.method.step(xb, batch_idx[b].to(self.device)), "batch_size": len(xb),
                           "skipped": False}
            else:
                outputs = self._gradient_step(xb, b, kl_weight(obj, self.epoch + b / n_batches),
                                              totals[b] if sharded else None, sums, batch_losses)
            self.step += 1
            self._hook("on_train_batch_end", outputs, b)
            if self.should_stop:  # a callback ends training here
                break
        totals = torch.cat([sums, torch.tensor([float(self.epoch_count)], dtype=torch.float64, device=sums.device)])
        distributed.all_reduce_sum(totals)  # the sums and the datapoints they cover, over all processes
        if sharded:
            distributed.all_reduce_sum(batch_losses)  # each process holds its shard's part of a batch's loss
        train = (totals[:3] / totals[3].clamp(min=1.0)).tolist()
        if self.method is not None:  # the method optimises no bound of its own
            train = [None, None, None]
        elif not all(math.isfinite(v) for v in train):
            self.diverged(n_batches - 1)
        self.batch_losses = batch_losses.tolist()  # this epoch's loss per step (-inf: skipped)
        applied = batch_losses[torch.isfinite(batch_losses)]
        steps = {M.TRAIN_LOSS_FIRST: float(batch_losses[0]) if math.isfinite(batch_losses[0]) else None,
                 M.TRAIN_LOSS_MAX: float(applied.max()) if len(applied) else None,
                 M.SKIPPED_STEPS: 0 if self.method is not None else n_batches - len(applied)}
        train_time = time.perf_counter() - t0
        lr = self.optimizer.param_groups[0]["lr"]
        if self.method is None:  # a training method steps optimisers of its own
            self.scheduler.step()
        self.epoch += 1
        record = {M.EPOCH: self.epoch, M.STEP: self.step, **dict(zip(M.split_terms("train"), train)), **steps}
        if t.limit_batches:  # such an epoch is not a full one, and its row says so
            record[M.LIMIT_BATCHES] = t.limit_batches
        if self.should_stop:  # ended by a callback after this many steps of the epoch
            record[M.STOPPED_AT_BATCH] = b + 1
        for name in ("test", "valid"):
            if name not in self.splits:
                continue
            m = self._split_bound(self.splits[name])
            if not math.isfinite(m["bound"]):
                self.diverged(n_batches - 1)
            record.update(zip(M.split_terms(name), (m["bound"], m["log_px_given_z"], m["kl"])))
        record.update({M.BETA: kl_weight(obj, self.epoch - 1) if obj.objective == "elbo" else 1.0,
                       M.LR: lr, M.TRAIN_TIME_S: train_time,
                       M.EPOCH_TIME_S: time.perf_counter() - t0})
        self.history.append(record)
        self._hook("on_train_epoch_end", record, user=False)
        return record

    def _gradient_step(self, xb: torch.Tensor, b: int, beta: float, total: Optional[int], sums: torch.Tensor,
                       batch_losses: torch.Tensor) -> dict:
        """One step of gradient ascent on the configured bound of the minibatch ``xb`` (batch ``b`` of
        the epoch); an applied step adds to the epoch's ``sums`` and ``batch_losses``, a non-finite one
        is left out and counted. Returns the callbacks' ``outputs``."""
        cfg, sharded = self.cfg, self.dist.enabled
        with precision_context(self.device, cfg.train.precision):
            terms = objective_terms(self.model, xb, cfg.objective)
        loss = batch_loss(terms, cfg.objective, beta, total)
        for p in self.trained:  # the optimizer's zero_grad(set_to_none=True), without its per-call overhead
            p.grad = None
        with linear.grads_in_place():  # wide layers write their weight gradients into buffers they keep
            loss.backward()
        if sharded:  # sum over processes: the gradient of the global batch's mean
            poison_if_nonfinite(self.trained, loss)  # so that every process skips the step
            distributed.all_reduce_gradients(self.trained)
        applied = step_is_finite(self.trained, loss, cfg.optim.grad_clip)
        if applied:
            self._apply_step()
            with torch.no_grad():
                batch_losses[b] = loss.detach().double()
                sums += torch.stack([terms.bound.sum(), terms.log_px_given_z.sum(), terms.kl.sum()]).double()
            self.epoch_count += len(xb)
        else:  # left out and counted; too many stop the run (optim.max_skipped_steps)
            self.skipped_steps += 1
            if self.skipped_steps > cfg.optim.max_skipped_steps:
                self.diverged(b, skipped=self.skipped_steps)
        return {"loss": loss.detach(), "bound": terms.bound.detach(), "log_px_given_z": terms.log_px_given_z.detach(),
                "kl": terms.kl.detach(), "batch_size": len(xb), "skipped": not applied}

    def _apply_step(self) -> None:
        """The optimizer's step, at the warmed-up learning rate for this step only."""
        warm = warmup_factor(self.step, self.cfg.optim.warmup_steps)
        if warm < 1.0:  # the epoch's scheduled rate, scaled for this step only
            scheduled = [g["lr"] for g in self.optimizer.param_groups]
            for g in self.optimizer.param_groups:
                g["lr"] *= warm
        self.optimizer.step()
        if warm < 1.0:
            for g, lr in zip(self.optimizer.param_groups, scheduled):
                g["lr"] = lr

    def _split_bound(self, x: Split) -> Dict[str, float]:
        """dataset_bound of a test/validation split (its first rows with ``train.limit_batches``); under torchrun every process takes a
        contiguous share of the rows (its own noise seed) and the sums are added up."""
        t = self.cfg.train
        if t.limit_batches:  # a quick debug run: at most that many evaluation batches
            x = x.head(t.limit_batches * (t.eval_batch_size or eval_rows(self.model)))
        if not self.dist.enabled:
            return dataset_bound(self.model, x, t.eval_batch_size, self.data.dynamic_binarization, seed=t.seed + 1)
        share = x.subset(np.array_split(np.arange(len(x)), self.dist.world_size)[self.dist.rank])
        sums = elbo_sums(self.model, share, t.eval_batch_size, self.data.dynamic_binarization,
                          seed=distributed.rank_seed(t.seed + 1, self.dist.rank))
        s = (distributed.all_reduce_sum(sums) / len(x)).tolist()
        return {"bound": s[0], "log_px_given_z": s[1], "kl": s[2]}

    # -------------------------------------------------------------- outputs
    def write_images(self, folder: Path, suffix: str = "") -> Dict[str, Path]:
        """8 test images over their reconstructions, and 64 samples (likelihood means) from a
        fixed set of prior draws, so grids of successive epochs are comparable."""
        x = self.splits["test"].rows(0, 8, self.device)
        z = self.model.draw_prior(64, torch.Generator().manual_seed(self.sample_seed))  # a learned prior as it is now
        return write_images(epoch_images(self.model, x, z), self.data.image_shape, folder, suffix,
                            self.tensorboard.writer(self.run_dir), self.epoch)

    def checkpoint_state(self) -> dict:
        """Everything a resume needs (see aevb.training.state.checkpoint_state), with the training
        method's state and the callbacks' (``Callback.state_dict``)."""
        state = checkpoint_state(self)
        if self.method is not None:
            state["method"] = self.method.state_dict()
        kept = {callback_key(cb): cb.state_dict() for cb in self.callbacks}
        state["callbacks"] = {k: v for k, v in kept.items() if v}
        return state

    def write_checkpoint(self, state: Optional[dict] = None) -> Path:
        """RUN/checkpoints/last.pt, atomically, from ``state`` (default: gathered now)."""
        path = self.save_checkpoint(state if state is not None else self.checkpoint_state(), CHECKPOINT)
        self.saved_epoch = self.epoch
        return path

    def save_checkpoint(self, state: dict, name: Union[str, Path]) -> Path:
        """Write ``state`` atomically as RUN/``name`` (a path relative to the run folder); the
        user's callbacks hear of it (``on_save_checkpoint``) once the epoch's outputs are written."""
        path = self.run_dir / name
        save_checkpoint(state, path)
        self.saved.append(Path(name))
        return path



def restore_parts(trainer: Trainer, state: dict) -> None:
    """The training method's and the callbacks' states from a checkpoint; a run trained by another
    method than the one given (or by the default gradient step) is refused."""
    saved = state.get("method")
    if (saved is None) != (trainer.method is None):
        how = "another training method (such as aevb reproduce's wake-sleep or MCEM sub-runs)"
        raise RunError(f"{trainer.run_dir} was trained by {how if saved is not None else 'the gradient of its bound'}; "
                       "continue it with the method it was started with"
                       + (" (the same aevb reproduce command)" if saved is not None else ""))
    with checkpoint_errors(trainer.run_dir):
        if saved is not None:
            trainer.method.load_state_dict(saved)
        kept = state.get("callbacks") or {}
        for cb in trainer.callbacks:
            if callback_key(cb) in kept:
                cb.load_state_dict(kept[callback_key(cb)])


def check_model(model) -> None:
    """Refuse a ``model=`` that is not a torch module (before any file is written)."""
    if model is not None and not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model= must be a torch.nn.Module (e.g. an aevb VAE); got {type(model).__name__}")


def train(cfg: RunConfig, out: Union[str, Path], overwrite: bool = False, data: Optional[Dataset] = None,
          callbacks: Sequence[Callback] = (), model: Optional[torch.nn.Module] = None) -> Optional[Run]:
    """Train a new run into ``out`` and return it (the Python entry point); ``model``: a
    ready-made model to train instead of one built from ``cfg.model``. Under torchrun,
    processes on a machine without the run folder (other than rank 0's) get None."""
    trainer = Trainer.new(cfg, out, overwrite=overwrite, data=data, callbacks=callbacks, model=model)
    trainer.fit()
    if not trainer.dist.is_main and not is_run(trainer.run_dir):
        return None
    return Run(trainer.run_dir)


def resume(run: Union[str, Path, Run], callbacks: Sequence[Callback] = (), model: Optional[torch.nn.Module] = None,
           data=None, **changes) -> Optional[Run]:
    """Continue the run ``run`` from its last checkpoint, exactly, and return it (the Python form
    of ``aevb train --resume RUN``). ``changes`` are keyword arguments named like the config
    fields that ``--resume`` accepts, e.g. ``resume("runs/digits", epochs=200, early_stop=10)``;
    any other raises ConfigError naming it, before anything is read or written. ``data``: the
    same data again for a run trained on data given in memory; ``model``: a model of the run's
    own modules (a Run opened with its encoder and decoder gives one itself)."""
    modules = {}
    if isinstance(run, Run) and run.encoder is not None:
        modules = {"encoder": run.encoder, "decoder": run.decoder}
        if model is None:  # the user's modules with the checkpoint's weights, in memory of their own
            model = copy.deepcopy(run.load_model())
    trainer = Trainer.resume(run.path if isinstance(run, Run) else run, callbacks=callbacks, model=model, data=data,
                             **changes)
    trainer.fit()
    if not trainer.dist.is_main and not is_run(trainer.run_dir):
        return None
    return Run(trainer.run_dir, **modules)
