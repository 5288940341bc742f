"""`aevb score RUN --data SOURCE --k K --out FILE`: the ELBO and L_k of every item of new data."""
from __future__ import annotations

import argparse
import contextlib
import sys

import numpy as np

from ..bounds import estimate_seconds
from ..errors import ConfigError
from ..evaluate import split_data
from ..newdata import (TABLE_SUFFIXES, OutputClaim, check_k, check_table_path, matrix_note, resolve_output, score,
                       score_columns, write_table)
from ..runs import check_output
from .common import add_parser, add_run_argument, check_seed, say
from ..units import format_duration
from .evaluate import MAX_SECONDS
from .items import add_data_arguments, model_and_items, open_run

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def register(sub) -> None:
    p = add_parser(sub, "score", "write the ELBO and L_k of every item of new data",
                   "Prepare SOURCE as the run's own data were, and write per item its identity (id), the "
                   "ELBO, L_k with its standard error (from the spread of the k importance weights) and, "
                   "for discrete data, bits/dim, all from the bound engine that `aevb evaluate` uses (the "
                   "same numbers for the same rows and seed). --reference adds each item's percentile: the "
                   "percentage of the run's own split that scores a higher L_k (100: less likely than all "
                   "of it); --flag-above P adds a column flag = percentile > P. A .npz file holds the columns "
                   "as named arrays and a .csv file one row per item; a .npy file holds them as a float matrix "
                   "[N, C] (columns elbo, lk, lk_se, then bpd_elbo, bpd_lk, percentile and flag where given), "
                   "with the ids in a text file beside it (scores.npy: scores.ids.txt, one per line).")
    add_run_argument(p)
    add_data_arguments(p)
    p.add_argument("--k", type=int, default=100, help="importance samples per item (1: the ELBO only)")
    p.add_argument("--out", metavar="FILE", required=True,
                   help="a .npz (named columns), .csv (one row per item) or .npy file (a float matrix [N, C]; "
                        "scores.npy has its ids in scores.ids.txt)")
    p.add_argument("--reference", choices=["test", "valid"], default=None,
                   help="the run's own split to rank the items against")
    p.add_argument("--flag-above", type=float, default=None, metavar="P",
                   help="flag items whose percentile is above P (needs --reference)")
    p.add_argument("--force", action="store_true", help="run a scoring estimated to take over a day")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as claims:  # the claim of --out, held until the table is written
        return score_items(args, claims)


def score_items(args: argparse.Namespace, claims: contextlib.ExitStack) -> int:
    check_seed(args.seed)
    check_k(args.k, python=False)
    if args.flag_above is not None:
        if args.reference is None:
            raise ConfigError("--flag-above needs --reference test or --reference valid (the split to rank against)")
        if not 0 <= args.flag_above <= 100:
            raise ConfigError(f"--flag-above is a percentile in 0..100; got {args.flag_above}")
    run_ = open_run(args)
    check_output(args.out, "--out", suffixes=TABLE_SUFFIXES)
    check_table_path(args.out)
    # one writer of --out, to the end; what a killed one left is removed
    out = claims.enter_context(OutputClaim(resolve_output(args.out), say(args), shown=args.out)).out
    model, items = model_and_items(run_, args)
    ref = None
    if args.reference is not None:
        ref = split_data(run_, args.reference, args.seed, run_.load_data(progress=args.progress))[0]
    n = len(items) + (len(ref) if ref is not None else 0)
    seconds = estimate_seconds(model, items.split, args.k) * n / len(items)
    said = f"scoring {n} datapoints x k = {args.k} samples: about {format_duration(seconds)} (estimate)"
    if seconds > MAX_SECONDS and not args.force:
        raise ConfigError(f"{said}; that is over a day: use a smaller --k, or --force to run it anyway")
    if seconds > 10:
        print(said, file=sys.stderr, flush=True)
    cols = score_columns(model, items, args.k, run_.config.model.likelihood, args.seed, args.progress)
    if ref is not None:
        ref_lk = np.sort(score(model, ref, args.k, args.seed, args.progress).lk.numpy())
        cols = cols.assign(percentile=percentile_above(cols["lk"], ref_lk))
        if args.flag_above is not None:
            cols = cols.assign(flag=cols["percentile"] > args.flag_above)
    write_table(out, cols)
    print(summary(cols, args.k, items, args.reference))
    print(f"wrote {args.out}{matrix_note(out, cols)}")
    return 0


def percentile_above(lk: np.ndarray, ref_sorted: np.ndarray) -> np.ndarray:
    """Per item: the percentage of the reference scores strictly above its L_k."""
    above = len(ref_sorted) - np.searchsorted(ref_sorted, lk, side="right")
    return 100.0 * above / len(ref_sorted)


def summary(cols: dict, k: int, items, reference) -> str:
    lines = [f"{items.source}: {len(items)} items of {items.dim} values, k = {k}  [nats per item]",
             "  quantile " + " ".join(f"{q * 100:>9g}%" for q in QUANTILES)]
    for name in ("elbo", "lk") + (("bpd_lk",) if "bpd_lk" in cols else ()):
        label = {"elbo": "ELBO", "lk": f"L_{k}", "bpd_lk": "bits/dim"}[name]
        lines.append(f"  {label:<8s} " + " ".join(f"{v:10.3f}" for v in np.quantile(cols[name], QUANTILES)))
    if "flag" in cols:
        lines.append(f"  flagged  {int(cols['flag'].sum())} of {len(items)} (percentile against the run's "
                     f"{reference} split)")
    return "\n".join(lines)
