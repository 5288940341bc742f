"""`aevb evaluate RUN [--k 5000]`: the test ELBO, the importance-weighted bound L_k (log p(x)
estimate), bits per dimension, KL per latent dimension and active units, written as JSON."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from typing import Optional

from ..bounds import estimate_seconds, memory_need
from ..config import ConfigError, check_value
from ..data.base import SPLITS
from ..data.cache import parse_size, physical_memory
from ..devices import effective_precision, parse_device
from ..evaluate import default_output, evaluate_run, write_per_datapoint
from ..io import atomic_write_text
from ..runs import check_output
from ..sampling import model_device
from ..units import format_bytes, format_duration
from .common import (add_checkpoint_argument, add_device_argument, add_parser, add_precision_argument,
                     add_run_argument, check_seed, choose_threads, open_checked_run)


def register(sub) -> None:
    p = add_parser(
        sub, "evaluate", "ELBO, importance-weighted bound L_k and log p(x) estimate of a run",
        "Evaluate a run's last (or, with --checkpoint best, best) checkpoint on one split: the mean ELBO with its two terms (E_q log p(x|z) "
        "and KL), the importance-weighted bound L_k (Burda et al. 2016; L_1 is the ELBO, L_5000 the usual "
        "log-likelihood estimate) with its standard error, bits per dimension where the data are discrete, "
        "KL per latent dimension and the number of active units (Var_x E_q[z_j] > 0.01). All values are "
        "nats per datapoint. The summary is printed and written as JSON (atomically).\n\n"
        "examples:\n"
        "  aevb evaluate runs/mnist                      # ELBO only (k = 1)\n"
        "  aevb evaluate runs/mnist --k 5000             # log p(x) estimate, writes RUN/evaluation-k5000.json\n"
        "  aevb evaluate runs/mnist --k 100 --split valid --per-datapoint valid.csv\n"
        "  aevb evaluate runs/mnist --checkpoint best     # the best epoch's model, writes RUN/evaluation-best.json\n"
        "  aevb evaluate runs/mine --data array:x.npy     # a run trained on data given in memory")
    add_run_argument(p)
    p.add_argument("--k", type=int, default=1,
                   help="importance samples per datapoint (1: the ELBO only; 5000: a log p(x) estimate)")
    p.add_argument("--split", default="test", choices=SPLITS, help="which split to evaluate")
    add_data_argument(p)
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="evaluate the first N datapoints of the split only (a quicker estimate; "
                        "the JSON says how many of how many); None: all")
    p.add_argument("--batch-size", type=int, default=None,
                   help="datapoints per batch; None: as many as fit in the memory budget with all k samples")
    p.add_argument("--chunk", type=int, default=None,
                   help="samples per datapoint evaluated at once; None: as many as --memory-budget allows")
    p.add_argument("--memory-budget", metavar="SIZE", default=None,
                   help="memory the command may plan for, as in `aevb train` (e.g. 500MB, 8GB): data "
                        "larger than it are streamed from the on-disk cache, and the importance samples "
                        "are taken in chunks whose temporaries stay within it (at most 16MB a chunk, the "
                        "fastest size on a CPU, except for a model bound by reading its weights, whose "
                        "batches take 64 rows); default: the run's own budget for the data")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the importance samples (and of the one fixed binarization of "
                        "dynamically binarized data)")
    p.add_argument("--out", metavar="FILE", help="JSON to write; None: RUN/evaluation[-best][-SPLIT][-kK].json")
    p.add_argument("--per-datapoint", metavar="FILE",
                   help="also write one row per datapoint (index, label, elbo, log_px_given_z, kl, lk) "
                        "as .csv or .npy")
    p.add_argument("--compile", action="store_true",
                   help="fuse the Bernoulli likelihood with torch.compile (compiles for ~1 minute once; "
                        "pays off for long evaluations)")
    p.add_argument("--force", action="store_true",
                   help="run an evaluation estimated to take over a day or more memory than this machine has")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar (one is shown on a terminal)")
    add_device_argument(p)
    add_precision_argument(p)
    add_checkpoint_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.k is None or args.k < 1:
        raise ConfigError(f"--k must be a positive number of importance samples (1 for the ELBO only); got {args.k}")
    for name in ("batch_size", "chunk", "limit"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1; got {v}")
    budget = chunk_budget(args.memory_budget)
    check_seed(args.seed)
    if args.device != "auto":
        parse_device(args.device)
    run_ = open_checked_run(args)
    # every output is checked before the (maybe long) evaluation
    out = Path(args.out) if args.out else default_output(run_.path, args.split, args.k, args.limit, args.checkpoint)
    check_output(out, "--out")
    if args.per_datapoint:
        check_output(args.per_datapoint, "--per-datapoint", suffixes=(".csv", ".npy"))
        if Path(args.per_datapoint).resolve() == out.resolve():
            raise ConfigError(f"--per-datapoint and --out are the same file {out}; give two names")
    result = evaluate_run(run_, split=args.split, k=args.k, batch_size=args.batch_size, chunk=args.chunk,
                          seed=args.seed, device=args.device, progress=args.progress,
                          budget=budget, compile=args.compile,
                          per_datapoint=bool(args.per_datapoint), check=lambda m, x: plan(args, m, x),
                          limit=args.limit, checkpoint=args.checkpoint, precision=args.precision,
                          data=load_run_data(run_, args.data, progress=args.progress, memory_budget=args.memory_budget))
    rows = result.pop("per_datapoint", None)
    # Files are written only now, each atomically: an interrupted evaluation leaves none.
    if rows is not None:
        write_per_datapoint(args.per_datapoint, rows)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(format_summary(result))
    if rows is not None:
        print(f"per-datapoint rows: {args.per_datapoint}")
    print(f"wrote {out}")
    return 0


def add_data_argument(p: argparse.ArgumentParser) -> None:
    """--data SOURCE: shared by `aevb evaluate` and `aevb plot`."""
    p.add_argument("--data", metavar="SOURCE", default=None,
                   help="the data to use instead of the run's own (array:FILE, folder:DIR or a data set name), split "
                        "and binarized with the run's settings and checked against its shape; needed for a run "
                        "trained on data given in memory")


def load_run_data(run_, source: Optional[str], progress: bool = True, memory_budget: Optional[str] = None):
    """The run's data set, or with ``source`` (--data) those data prepared with the run's own
    settings and checked against the shape its model takes; one line naming the run when
    neither can be had (e.g. a run trained on data given in memory, without --data)."""
    import dataclasses

    from ..data import load_configured

    d = run_.config.data
    if memory_budget is not None:
        d = dataclasses.replace(d, memory_budget=memory_budget)
    return load_configured(d, progress=progress, data=source, run=run_.path,
                           image_shape=run_.image_shape() if source is not None else None)


def chunk_budget(size: Optional[str]) -> Optional[int]:
    """Bytes one chunk's temporaries may take: ``--memory-budget`` (a size, checked like train's),
    or None (not given, or auto) for the engine's own sizing (aevb.bounds.budget_rows: its
    default, the fastest on a CPU, is never exceeded except for a model bound by reading its
    weights, and then within the budget given)."""
    if size is None:
        return None
    check_value("data.memory_budget", size, "--memory-budget")
    if size.strip().lower() == "auto":
        return None
    n = parse_size(size)
    if n < 1_000_000:
        raise ConfigError(f"--memory-budget {size} is {format_bytes(n)}: give a size such as 500MB or 8GB "
                          "(bytes, as in `aevb train`), at least 1MB")
    return n


# an evaluation estimated to take longer than this (seconds) is refused without --force
MAX_SECONDS = 24 * 3600


def plan(args: argparse.Namespace, model, x) -> None:
    """Print the estimated time and memory of the evaluation; refuse an absurd one (over a day,
    or more memory than the machine has) unless --force. The threads are chosen first (--threads,
    or for the model's size), so that the estimate times what will run."""
    choose_threads(args, model)
    budget = chunk_budget(args.memory_budget)
    precision = effective_precision(model_device(model), args.precision)
    need = memory_need(model, len(x), args.k, args.batch_size, args.chunk, budget, precision)
    ram = physical_memory()
    what = f"{len(x)} datapoints x k = {args.k} samples"
    if ram and need > 0.8 * ram and not args.force:
        raise ConfigError(f"evaluating {what} needs about {need / 1e9:,.1f} GB of memory, more than this "
                          f"machine's {ram / 1e9:.1f} GB: lower --memory-budget, --batch-size or --chunk, or "
                          "--force to try anyway")
    seconds = estimate_seconds(model, x, args.k, budget)
    said = f"{what}: about {format_duration(seconds)} and {format_bytes(need)} of memory (estimate)"
    if seconds > MAX_SECONDS and not args.force:
        raise ConfigError(f"evaluating {said}; that is over a day: use a smaller --k (5000 is the usual "
                          "log-likelihood estimate), or --force to run it anyway")
    if seconds > 10:
        print(f"evaluating {said}", file=sys.stderr, flush=True)


def format_summary(r: dict) -> str:
    """The human-readable summary printed by `aevb evaluate`."""
    e, lk = r["elbo"], r["lk"]
    of = "" if r.get("split_datapoints", r["n"]) == r["n"] else f" (the first, of {r['split_datapoints']})"
    which = f"{r['checkpoint']} checkpoint, " if "checkpoint" in r else ""
    lines = [f"{r['run']}: {r['split']} split, {r['n']} datapoints{of} of {r['dim']} values, {which}epoch {r['epoch']}, "
             f"k = {r['k']} (seed {r['seed']}, {r['seconds']:.1f}s)  [nats per datapoint]",
             f"  ELBO            {e['mean']:12.4f} +- {e['se']:.4f}   = E_q log p(x|z) {e['log_px_given_z']:.4f}"
             f" - KL {e['kl']:.4f}   (loss {r['loss']:.4f})"]
    if r["k"] > 1:
        lines.append(f"  L_{r['k']:<13d} {lk['mean']:12.4f} +- {lk['se']:.4f}   (log p(x) >= L_k; "
                     f"L_k - ELBO = {lk['gap_to_elbo']:.4f})")
    bpd = r["bits_per_dim"]
    if bpd is not None:
        s = f"  bits/dim        ELBO {bpd['elbo']:.4f}"
        if r["k"] > 1:
            s += f", L_{r['k']} {bpd['lk']:.4f} +- {bpd['lk_se']:.4f}"
        lines.append(s)
    lines.append(f"  bits/dim note:  {r['bits_per_dim_convention']}")
    kl = r["kl_per_dim"]
    lines.append(f"  active units    {r['active_units']} of {r['latent_dim']} "
                 f"(Var_x E_q[z_j] > {r['active_unit_threshold']:g})")
    layers = r.get("layers")
    if layers:
        for i, (size, active) in enumerate(zip(layers["sizes"], layers["active_units"])):
            kl_l = f", KL {layers['kl'][i]:.3f} nats" if layers.get("kl") else ""
            lines.append(f"  layer z{i + 1}       {active} of {size} units active{kl_l}")
    if kl is None:
        lines.append("  KL per dim      not defined: the KL of a flow posterior, a learned prior or stacked layers does not split "
                     "into units")
    else:
        order = sorted(range(len(kl)), key=lambda j: -kl[j])
        shown = ", ".join(f"z{j} {kl[j]:.3f}" for j in order[:10]) + (" ..." if len(kl) > 10 else "")
        lines.append(f"  KL per dim      {shown}")
    if r.get("binarization"):
        lines.append(f"  note: {r['binarization']}")
    if not all(math.isfinite(v) for v in (e["mean"], lk["mean"])):
        lines.append("  warning: a bound is not finite")
    return "\n".join(lines)
