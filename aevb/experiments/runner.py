"""What every figure of the AEVB reproduction shares: data, the paper's model and optimiser
settings, a training loop counted in *training samples evaluated*, resumable sub-runs, CSV files
and the curves' style (figures are made with :mod:`aevb.figures.draw`'s toolkit).

Layout of an experiment folder (default ``runs/reproduce/<name>-<budget>``)::

    <name>.csv, <name>.png       the curve data and the figure, laid out like the paper's
    runs/<key>/                  one sub-run (a method on a data set with a latent size): an aevb
                                 run folder written by the training loop (config.json, run.json,
                                 metrics per epoch, checkpoints/last.pt with the method's and the
                                 evaluations' state)
    runs/<key>/rows.csv          that sub-run's rows (written at every evaluation)

Sub-runs are trained by aevb's training loop (aevb.training.Trainer): AEVB with its own gradient
step, wake-sleep and MCEM as training methods (``Trainer(method=...)``), the evaluation points as
a callback that stops training after the last. A second invocation skips every finished sub-run
and continues an unfinished one from its last checkpoint (the end of an epoch), exactly; only
the CSV and PNG are re-drawn. Sub-run folders of earlier versions (``state.pt``) are trained again.
"""
from __future__ import annotations

import copy
import csv
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..baselines.mcem import MCEM
from ..baselines.wake_sleep import WakeSleep
from ..bounds import dataset_bound
from ..config import ObjectiveConfig, RunConfig, merge
from ..data import Dataset, Split, as_dataset, load_dataset
from ..data.base import as_split
from ..data.registry import dataset_folder
from ..errors import CheckpointError, ReproduceError, RunError
from ..io import atomic_write_csv
from ..model import VAE
from ..presets import PRESETS
from ..runs import Run, is_run
from ..training import Callback, Trainer
from ..training.callbacks import callback_key

BUDGETS = ("tiny", "quick", "paper")
BATCH = 100  # the paper's minibatch size M
EPOCH_TEST_ROWS = 1000  # test points whose ELBO a sub-run's metrics record after every epoch
PAPER_OBJECTIVE = ObjectiveConfig()  # the SGVB ELBO, L = 1, KL in closed form (estimator B)




# ------------------------------------------------------------------------------ the context
@dataclass
class Context:
    """Where an experiment writes, which data it reads and how it reports.

    ``dataset``: None for the paper's data (MNIST / Frey Face) or 'digits' to replace both by the
    embedded scikit-learn digits (tests, and machines without the data). ``data_dir``: a root
    folder holding ``mnist/`` and ``frey_face/`` (default: aevb's, i.e. ``$AEVB_DATA``);
    ``mnist_dir`` / ``frey_dir`` name the folders directly.
    """

    out: Path
    budget: str = "quick"
    dataset: Optional[str] = None
    data_dir: Optional[str] = None
    mnist_dir: Optional[str] = None
    frey_dir: Optional[str] = None
    download: bool = True
    device: str = "cpu"
    seed: int = 0
    verbose: bool = True
    trained: List[str] = field(default_factory=list)  # sub-runs trained (or continued) this call
    skipped: List[str] = field(default_factory=list)  # sub-runs found finished and skipped
    _data: Dict[str, Dataset] = field(default_factory=dict)

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"[reproduce] {msg}", file=sys.stderr, flush=True)

    # the paper's two data sets ('mnist' and 'frey'), or digits in their place
    def data(self, which: str) -> Dataset:
        if which in self._data:
            return self._data[which]
        if self.dataset not in (None, "", "paper"):
            ds = load_dataset(self.dataset)
        elif which == "mnist":
            ds = load_dataset("mnist", self._folder("mnist", self.mnist_dir), download=self.download)
        elif which == "frey":
            ds = load_dataset("frey-face", self._folder("frey-face", self.frey_dir), download=self.download)
        else:  # pragma: no cover - internal
            raise ReproduceError(f"unknown data set {which!r}")
        self._data[which] = ds
        return ds

    def _folder(self, name: str, explicit: Optional[str]):
        if explicit:
            return explicit
        if self.data_dir:
            root = Path(self.data_dir).expanduser()
            for cand in (root / name, root / name.replace("-", "_"), root / name.split("-")[0]):
                if cand.exists():
                    return cand
            return root / name
        return dataset_folder(name)


