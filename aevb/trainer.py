"""The training loop: minibatch stochastic gradient ascent on a bound, with exact resume.

The whole data set lives on the device as one tensor; minibatches are drawn by indexing a
seeded permutation, so an epoch does no per-sample Python work. Every epoch ends with the test
(and validation) bound, a metrics row, image grids and an atomic checkpoint that holds the model,
optimizer, schedule, epoch, step and every RNG state: a resumed run continues exactly.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from . import __version__
from .config import ConfigError, RunConfig, diff, resolve
from .data import Dataset, load_dataset
from .images import save_grid
from .io import atomic_write_csv, atomic_write_text, save_checkpoint
from .model import VAE, BoundTerms
from .runs import CHECKPOINT, Run, RunError, is_run, resolve_device, write_marker


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# Options that may differ when a run is resumed: they change where or how long, not what.
RESUMABLE_CHANGES = {"train.epochs", "train.device", "train.threads", "train.progress",
                     "train.tensorboard", "train.eval_batch_size", "train.images_every",
                     "data.data_dir", "data.download"}


# ---------------------------------------------------------------------------- building blocks
def build_optimizer(params, cfg) -> torch.optim.Optimizer:
    """Adam, Adagrad or SGD from an OptimConfig; weight decay is L2 on every parameter."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum)
    raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose adam, adagrad or sgd")


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
        mu, log_var = model.encode(x)
        from .distributions import kl_normal_standard, reparameterize

        z = reparameterize(mu, log_var, obj.k)
        log_px_z = model.log_p_x_given_z(x, z)
        log_w = log_px_z + model.log_p_z(z) - model.log_q_z_given_x(z, mu, log_var)
        bound = torch.logsumexp(log_w, 0) - math.log(obj.k)
        kl_per_dim = kl_normal_standard(mu, log_var)
        return BoundTerms(bound, log_px_z.mean(0), kl_per_dim.sum(-1), kl_per_dim)
    return model.elbo(x, n_samples=obj.samples, kl=obj.kl)


def kl_weight(obj, epoch_progress: float) -> float:
    """beta, ramped linearly from 0 over ``warmup_epochs`` (fractional epochs count)."""
    if obj.warmup_epochs and epoch_progress < obj.warmup_epochs:
        return obj.beta * epoch_progress / obj.warmup_epochs
    return obj.beta


def binarize_batch(x: Tensor, dynamic: bool) -> Tensor:
    """Dynamic binarization: a fresh x ~ Bernoulli(x) every time a batch is used."""
    return torch.bernoulli(x) if dynamic else x


