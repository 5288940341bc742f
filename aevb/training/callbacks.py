"""The ``Callback`` hooks of a training run, and the built-in callbacks a trainer assembles
from its config: the best epoch and best.pt, the early stop, last.pt, the metrics files, the
per-epoch image grids, TensorBoard events, and the progress bar and epoch lines.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
import math
from typing import Dict, List, Optional

import torch

from ..images import grid, save_grid
from ..io import atomic_write_csv, atomic_write_text
from ..runs import BEST_CHECKPOINT
from ..sampling import decode_means, paired_rows, reconstructions
from .. import metrics as M
from ..units import format_duration
from .state import best_state


class Callback:
    """Hooks a trainer calls, named as in PyTorch Lightning; override what you need.

    Under torchrun a trainer calls them on rank 0 only. ``on_train_batch_end`` comes after each
    training step (``outputs``: the step's ``loss`` and per-datapoint ``bound``,
    ``log_px_given_z`` and ``kl`` as detached tensors on the device, ``batch_size``, and
    ``skipped``: True when the step was non-finite and left out); ``on_train_epoch_end`` gets the
    epoch's metrics row once its checkpoint and metrics files are written. ``on_epoch_end`` is
    the older name of ``on_train_epoch_end`` and is still called by its default.

    A callback that keeps state across epochs returns it from ``state_dict`` (plain values,
    lists, dicts and tensors); it is saved in every checkpoint under the callback's class name and
    given back to ``load_state_dict`` when the run is resumed with the same callback, so that a
    resumed run sees what an uninterrupted one would.
    """

    every_rank = False  # built-in parts that keep state every process needs (best epoch, checkpoint)

    def on_train_start(self, trainer) -> None:
        pass

    def on_train_epoch_start(self, trainer) -> None:
        pass

    def on_train_batch_end(self, trainer, outputs: dict, batch_idx: int) -> None:
        pass

    def on_train_epoch_end(self, trainer, record: dict) -> None:
        self.on_epoch_end(trainer, record)

    def on_epoch_end(self, trainer, record: dict) -> None:
        pass

    def on_save_checkpoint(self, trainer, path: Path) -> None:
        pass

    def on_train_end(self, trainer) -> None:
        pass

    def on_exception(self, trainer, error: BaseException) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def callback_key(cb) -> str:
    """The name a callback's state is kept under in a checkpoint: the qualified name of its class
    (``cb``: a callback or its class)."""
    return (cb if isinstance(cb, type) else type(cb)).__qualname__


def scalars(record: dict) -> Dict[str, float]:
    """The numbers of an epoch's metrics row that are curves (bounds, their terms, losses, KL
    weight, learning rate, times), as TensorBoard and the loggers get them."""
    return {k: v for k, v in record.items()
            if k not in M.NOT_CURVES and isinstance(v, (int, float)) and not isinstance(v, bool)}


def write_metrics(run_dir: Path, history: List[dict]) -> None:
    """RUN/metrics.jsonl and RUN/metrics.csv: one row per epoch, each file written atomically."""
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    atomic_write_csv(run_dir / "metrics.csv", history)


def epoch_images(model, x: torch.Tensor, z: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The per-epoch grids' content (aevb.sampling): ``x`` [8, D] over their reconstructions,
    and the likelihood means at the fixed prior draws ``z`` [64, J], so that the grids of
    successive epochs compare."""
    return {"reconstructions": paired_rows(x.cpu(), reconstructions(model, x), 8),
            "samples": decode_means(model, z)}


def write_images(images: Dict[str, torch.Tensor], image_shape, folder: Path, suffix: str = "",
                 tensorboard=None, epoch: int = 0) -> Dict[str, Path]:
    """Each grid as FOLDER/<name><suffix>.png (8 per row), and into TensorBoard when given."""
    out = {name: save_grid(folder / f"{name}{suffix}.png", x, image_shape, 8) for name, x in images.items()}
    if tensorboard is not None:
        for name, x in images.items():
            tensorboard.add_image(name, grid(x, image_shape, 8), epoch, dataformats="HWC")
    return out


class BestCheckpoint(Callback):
    """The best validation bound so far (``epoch``, ``bound``: the earliest of equal bounds) and
    RUN/checkpoints/best.pt, the model of that epoch, rewritten only when an epoch improves on
    it. It marks each metrics row with ``best_epoch``; nothing happens without a validation split."""

    every_rank = True  # the bounds were summed over all processes: every process keeps the same best

    def __init__(self, epoch: Optional[int] = None, bound: Optional[float] = None):
        self.epoch, self.bound = epoch, bound

    def on_train_epoch_end(self, trainer, record: dict) -> None:
        v = record.get(M.VALID_BOUND)
        if v is None:
            return
        improved = self.bound is None or v > self.bound
        if improved:
            self.epoch, self.bound = trainer.epoch, float(v)
        record[M.BEST_EPOCH] = self.epoch
        if improved and trainer.dist.is_main:
            trainer.save_checkpoint(best_state(trainer), BEST_CHECKPOINT)


class EarlyStopping(Callback):
    """Training ends after the first epoch E with E - best epoch >= ``train.early_stop``; the
    decision depends only on the history, so a resumed run stops where an uninterrupted one does.
    Marks that epoch's metrics row ``stopped_early``."""

    every_rank = True

    def due(self, trainer) -> bool:
        patience, best = trainer.cfg.train.early_stop, trainer.best_epoch
        return patience is not None and best is not None and trainer.epoch - best >= patience

    def on_train_epoch_end(self, trainer, record: dict) -> None:
        if M.VALID_BOUND in record and self.due(trainer):
            record[M.STOPPED_EARLY] = True