# ------------------------------------------------------------------------------ paper settings
def paper_configs(which: str, latent: int, hidden: int, n_train: int, lr: Optional[float] = None):
    """(ModelConfig, OptimConfig) of the ``aevb-mnist`` / ``aevb-frey`` preset with the latent
    size and hidden width of one panel, and the N(0, I) parameter prior as weight decay 1/N."""
    preset = PRESETS["aevb-mnist" if which == "mnist" else "aevb-frey"]
    cfg = merge(RunConfig(), {k: v for k, v in preset.items() if k in ("model", "optim")})
    m = copy.deepcopy(cfg.model)
    m.latent_dim, m.encoder_hidden, m.decoder_hidden = int(latent), [int(hidden)], [int(hidden)]
    o = copy.deepcopy(cfg.optim)
    o.weight_decay = 1.0 / float(n_train)
    if lr is not None:
        o.lr = float(lr)
    return m, o


def log_points(start: int, stop: int, n: int) -> List[int]:
    """About n sample counts evenly spaced in log between start and stop, multiples of BATCH."""
    if n <= 1:
        return [int(math.ceil(stop / BATCH) * BATCH)]
    pts = np.geomspace(max(start, BATCH), stop, n)
    out = sorted({int(math.ceil(p / BATCH) * BATCH) for p in pts})
    return out


def subset(x: Union[Split, Tensor], n: Optional[int], seed: int = 0) -> Tensor:
    """The first n rows of a seeded permutation of x (a Split or a float tensor; all rows when n
    is None or >= len), as a float [n, D] tensor: the experiments train on small subsets held
    whole on the device."""
    x = as_split(x)
    if n is None or n >= len(x):
        return x.materialize()
    g = torch.Generator().manual_seed(seed)
    return x.take(torch.randperm(len(x), generator=g)[:n])


# ------------------------------------------------------------------------------ sub-runs
@dataclass
class SubRun:
    """One training curve: ``method`` ('aevb', 'wake-sleep' or 'mcem') on ``which`` data ('mnist'
    or 'frey') with ``latent`` units, ``hidden`` units and the first ``n_train`` points of the
    training set (None: all), evaluated after each count in ``eval_at`` by ``evaluate(model,
    method_obj) -> dict``."""

    key: str
    method: str
    which: str
    latent: int
    hidden: int
    eval_at: Sequence[int]
    evaluate: Callable
    n_train: Optional[int] = None
    lr: Optional[float] = None
    mcem: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # extra columns of every row


@dataclass
class SubRunResult:
    rows: List[dict]
    model: VAE
    skipped: bool


def subrun_data(ctx: Context, spec: SubRun) -> Dataset:
    """The data a sub-run trains on, given to the loop in memory: its training points (the first
    ``spec.n_train`` of a seeded permutation of the training set) and EPOCH_TEST_ROWS test
    points."""
    data = ctx.data(spec.which)
    x_train = subset(data.train, spec.n_train, seed=ctx.seed)
    x_test = subset(data.test, EPOCH_TEST_ROWS, seed=ctx.seed + 2)
    return as_dataset(x_train.view(len(x_train), *data.image_shape), test=x_test.view(len(x_test), *data.image_shape))


def subrun_config(ctx: Context, spec: SubRun, data: Dataset, epochs: int) -> RunConfig:
    """The sub-run's settings as an aevb run's: the paper's model and optimiser for its panel,
    the SGVB ELBO, minibatches of BATCH, ``epochs`` passes over its training points, and none of
    the per-epoch outputs a figure does not use (images, TensorBoard, progress, report)."""
    m_cfg, o_cfg = paper_configs(spec.which, spec.latent, spec.hidden, len(data.train), spec.lr)
    return merge(RunConfig(model=m_cfg, optim=o_cfg, objective=copy.deepcopy(PAPER_OBJECTIVE)), {
        "data": {"dataset": data.info["spec"]},
        "train": {"epochs": epochs, "batch_size": BATCH, "seed": ctx.seed, "device": ctx.device,
                  "images_every": 0, "tensorboard": False, "progress": False, "report": False}})


