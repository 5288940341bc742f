"""The report's training callback: latent snapshots during training, figures and report.html
at its end.

It saves the test points' posterior means every few epochs (``RUN/latents/epochNNN.npy``) for the
figure that shows q(z|x) moving away from the prior during training, and writes the run's
figures and report once the last epoch has trained.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

from ..figures.compute import latent_means
from ..figures.runfigures import FIGURES_DIR, FigureContext, save_latent_snapshot
from ..training import Callback
from .page import write_report


class ReportCallback(Callback):
    """Saves latent snapshots during training and writes figures and ``report.html`` at the end.

    ``latents_every``: save the test posterior means every this many epochs (and after the first
    and last epoch); None picks about 10 snapshots per run. ``max_points``: how many test points
    a snapshot holds. ``figures``: draw RUN/figures/*.png and the report at the end of training.
    Failures are reported on stderr but never stop or fail the training run itself.
    """

    def __init__(self, latents_every: Optional[int] = None, max_points: int = 1000, figures: bool = True,
                 method: str = "pca", seed: int = 0, draw: bool = True, verbose: bool = True):
        self.latents_every = latents_every
        self.max_points = int(max_points)
        self.figures = figures
        self.method, self.seed, self.draw, self.verbose = method, seed, draw, verbose
        self._warned = False

    def snapshot_epochs(self, total: int) -> int:
        return int(self.latents_every) if self.latents_every else max(1, int(total or 1) // 10)

    def on_epoch_end(self, trainer, record: dict) -> None:
        epoch, total = trainer.epoch, trainer.cfg.train.epochs or trainer.epoch
        every = self.snapshot_epochs(total)
        if not (epoch == 1 or epoch % every == 0 or epoch >= total):
            return
        try:
            test = trainer.data.test
            x = test.head(self.max_points)  # read a batch at a time, not copied
            mu = latent_means(trainer.model, x)
            y = None if test.y is None else test.y[:len(x)]
            save_latent_snapshot(trainer.run_dir, epoch, mu, y)
        except Exception as e:  # a figure aid must never stop training
            if not self._warned:
                print(f"aevb: warning: latent snapshot of epoch {epoch} not saved: {e}", file=sys.stderr)
                self._warned = True

    def on_train_end(self, trainer) -> None:
        if not self.figures:
            return
        t0 = time.perf_counter()
        try:
            ctx = FigureContext.from_trainer(trainer)
            # the run's marker still says "running" here: training is complete, the trainer marks it next
            path = write_report(trainer.run_dir, ctx=ctx, method=self.method, seed=self.seed, draw=self.draw,
                                status="finished")
        except Exception as e:
            print(f"aevb: warning: the report could not be written ({type(e).__name__}: {e}); "
                  f"try `aevb report {trainer.run_dir}`", file=sys.stderr)
            return
        if self.verbose and getattr(trainer.cfg.train, "progress", False):
            print(f"report: {path}  (figures in {Path(trainer.run_dir) / FIGURES_DIR}, "
                  f"{time.perf_counter() - t0:.1f}s)", file=sys.stderr)