class LastCheckpoint(Callback):
    """RUN/checkpoints/last.pt after every epoch, atomically: everything a resume needs. If it
    cannot be written, nothing else of the epoch is."""

    every_rank = True  # under torchrun gathering the state is a collective

    def on_train_epoch_end(self, trainer, record: dict) -> None:
        state = trainer.checkpoint_state()
        if trainer.dist.is_main:
            trainer.write_checkpoint(state)


class MetricsFiles(Callback):
    """RUN/metrics.jsonl and RUN/metrics.csv, rewritten whole after every epoch."""

    def on_train_epoch_end(self, trainer, record: dict) -> None:
        write_metrics(trainer.run_dir, trainer.history)


class ImageGrids(Callback):
    """RUN/images/reconstructions_epochNNN.png and samples_epochNNN.png every
    ``train.images_every`` epochs and after the last."""

    def on_train_epoch_end(self, trainer, record: dict) -> None:
        t = trainer.cfg.train
        if t.images_every and (trainer.epoch % t.images_every == 0 or trainer.epoch == t.epochs):
            trainer.write_images(trainer.run_dir / "images", suffix=f"_epoch{trainer.epoch:03d}")


class TensorBoard(Callback):
    """RUN/tensorboard event files, opened on first use (nothing when TensorBoard is off or not
    installed: the CSV/JSON metrics still exist)."""

    def __init__(self, enabled: bool):
        self.enabled, self._writer = enabled, None

    def writer(self, run_dir: Path):
        if self._writer is None and self.enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.enabled = False
                return None
            self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        return self._writer

    def on_train_epoch_end(self, trainer, record: dict) -> None:
        self.scalars(trainer.run_dir, record, trainer.epoch)

    def scalars(self, run_dir: Path, record: dict, epoch: int) -> None:
        """Every number of an epoch's metrics row, as train/bound, test/kl, ..."""
        w = self.writer(run_dir)
        if w is None:
            return
        for k, v in scalars(record).items():
            w.add_scalar(k.replace("_", "/", 1), v, epoch)
        w.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ProgressBar(Callback):
    """A progress bar within each epoch and one line per epoch (losses, KL, time, ETA), on
    standard error; silent when ``enabled`` is false (and on other ranks than 0). Every 20 steps
    it shows the running loss, the only place the loop's sums are read during an epoch."""

    def __init__(self, enabled: bool):
        self.enabled, self._bar = enabled, None

    def on_train_epoch_start(self, trainer) -> None:
        self._bar = self.bar(trainer.epoch, trainer.cfg.train.epochs, trainer.epoch_batches)

    def on_train_batch_end(self, trainer, outputs: dict, batch_idx: int) -> None:
        bar = self._bar
        if bar is None:
            return
        last = batch_idx == trainer.epoch_batches - 1
        if batch_idx % 20 == 0 or last:
            running = trainer.epoch_sums[0].item() / max(trainer.epoch_count, 1)
            if not math.isfinite(running) and not trainer.dist.enabled:  # sharded: checked after the epoch
                trainer.diverged(batch_idx)
            bar.set_postfix_str(f"loss {-running:.2f} nats")
        bar.update(1)
        if last:
            self.close()

    def on_train_epoch_end(self, trainer, record: dict) -> None:
        self.close()
        self.epoch_line(record, trainer.history, trainer.epoch, trainer.cfg.train.epochs)

    def on_exception(self, trainer, error: BaseException) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def bar(self, epoch: int, epochs: int, total: int):
        if not self.enabled:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                    leave=False, dynamic_ncols=True, disable=None, file=sys.stderr)

    def epoch_line(self, r: dict, history: List[dict], done: int, total: int) -> None:
        if not self.enabled:
            return
        per_epoch = sum(h[M.EPOCH_TIME_S] for h in history[-5:]) / len(history[-5:])
        eta = per_epoch * (total - done)
        best = r.get(M.BEST_EPOCH)
        extra = f"  valid {-r[M.VALID_BOUND]:.2f}" if M.VALID_BOUND in r else ""
        if best is not None:
            extra += " (best)" if best == r[M.EPOCH] else f" (best: epoch {best})"
        if r.get(M.LIMIT_BATCHES):
            extra += f"  [only the first {r[M.LIMIT_BATCHES]} batches: --limit-batches]"
        train = "" if r[M.TRAIN_BOUND] is None else f"  train loss {-r[M.TRAIN_BOUND]:.2f}"
        print(f"epoch {done:>3}/{total}{train}  test loss {-r[M.TEST_BOUND]:.2f}"
              f"{extra}  (-bound, nats/datapoint)  KL {r[M.TEST_KL]:.2f}  {r[M.EPOCH_TIME_S]:.1f}s"
              + ("" if r.get(M.STOPPED_EARLY) else f"  ETA {format_duration(eta)}"), file=sys.stderr, flush=True)
        if r.get(M.STOPPED_EARLY):
            since = r[M.EPOCH] - best
            print(f"early stop: the validation loss has not improved for {since} epoch{'s' if since != 1 else ''} "
                  f"since epoch {best}; training ends at epoch {r[M.EPOCH]} of {total} "
                  "(checkpoints/best.pt holds the best epoch)", file=sys.stderr, flush=True)