def training_method(spec: SubRun, cfg: RunConfig, n_train: int) -> Optional[Callable]:
    """The Trainer's ``method`` of a sub-run: None for AEVB (the loop's own gradient step on the
    ELBO), else a factory of the baseline's step object for the model the loop builds."""
    if spec.method == "aevb":
        return None
    if spec.method == "wake-sleep":
        return lambda model: WakeSleep.from_config(model, cfg.optim)
    if spec.method == "mcem":
        return lambda model: MCEM.from_config(model, n_train, cfg.optim, **spec.mcem)
    raise ReproduceError(f"unknown method {spec.method!r}")


class Evaluations(Callback):
    """A sub-run's curve: after the step at which the training samples evaluated reach each count
    of ``eval_at``, ``spec.evaluate(model, method)`` gives a row (with the training time so far,
    evaluations left out), written to the sub-run's rows.csv; after the last, training stops.
    Its state (rows, samples, time) is kept in the checkpoints, so a resumed sub-run continues
    from its last epoch with the rows it had then."""

    def __init__(self, ctx: Context, spec: SubRun, eval_at: Sequence[int], folder: Path, dataset: str):
        self.ctx, self.spec, self.eval_at, self.folder, self.dataset = ctx, spec, list(eval_at), folder, dataset
        self.rows: List[dict] = []
        self.seen, self.train_seconds, self.started = 0, 0.0, 0.0

    def state_dict(self) -> dict:
        return {"eval_at": self.eval_at, "rows": self.rows, "seen": self.seen, "train_seconds": self.train_seconds}

    def load_state_dict(self, state: dict) -> None:
        self.rows, self.seen = list(state["rows"]), int(state["seen"])
        self.train_seconds = float(state["train_seconds"])

    @property
    def done(self) -> bool:
        return len(self.rows) == len(self.eval_at)

    def on_train_start(self, trainer) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, outputs: dict, batch_idx: int) -> None:
        self.seen += int(outputs["batch_size"])
        if self.done or self.seen < self.eval_at[len(self.rows)]:
            return
        self.train_seconds += time.perf_counter() - self.started
        model, spec = trainer.model, self.spec
        model.eval()
        metrics = spec.evaluate(model, trainer.method if trainer.method is not None else trainer.optimizer)
        model.train()
        bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
        self.rows.append({"method": spec.method, "dataset": self.dataset, "latent": spec.latent,
                          "hidden": spec.hidden, "n_train": len(trainer.data.train), **spec.info,
                          "samples": self.seen, **metrics, "train_seconds": round(self.train_seconds, 3)})
        self.ctx.log(f"{spec.key}: {self.seen} samples  " + "  ".join(
            f"{k} {v:.2f}" for k, v in metrics.items() if isinstance(v, float)) +
            (f"  (non-finite: {', '.join(bad)})" if bad else ""))
        write_csv(self.folder / "rows.csv", self.rows)
        trainer.should_stop = self.done
        self.started = time.perf_counter()


def saved_evaluations(folder: Path) -> Optional[dict]:
    """The Evaluations state of the sub-run in ``folder`` (its last checkpoint's), None when there
    is no sub-run there or its checkpoint cannot be read (it is trained again)."""
    if not is_run(folder):
        return None
    try:
        state = Run(folder).checkpoint()
    except (CheckpointError, RunError):
        return None
    return (state.get("callbacks") or {}).get(callback_key(Evaluations))


# what a sub-run folder of an earlier aevb held: its state and rows (and their temporary files)
EARLIER_FILES = ("state.pt", "rows.csv")


def drop_earlier_subrun(ctx: Context, spec: SubRun, folder: Path) -> None:
    """Remove a sub-run folder an earlier aevb wrote (``state.pt``, ``rows.csv``), which is trained
    again as a run folder; a folder holding anything else is refused (ReproduceError), untouched."""
    other = [p.name for p in folder.iterdir()
             if p.name not in EARLIER_FILES and not (p.name.startswith(".") and p.name.endswith(".tmp"))]
    if other:
        raise ReproduceError(f"{folder} is not a sub-run folder (it holds {', '.join(sorted(other)[:3])}); move it "
                             f"away, or give the experiment another --out")
    ctx.log(f"{spec.key}: a sub-run of an earlier aevb version (state.pt); trained again")
    shutil.rmtree(folder)


