"""`aevb encode RUN --data SOURCE --out FILE`: the posterior q(z|x) of every item of new data."""
from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..newdata import (MAX_SAMPLES, TABLE_SUFFIXES, OutputClaim, check_ids_fit, check_samples, check_table_path,
                       encode_items, matrix_note, resolve_output, write_table)
from ..runs import check_output
from .common import add_parser, add_precision_argument, add_run_argument, check_seed, precision_of, say
from .items import add_data_arguments, model_and_items, open_run


def register(sub) -> None:
    p = add_parser(sub, "encode", "write the posterior mean and log-variance of every item of new data",
                   "Prepare SOURCE as the run's own data were (size, crop, colour, scaling, binarization), "
                   "encode it batch by batch and write, per item, its identity (id), the posterior mean "
                   "(mu) and log-variance (log_var) of q(z|x), and with --samples N also N draws z. A .npz "
                   "file holds these as named arrays and a .csv file one row per item (id, mu_0, ..., "
                   "log_var_0, ..., z_0_0, ...); a .npy file holds only the posterior means, as a float "
                   "matrix [N, J], with the ids in a text file beside it (codes.npy: codes.ids.txt, one "
                   "per line).")
    add_run_argument(p)
    add_data_arguments(p)
    p.add_argument("--out", metavar="FILE", required=True,
                   help="a .npz (id, mu, log_var, z), .csv (one row per item) or .npy file (the posterior "
                        "means as a float matrix [N, J]; codes.npy has its ids in codes.ids.txt)")
    p.add_argument("--samples", type=int, default=0,
                   help=f"draws z ~ q(z|x) per item (0: none; at most {MAX_SAMPLES}; .npz or .csv only)")
    add_precision_argument(p, bounds=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_seed(args.seed)
    check_samples(args.samples, python=False)
    if args.samples and str(args.out).lower().endswith(".npy"):
        raise ConfigError(f"--out {args.out}: a .npy file holds the posterior means only (a float matrix [N, J]), "
                          f"not the {args.samples} draws of --samples; write a .npz or .csv file")
    run_ = open_run(args)
    check_output(args.out, "--out", suffixes=TABLE_SUFFIXES)
    check_table_path(args.out)
    out = resolve_output(args.out)
    with OutputClaim(out, say(args), shown=args.out):  # one writer of --out; what a killed one left is removed
        model, items = model_and_items(run_, args)
        check_ids_fit(out, items.ids)  # before the work, not after it
        with precision_of(args, model):
            codes = encode_items(model, items, args.samples, args.seed, progress=args.progress, python=False)
        write_table(out, codes)
    print(f"encoded {len(items)} items of {items.source} ({model.latent_dim} latent dimensions"
          + (f", {args.samples} draws each" if args.samples else "") + f"): {args.out}{matrix_note(out, codes)}")
    return 0