@torch.no_grad()
def dataset_bound(model: VAE, x: Tensor, batch_size: int = 1000, dynamic: bool = False,
                  seed: int = 0) -> Dict[str, float]:
    """Mean ELBO (one sample, closed-form KL) and its two terms over all rows of ``x``, nats.

    Uses its own seeded random stream, so it neither perturbs training nor varies between calls.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=x.device)
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for i in range(0, len(x), batch_size):
            xb = binarize_batch(x[i:i + batch_size], dynamic)
            t = model.elbo(xb)
            sums += torch.stack([t.bound.sum(), t.log_px_given_z.sum(), t.kl.sum()]).double()
    model.train(was_training)
    s = (sums / len(x)).tolist()
    return {"bound": s[0], "log_px_given_z": s[1], "kl": s[2]}


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
        self.device = resolve_device(t.device)
        if state is None:
            torch.manual_seed(t.seed)  # model initialisation and the noise stream
            np.random.seed(t.seed % 2 ** 32)
            random.seed(t.seed)
            self.model = VAE.from_config(cfg.model, data.dim)
        else:
            self.model = VAE.from_config(cfg.model, data.dim)
            self.model.load_state_dict(state["model"])
        self.model.to(self.device).train()
        self.optimizer = build_optimizer(self.model.parameters(), cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, t.epochs)
        self.shuffle = torch.Generator().manual_seed(t.seed)
        self.epoch, self.step, self.history = 0, 0, []
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.epoch, self.step = int(state["epoch"]), int(state["step"])
            self.history = list(state["history"])
            set_rng_state(state["rng"], self.shuffle)
        self.x_train = data.train.x.to(self.device)
        self.x_test = data.test.x.to(self.device)
        self.x_valid = None if data.valid is None else data.valid.x.to(self.device)
        self.sample_z = torch.randn(64, cfg.model.latent_dim, generator=torch.Generator().manual_seed(t.seed + 2))
        self._writer = None

    # -------------------------------------------------------------- construction
    @classmethod
    def new(cls, cfg: RunConfig, out: Union[str, Path], overwrite: bool = False,
            data: Optional[Dataset] = None, callbacks: Sequence[Callback] = ()) -> "Trainer":
        """Start a fresh run in ``out``. Loads the data, resolves and checks the config, checks
        the data against the likelihood, and only then creates the folder."""
        out = Path(out)
        if out.exists():
            if is_run(out):
                if not overwrite:
                    raise RunError(f"{out} already holds a run; use --resume {out} to continue it, "
                                   "--overwrite to replace it, or choose another --out")
            elif out.is_file() or any(out.iterdir()):
                raise RunError(f"{out} exists and is not an empty folder nor an aevb run; choose another --out")
        data = data if data is not None else load_data(cfg)
        cfg = resolve(cfg, data.kind, data.name)
        check_data_for_likelihood(cfg, data)
        if out.exists() and is_run(out):
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, "running", aevb_version=__version__, dataset=data.name)
        cfg.save(out / "config.json")
        return cls(cfg, out, data, callbacks=callbacks)

    @classmethod
    def resume(cls, run_dir: Union[str, Path], overrides: Optional[RunConfig] = None,
               given: Sequence[str] = (), callbacks: Sequence[Callback] = ()) -> "Trainer":
        """Continue the run in ``run_dir`` from its last checkpoint. ``overrides`` holds options
        the user gave (dotted names in ``given``); any that contradict the saved config, except
        those in RESUMABLE_CHANGES (e.g. more epochs), raise ConfigError."""
        run = Run(run_dir)
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
        state = run.checkpoint()
        data = load_data(cfg)
        if data.dim != int(state["data_dim"]):
            raise RunError(f"the data set now has {data.dim} values per datapoint but the run was "
                           f"trained on {state['data_dim']}; check --data-dir")
        cfg.save(run.path / "config.json")
        write_marker(run.path, "running")
        return cls(cfg, run.path, data, state=state, callbacks=callbacks)

    # -------------------------------------------------------------- the loop
    def fit(self) -> List[dict]:
        """Train until ``cfg.train.epochs`` epochs are done; returns the metrics history."""
        t = self.cfg.train
        try:
            while self.epoch < t.epochs:
                record = self.train_epoch()
                for cb in self.callbacks:
                    cb.on_epoch_end(self, record)
        except KeyboardInterrupt:
            write_marker(self.run_dir, "interrupted", epoch=self.epoch)
            self._close()
            raise
        except TrainingDiverged:
            write_marker(self.run_dir, "failed", epoch=self.epoch, reason="loss became NaN or infinite")
            self._close()
            raise
        for cb in self.callbacks:
            cb.on_train_end(self)
        write_marker(self.run_dir, "finished", epoch=self.epoch)
        self._close()
        return self.history

    def train_epoch(self) -> dict:
        cfg, t, obj = self.cfg, self.cfg.train, self.cfg.objective
        n, bs = len(self.x_train), t.batch_size
        n_batches = (n + bs - 1) // bs
        dynamic = self.data.dynamic_binarization
        perm = torch.randperm(n, generator=self.shuffle).to(self.device)
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        t0 = time.perf_counter()
        bar = self._bar(n_batches)
        self.model.train()
        for b in range(n_batches):
            beta = kl_weight(obj, self.epoch + b / n_batches)
            xb = binarize_batch(self.x_train.index_select(0, perm[b * bs:(b + 1) * bs]), dynamic)
            terms = objective_terms(self.model, xb, obj)
            if obj.objective == "iwae" or beta == 1.0:
                loss = -terms.bound.mean()
            else:
                loss = -(terms.log_px_given_z - beta * terms.kl).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            self.optimizer.step()
            self.step += 1
            with torch.no_grad():
                sums += torch.stack([terms.bound.sum(), terms.log_px_given_z.sum(), terms.kl.sum()]).double()
            if bar is not None and (b % 20 == 0 or b == n_batches - 1):
                seen = min((b + 1) * bs, n)
                running = sums[0].item() / seen
                if not math.isfinite(running):
                    self._diverged(b)
                bar.set_postfix_str(f"loss {-running:.2f} nats")
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        train = (sums / n).tolist()
        if not all(math.isfinite(v) for v in train):
            self._diverged(n_batches - 1)
        train_time = time.perf_counter() - t0
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.epoch += 1
        record = {"epoch": self.epoch, "step": self.step,
                  "train_bound": train[0], "train_log_px_given_z": train[1], "train_kl": train[2]}
        splits = [("test", self.x_test)] + ([("valid", self.x_valid)] if self.x_valid is not None else [])
        for name, x in splits:
            m = dataset_bound(self.model, x, t.eval_batch_size, dynamic, seed=t.seed + 1)
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

    # -------------------------------------------------------------- outputs
    def _epoch_outputs(self, record: dict) -> None:
        t = self.cfg.train
        if t.images_every and (self.epoch % t.images_every == 0 or self.epoch == t.epochs):
            self.write_images(self.run_dir / "images", suffix=f"_epoch{self.epoch:03d}")
        self.write_checkpoint()
        _write_metrics(self.run_dir, self.history)
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
        x = self.x_test[:8]
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
        return {
            "format": "aevb-checkpoint", "version": 1, "aevb_version": __version__,
            "epoch": self.epoch, "step": self.step,
            "data_dim": self.data.dim, "image_shape": list(self.data.image_shape),
            "config": json.dumps(self.cfg.to_dict()),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng_state(self.shuffle),
            "history": self.history,
        }

    def write_checkpoint(self) -> Path:
        path = self.run_dir / CHECKPOINT
        save_checkpoint(self.checkpoint_state(), path)
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
        if not self.cfg.train.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"epoch {self.epoch + 1}/{self.cfg.train.epochs}", unit="batch",
                    leave=False, dynamic_ncols=True, disable=None, file=sys.stderr)

    def _log(self, r: dict) -> None:
        if not self.cfg.train.progress:
            return
        done, total = self.epoch, self.cfg.train.epochs
        per_epoch = sum(h["epoch_time_s"] for h in self.history[-5:]) / len(self.history[-5:])
        eta = per_epoch * (total - done)
        extra = f"  valid {-r['valid_bound']:.2f}" if "valid_bound" in r else ""
        print(f"epoch {done:>3}/{total}  train loss {-r['train_bound']:.2f}  test loss {-r['test_bound']:.2f}"
              f"{extra}  (-bound, nats/datapoint)  KL {r['test_kl']:.2f}  {r['epoch_time_s']:.1f}s"
              f"  ETA {_fmt_time(eta)}", file=sys.stderr, flush=True)

    def _diverged(self, batch: int):
        raise TrainingDiverged(
            f"the loss became NaN or infinite in epoch {self.epoch + 1} (batch {batch + 1}); training stopped. "
            f"The last good checkpoint (epoch {self.epoch}) is kept in {self.run_dir / CHECKPOINT}. "
            "Try a smaller --lr, --grad-clip, or a --min-log-var floor for a gaussian likelihood.")


# ---------------------------------------------------------------------------- helpers
def load_data(cfg: RunConfig) -> Dataset:
    d = cfg.data
    return load_dataset(d.dataset, d.data_dir, download=d.download, validation=d.validation,
                        binarize=d.binarize, image_size=d.image_size, color=d.color, seed=d.seed)


def check_data_for_likelihood(cfg: RunConfig, data: Dataset) -> None:
    """Refuse data the chosen likelihood cannot model (e.g. values outside [0, 1] for Bernoulli)."""
    from .distributions import get_likelihood

    lik = get_likelihood(cfg.model.likelihood, sigma=cfg.model.sigma, mean_activation=cfg.model.mean_activation)
    for name in ("train", "valid", "test"):
        split = getattr(data, name)
        if split is not None:
            try:
                lik.check_data(split.x, f"the {name} split of {data.name}")
            except ValueError as e:
                raise ConfigError(str(e)) from None


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
          callbacks: Sequence[Callback] = ()) -> Run:
    """Train a new run into ``out`` and return it (the Python entry point)."""
    trainer = Trainer.new(cfg, out, overwrite=overwrite, data=data, callbacks=callbacks)
    trainer.fit()
    return Run(trainer.run_dir)
