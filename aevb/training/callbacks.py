"""What a training run writes and shows around its loop: the metrics files, the per-epoch image
grids, TensorBoard events and the progress bar and epoch lines, plus the ``Callback`` hooks
that other parts (the report) attach.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List

import torch

from ..images import grid, save_grid
from ..io import atomic_write_csv, atomic_write_text
from ..sampling import decode_means, paired_rows, reconstructions


class Callback:
    """Hooks a trainer calls; override what you need."""

    def on_epoch_end(self, trainer, record: dict) -> None:
        pass

    def on_train_end(self, trainer) -> None:
        pass


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


class TensorBoard:
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

    def scalars(self, run_dir: Path, record: dict, epoch: int) -> None:
        """Every number of an epoch's metrics row, as train/bound, test/kl, ..."""
        w = self.writer(run_dir)
        if w is None:
            return
        for k, v in record.items():
            if k not in ("epoch", "step", "best_epoch", "stopped_early"):
                w.add_scalar(k.replace("_", "/", 1), v, epoch)
        w.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class Progress:
    """A progress bar within each epoch and one line per epoch (losses, KL, time, ETA), on
    standard error; silent when ``enabled`` is false (and on other ranks than 0)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def bar(self, epoch: int, epochs: int, total: int):
        if not self.enabled:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                    leave=False, dynamic_ncols=True, disable=None, file=sys.stderr)

    def epoch_line(self, r: dict, history: List[dict], done: int, total: int) -> None:
        if not self.enabled:
            return
        per_epoch = sum(h["epoch_time_s"] for h in history[-5:]) / len(history[-5:])
        eta = per_epoch * (total - done)
        extra = f"  valid {-r['valid_bound']:.2f}" if "valid_bound" in r else ""
        if r.get("best_epoch") is not None:
            extra += " (best)" if r["best_epoch"] == r["epoch"] else f" (best: epoch {r['best_epoch']})"
        print(f"epoch {done:>3}/{total}  train loss {-r['train_bound']:.2f}  test loss {-r['test_bound']:.2f}"
              f"{extra}  (-bound, nats/datapoint)  KL {r['test_kl']:.2f}  {r['epoch_time_s']:.1f}s"
              + ("" if r.get("stopped_early") else f"  ETA {format_duration(eta)}"), file=sys.stderr, flush=True)
        if r.get("stopped_early"):
            since = r["epoch"] - r["best_epoch"]
            print(f"early stop: the validation loss has not improved for {since} epoch{'s' if since != 1 else ''} "
                  f"since epoch {r['best_epoch']}; training ends at epoch {r['epoch']} of {total} "
                  "(checkpoints/best.pt holds the best epoch)", file=sys.stderr, flush=True)


def format_duration(s: float) -> str:
    """Seconds as M:SS or H:MM:SS."""
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
