"""What every figure of the AEVB reproduction shares: data, the paper's model and optimiser
settings, a training loop counted in *training samples evaluated*, resumable sub-runs, CSV files
and the curves' style (figures are made with :mod:`aevb.figures.draw`'s toolkit).

Layout of an experiment folder (default ``runs/reproduce/<name>-<budget>``)::

    <name>.csv, <name>.png       the curve data and the figure, laid out like the paper's
    runs/<key>/state.pt          one sub-run (a method on a data set with a latent size): model,
                                 optimizer(s), sample counter, RNG states, the rows so far, done
    runs/<key>/rows.csv          that sub-run's rows (written at every evaluation)

A second invocation skips every finished sub-run (its ``state.pt`` says done) and continues an
unfinished one from its last evaluation point; only the CSV and PNG are re-drawn.
"""
from __future__ import annotations

import copy
import csv
import math
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
from ..data import Dataset, Split, load_dataset
from ..data.base import as_split
from ..data.registry import dataset_folder
from ..errors import CheckpointError, ReproduceError
from ..io import atomic_write_csv, load_checkpoint, save_checkpoint
from ..model import VAE
from ..optimizers import build_optimizer
from ..presets import PRESETS
from ..training.objective import batch_loss, objective_terms
from ..training.state import rng_state, set_rng_state

BUDGETS = ("tiny", "quick", "paper")
BATCH = 100  # the paper's minibatch size M
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


def _build(spec: SubRun, x_train: Tensor, dim: int, device):
    m_cfg, o_cfg = paper_configs(spec.which, spec.latent, spec.hidden, len(x_train), spec.lr)
    model = VAE.from_config(m_cfg, dim).to(device)
    if spec.method == "aevb":
        algo = build_optimizer(model.parameters(), o_cfg)
    elif spec.method == "wake-sleep":
        algo = WakeSleep.from_config(model, o_cfg)
    elif spec.method == "mcem":
        algo = MCEM.from_config(model, len(x_train), o_cfg, **spec.mcem)
    else:
        raise ReproduceError(f"unknown method {spec.method!r}")
    return model, algo


def _step(spec: SubRun, model: VAE, algo, xb: Tensor, idx: Tensor) -> None:
    """One minibatch step of the sub-run's method; AEVB's is the training loop's objective and
    loss (the paper's: the one-sample ELBO with the KL in closed form)."""
    if spec.method == "aevb":
        loss = batch_loss(objective_terms(model, xb, PAPER_OBJECTIVE), PAPER_OBJECTIVE, beta=1.0)
        algo.zero_grad(set_to_none=True)
        loss.backward()
        algo.step()
    elif spec.method == "wake-sleep":
        algo.step(xb)
    else:
        algo.step(xb, idx)


STATE_KEYS = ("eval_at", "done", "model", "algo", "rows")


def _load_state(path: Path) -> Optional[dict]:
    """A sub-run's saved state (the run checkpoints' safe load), or None to start it again."""
    if not path.is_file():
        return None
    try:
        return load_checkpoint(path, required=STATE_KEYS, fmt="aevb-reproduce")
    except CheckpointError:
        return None  # unreadable: start the sub-run again


def run_subrun(ctx: Context, spec: SubRun) -> SubRunResult:
    """Train (or continue, or skip) one sub-run; returns its rows and the trained model."""
    folder = ctx.out / "runs" / spec.key
    path = folder / "state.pt"
    data = ctx.data(spec.which)
    x_train = subset(data.train, spec.n_train, seed=ctx.seed)
    device = torch.device(ctx.device)
    x_train = x_train.to(device)
    eval_at = sorted(int(s) for s in spec.eval_at)
    torch.manual_seed(ctx.seed)
    model, algo = _build(spec, x_train, data.dim, device)
    shuffle = torch.Generator().manual_seed(ctx.seed)
    st = _load_state(path)
    seen, pos, rows, perm = 0, 0, [], torch.randperm(len(x_train), generator=shuffle)
    if st is not None and list(st.get("eval_at", [])) == eval_at:
        model.load_state_dict(st["model"])
        algo.load_state_dict(st["algo"])
        if st["done"]:
            ctx.skipped.append(spec.key)
            ctx.log(f"{spec.key}: finished earlier, skipped")
            return SubRunResult(list(st["rows"]), model.eval(), True)
        seen, pos, rows, perm = int(st["seen"]), int(st["pos"]), list(st["rows"]), st["perm"]
        if "rng" in st:  # every RNG state, as a training checkpoint holds them
            set_rng_state(st["rng"], shuffle)
        else:  # states written by earlier versions kept the shuffle and torch streams only
            shuffle.set_state(st["shuffle"])
            torch.set_rng_state(st["torch_rng"])
        ctx.log(f"{spec.key}: continuing from {seen} samples")
    elif st is not None:
        ctx.log(f"{spec.key}: saved state has other evaluation points; starting again")
    ctx.trained.append(spec.key)
    t_start = time.perf_counter()
    train_seconds = float(rows[-1]["train_seconds"]) if rows else 0.0
    model.train()
    for target in eval_at:
        if target <= seen:
            continue
        t0 = time.perf_counter()
        while seen < target:
            if pos >= len(perm):
                perm, pos = torch.randperm(len(x_train), generator=shuffle), 0
            idx = perm[pos:pos + BATCH].to(device)
            pos += BATCH
            _step(spec, model, algo, x_train.index_select(0, idx), idx)
            seen += len(idx)
        train_seconds += time.perf_counter() - t0
        model.eval()
        metrics = spec.evaluate(model, algo)
        model.train()
        bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
        row = {"method": spec.method, "dataset": data.name, "latent": spec.latent, "hidden": spec.hidden,
               "n_train": len(x_train), **spec.info, "samples": seen, **metrics,
               "train_seconds": round(train_seconds, 3)}
        rows.append(row)
        ctx.log(f"{spec.key}: {seen} samples  " + "  ".join(
            f"{k} {v:.2f}" for k, v in metrics.items() if isinstance(v, float)) +
            (f"  (non-finite: {', '.join(bad)})" if bad else ""))
        done = target == eval_at[-1]
        save_checkpoint(path=path, state={"format": "aevb-reproduce", "key": spec.key, "eval_at": eval_at, "done": done,
                           "seen": seen, "pos": pos, "perm": perm, "rows": rows,
                           "model": model.state_dict(), "algo": algo.state_dict(),
                           "rng": rng_state(shuffle)})
        write_csv(folder / "rows.csv", rows)
    ctx.log(f"{spec.key}: done in {time.perf_counter() - t_start:.1f}s")
    return SubRunResult(rows, model.eval(), False)


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
