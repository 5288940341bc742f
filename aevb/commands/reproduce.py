"""`aevb reproduce NAME`: the AEVB paper's figures (and the amortization-gap study), resumable.

    aevb reproduce figure2 --budget quick            # MNIST + Frey Face, a few minutes on a CPU
    aevb reproduce figure3 --budget paper --out runs/fig3
    aevb reproduce figure4 --dataset digits          # no data needed (sklearn digits)

Each experiment writes NAME.csv (curve data) and NAME.png (the figure) into one folder (default
runs/reproduce/NAME-BUDGET); running the same command again skips finished sub-runs and continues
an interrupted one. See docs/reproduction.md for what each budget does and how it departs from
the paper.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .common import add_parser, check_seed, check_threads

EXPERIMENTS = ("figure2", "figure3", "figure4", "figure5", "amortization")


def register(sub) -> None:
    p = add_parser(sub, "reproduce", "reproduce a figure of the AEVB paper (resumable)", __doc__)
    p.add_argument("name", choices=EXPERIMENTS + ("all",), metavar="NAME",
                   help="figure2, figure3, figure4, figure5, amortization, or all")
    p.add_argument("--budget", default="quick", choices=("tiny", "quick", "paper"),
                   help="tiny: seconds (tests); quick: minutes on a CPU; paper: the paper's sample counts")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/reproduce/NAME-BUDGET)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="folder holding mnist/ and frey_face/ (default: $AEVB_DATA or ~/.cache/aevb)")
    p.add_argument("--mnist-dir", metavar="DIR", help="the MNIST folder itself")
    p.add_argument("--frey-dir", metavar="DIR", help="the Frey Face folder itself")
    p.add_argument("--dataset", choices=("paper", "digits"), default="paper",
                   help="'digits' replaces MNIST and Frey Face by scikit-learn's embedded 8x8 digits")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1 is fastest for these small networks on a shared CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments import ReproduceError, run_experiment
    from ..config import ConfigError

    from ..experiments import default_out
    from ..devices import resolve_device
    from ..threads import set_threads
    from ..runs import check_output, is_run

    check_threads(args.threads)
    check_seed(args.seed)
    resolve_device(args.device)
    names = EXPERIMENTS if args.name == "all" else (args.name,)
    if args.out and len(names) > 1:
        raise ConfigError("--out names one folder; give it with a single experiment, not 'all'")
    for name in names:
        out = args.out or default_out(name, args.budget)
        check_output(out, "--out", folder=True)
        if is_run(out):
            raise ConfigError(f"--out {out} is a training run folder; give a folder of its own for the experiment")
    for d in ("data_dir", "mnist_dir", "frey_dir"):
        v = getattr(args, d)
        if v and Path(v).expanduser().exists() and not Path(v).expanduser().is_dir():
            raise ConfigError(f"--{d.replace('_', '-')} {v} is a file, not a folder")
    set_threads(args.threads)
    for name in names:
        t0 = time.perf_counter()
        try:
            res = run_experiment(name, args.budget, args.out, None if args.dataset == "paper" else args.dataset,
                                 args.data_dir, args.mnist_dir, args.frey_dir, not args.no_download,
                                 args.device, args.seed, verbose=not args.quiet)
        except ReproduceError as e:
            raise ConfigError(str(e)) from None
        ctx = res["context"]
        print(f"{name}: {res['csv']}  {res['png']}  ({len(ctx.trained)} sub-runs trained, "
              f"{len(ctx.skipped)} skipped, {time.perf_counter() - t0:.1f}s)")
    sys.stdout.flush()
    return 0
