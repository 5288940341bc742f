"""The AEVB paper's experiments as runnable, resumable reproductions (``aevb reproduce NAME``).

Each module has ``NAME``, ``TITLE``, ``BUDGETS`` (tiny / quick / paper) and ``run(ctx)``, which
writes ``NAME.csv`` and ``NAME.png`` into ``ctx.out``. See docs/reproduction.md.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

from ..lock import RunLock
from ..runfolder import remove_orphans
from .runner import BUDGETS, Context, ReproduceError

EXPERIMENTS = ("figure2", "figure3", "figure4", "figure5", "amortization")


def get_experiment(name: str):
    if name not in EXPERIMENTS:
        raise ReproduceError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f".{name}", __name__)


def default_out(name: str, budget: str) -> Path:
    return Path("runs") / "reproduce" / f"{name}-{budget}"


def run_experiment(name: str, budget: str = "quick", out=None, dataset: Optional[str] = None,
                   data_dir: Optional[str] = None, mnist_dir: Optional[str] = None,
                   frey_dir: Optional[str] = None, download: bool = True, device: str = "cpu",
                   seed: int = 0, verbose: bool = True) -> dict:
    """Run (or resume) one experiment; returns {'csv', 'png', 'rows', 'context', ...}."""
    mod = get_experiment(name)
    if budget not in BUDGETS:
        raise ReproduceError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    ctx = Context(Path(out) if out is not None else default_out(name, budget), budget, dataset, data_dir,
                  mnist_dir, frey_dir, download, device, seed, verbose)
    ctx.out.mkdir(parents=True, exist_ok=True)
    # one writer per experiment folder, like a run folder; what a killed writer left is removed
    lock = RunLock(ctx.out).acquire(f"reproduce {name} into")
    try:
        removed = remove_orphans(ctx.out)
        if removed:
            ctx.log(f"removed {len(removed)} unfinished temporary file(s) left by an interrupted run")
        result = mod.run(ctx)
    finally:
        lock.release()
    result["context"] = ctx
    return result


__all__ = ["EXPERIMENTS", "Context", "ReproduceError", "get_experiment", "run_experiment", "default_out"]