def run_subrun(ctx: Context, spec: SubRun) -> SubRunResult:
    """Train (or continue, or skip) one sub-run; returns its rows and the trained model.

    A sub-run is an aevb run folder (``OUT/runs/<key>``) trained by the training loop
    (aevb.training.Trainer) with the sub-run's method; a finished one with the same evaluation
    points is skipped, an unfinished one resumes from its last checkpoint, exactly."""
    folder = ctx.out / "runs" / spec.key
    dataset = subrun_data(ctx, spec)
    n_train = len(dataset.train)
    eval_at = sorted(int(s) for s in spec.eval_at)
    cfg = subrun_config(ctx, spec, dataset, epochs=-(-eval_at[-1] // n_train))
    evaluations = Evaluations(ctx, spec, eval_at, folder, ctx.data(spec.which).name)
    method = training_method(spec, cfg, n_train)
    saved = saved_evaluations(folder)
    if saved is not None and list(saved["eval_at"]) == eval_at and len(saved["rows"]) == len(eval_at):
        ctx.skipped.append(spec.key)
        ctx.log(f"{spec.key}: finished earlier, skipped")
        return SubRunResult(list(saved["rows"]), Run(folder).load_model(ctx.device), True)
    ctx.trained.append(spec.key)
    t_start = time.perf_counter()
    if saved is not None and list(saved["eval_at"]) == eval_at:
        ctx.log(f"{spec.key}: continuing from {saved['seen']} samples")
        trainer = Trainer.resume(folder, callbacks=[evaluations], data=dataset, method=method)
    else:
        if saved is not None:
            ctx.log(f"{spec.key}: saved sub-run has other evaluation points; starting again")
        elif folder.exists() and not is_run(folder):
            drop_earlier_subrun(ctx, spec, folder)
        trainer = Trainer.new(cfg, folder, overwrite=is_run(folder), data=dataset, callbacks=[evaluations],
                              method=method)
    trainer.fit()
    ctx.log(f"{spec.key}: done in {time.perf_counter() - t_start:.1f}s")
    return SubRunResult(evaluations.rows, trainer.model.eval(), False)


# ------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def elbo_of(model: VAE, x: Tensor, batch: int = 1000, seed: int = 1) -> float:
    """Mean ELBO (one sample, closed-form KL, seeded) over the rows of x."""
    return float(dataset_bound(model, x, batch, seed=seed)["bound"])


# ------------------------------------------------------------------------------ files
def write_csv(path: Path, rows: List[dict]) -> Path:
    atomic_write_csv(path, rows)
    return Path(path)


def read_csv(path: Path) -> List[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# colour and legend name of each training method, shared by the figures
STYLE = {"aevb": ("tab:red", "AEVB"), "wake-sleep": ("tab:blue", "Wake-Sleep"), "mcem": ("tab:green", "MCEM")}


def plot_train_test(ax, rows: List[dict], methods: Sequence[str], train_key: str, test_key: str) -> List[dict]:
    """One solid (train) and one dashed (test) curve per method against ``samples``, log x-axis.
    ``rows`` are one panel's CSV rows; returns the rows plotted."""
    plotted = []
    for method in methods:
        sel = [r for r in rows if r["method"] == method]
        if not sel:
            continue
        xs = [int(r["samples"]) for r in sel]
        color, label = STYLE[method]
        ax.plot(xs, [float(r[train_key]) for r in sel], "-", color=color, label=f"{label} train")
        ax.plot(xs, [float(r[test_key]) for r in sel], "--", color=color, label=f"{label} test")
        plotted += sel
    ax.set_xscale("log")
    return plotted


def budget_settings(name: str, budgets: dict, budget: str) -> dict:
    if budget not in budgets:
        raise ReproduceError(f"{name}: unknown budget {budget!r}; choose one of {', '.join(budgets)}")
    return budgets[budget]
