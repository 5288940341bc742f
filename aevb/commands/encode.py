"""`aevb encode RUN --data SOURCE --out FILE`: the posterior q(z|x) of every item of new data."""
from __future__ import annotations

import argparse

import numpy as np

from ..errors import ConfigError
from ..newdata import TABLE_SUFFIXES, encode, write_table
from ..runs import check_output
from .common import add_parser, add_run_argument, check_seed
from .items import add_data_arguments, model_and_items, open_run


def register(sub) -> None:
    p = add_parser(sub, "encode", "write the posterior mean and log-variance of every item of new data",
                   "Prepare SOURCE as the run's own data were (size, crop, colour, scaling, binarization), "
                   "encode it batch by batch and write, per item, its identity (id), the posterior mean "
                   "(mu) and log-variance (log_var) of q(z|x), and with --samples N also N draws z.")
    add_run_argument(p)
    add_data_arguments(p)
    p.add_argument("--out", metavar="FILE", required=True, help="a .npz, .npy or .csv file")
    p.add_argument("--samples", type=int, default=0, help="draws z ~ q(z|x) per item (0: none)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_seed(args.seed)
    if not 0 <= args.samples <= 10000:
        raise ConfigError(f"--samples must be in 0..10000; got {args.samples}")
    run_ = open_run(args)
    check_output(args.out, "--out", suffixes=TABLE_SUFFIXES)
    model, items = model_and_items(run_, args)
    codes = encode(model, items.split, args.samples, args.seed, progress=args.progress)
    write_table(args.out, {"id": np.asarray(items.ids), **codes})
    print(f"encoded {len(items)} items of {items.source} ({model.latent_dim} latent dimensions"
          + (f", {args.samples} draws each" if args.samples else "") + f"): {args.out}")
    return 0
