"""`aevb score RUN --data SOURCE --k K --out FILE`: the ELBO, L_k and novelty scores of every item of new data."""
from __future__ import annotations

import argparse
import contextlib
import sys

import numpy as np

from ..bounds import estimate_seconds
from ..errors import ConfigError
from ..newdata import (COMPRESSORS, DEFAULT_COMPRESSOR, DEFAULT_RANK_BY, RANK_BY, TABLE_SUFFIXES, TYPICALITY_TRAIN,
                       OutputClaim, check_ids_fit, check_k, check_table_path, matrix_note, missing_rank, rank_against,
                       resolve_output, score_novelty, write_table)
from ..runs import check_output
from .common import add_parser, add_precision_argument, add_run_argument, check_seed, precision_of, say
from ..units import format_duration
from .evaluate import MAX_SECONDS
from .items import add_data_arguments, model_and_items, open_run

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
# the typicality test: bootstrap sets drawn from the reference split, and its level
BOOTSTRAP, ALPHA = 1000, 0.01


def register(sub) -> None:
    p = add_parser(sub, "score", "write the ELBO, L_k and novelty scores of every item of new data",
                   "Prepare SOURCE as the run's own data were, and write per item its identity (id), the "
                   "ELBO, L_k with its standard error (from the spread of the k importance weights) and, "
                   "for discrete data, bits/dim, all from the bound engine that `aevb evaluate` uses (the "
                   "same numbers for the same rows and seed); then novelty scores, higher for more novel "
                   "items: complexity (L(x), bits of the 8-bit image under --compressor) and novelty = "
                   "-log2 p(x) - L(x) (bits; input complexity, Serra et al. 2020), and with --background "
                   "background_lk and lr = L_k(background) - L_k (nats; likelihood ratio, Ren et al. 2019). "
                   "--reference adds each item's percentile: the percentage of the run's own split with a "
                   "lower --rank-by score (100: more novel than all of it); --flag-above P adds a column "
                   "flag = percentile > P. --typicality tests the items as one set (Nalisnick et al. 2019). "
                   "A .npz file holds the columns as named arrays and a .csv file one row per item; a .npy "
                   "file holds them as a float matrix [N, C] (columns elbo, lk, lk_se, then bpd_elbo, bpd_lk, "
                   "complexity, novelty, background_lk, lr, percentile and flag where given), with the ids in "
                   "a text file beside it (scores.npy: scores.ids.txt, one per line).")
    add_run_argument(p)
    add_data_arguments(p)
    p.add_argument("--k", type=int, default=100, help="importance samples per item (1: the ELBO only)")
    p.add_argument("--out", metavar="FILE", required=True,
                   help="a .npz (named columns), .csv (one row per item) or .npy file (a float matrix [N, C]; "
                        "scores.npy has its ids in scores.ids.txt)")
    p.add_argument("--reference", choices=["test", "valid"], default=None,
                   help="the run's own split to rank the items against")
    p.add_argument("--rank-by", choices=RANK_BY, default=None,
                   help="the score of the percentile and flag, higher for more novel items: novelty (input "
                        "complexity, the default), lr (needs --background), lk (-L_k) or elbo (-ELBO)")
    p.add_argument("--flag-above", type=float, default=None, metavar="P",
                   help="flag items whose percentile is above P (needs --reference)")
    p.add_argument("--background", metavar="RUN", default=None,
                   help="a background run (the same network trained on perturbed data: aevb train --background-of "
                        "RUN) for the likelihood-ratio score lr")
    p.add_argument("--compressor", choices=list(COMPRESSORS), default=DEFAULT_COMPRESSOR,
                   help=f"the lossless compressor of the complexity term L(x) (default: {DEFAULT_COMPRESSOR})")
    p.add_argument("--no-novelty", dest="novelty", action="store_false",
                   help="no complexity and novelty columns (the bounds, and lr with --background, only)")
    p.add_argument("--typicality", action="store_true",
                   help="also test the items as one set: is their mean -L_k as far from the training set's as "
                        f"sets of as many items of the run's split (--reference, default test) are in {ALPHA:g} of "
                        f"{BOOTSTRAP} bootstrap draws? (scores up to {TYPICALITY_TRAIN} training items)")
    p.add_argument("--force", action="store_true", help="run a scoring estimated to take over a day")
    add_precision_argument(p)
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
    rank_by = args.rank_by or DEFAULT_RANK_BY
    if args.rank_by is not None:
        why = missing_rank(rank_by, args.background is not None, None)
        if why:
            raise ConfigError(f"--rank-by {why}")
        if args.reference is None:
            raise ConfigError("--rank-by chooses the score of the percentile; give --reference test or valid")
        if rank_by == "novelty" and not args.novelty:
            raise ConfigError("--rank-by novelty needs the novelty column, which --no-novelty leaves out")
    run_ = open_run(args)
    bg = None
    if args.background is not None:
        bg = run_.check_background(args.background, "--background", args.allow_unfinished)
    check_output(args.out, "--out", suffixes=TABLE_SUFFIXES)
    check_table_path(args.out)
    # one writer of --out, to the end; what a killed one left is removed
    out = claims.enter_context(OutputClaim(resolve_output(args.out), say(args), shown=args.out)).out
    model, items = model_and_items(run_, args)
    check_ids_fit(out, items.ids)  # before the work, not after it
    why = missing_rank(rank_by, bg is not None, items.kind) if args.novelty else "--no-novelty"
    if why and args.reference is not None:
        if args.rank_by is not None:
            raise ConfigError(f"--rank-by {why}")
        rank_by = "lk"  # the default where there is no novelty score: the raw likelihood
    compressor = args.compressor if args.novelty else None
    bg_model = None if bg is None else bg.load_model(next(model.parameters()).device, args.checkpoint)
    data = ref = None
    if args.reference is not None or args.typicality:
        data = run_.load_data(progress=args.progress)
        ref = run_.own_items(args.reference or "test", args.seed, data)
    train_n = min(TYPICALITY_TRAIN, len(data.train)) if args.typicality else 0
    with precision_of(args, model):  # the estimate's probe too
        n = len(items) + (len(ref) if ref is not None else 0) + train_n
        seconds = estimate_seconds(model, items.split, args.k) * n / len(items) * (2 if bg is not None else 1)
        said = f"scoring {n} datapoints x k = {args.k} samples: about {format_duration(seconds)} (estimate)"
        if seconds > MAX_SECONDS and not args.force:
            raise ConfigError(f"{said}; that is over a day: use a smaller --k, or --force to run it anyway")
        if seconds > 10:
            print(said, file=sys.stderr, flush=True)
        likelihood = run_.config.model.likelihood
        cols = score_novelty(model, items, args.k, likelihood, args.seed, args.progress, compressor, bg_model)
        ref_cols = None
        if ref is not None:
            ref_cols = score_novelty(model, ref, args.k, likelihood, args.seed, args.progress, compressor, bg_model)
        if args.reference is not None:
            cols = rank_against(cols, ref_cols, rank_by, args.flag_above)
        typical = None
        if args.typicality:
            typical = run_.typicality_of(model, -cols["lk"], args.k, args.reference or "test", args.seed, data,
                                         BOOTSTRAP, ALPHA, progress=args.progress, ref_nll=-ref_cols["lk"])
    write_table(out, cols)
    print(summary(cols, args.k, items, args.reference, rank_by))
    if typical is not None:
        print(typical.line())
    print(f"wrote {args.out}{matrix_note(out, cols)}")
    return 0


def summary(cols: dict, k: int, items, reference, rank_by: str = DEFAULT_RANK_BY) -> str:
    lines = [f"{items.source}: {len(items)} items of {items.dim} values, k = {k}  [nats per item; novelty, "
             "complexity: bits]",
             "  quantile " + " ".join(f"{q * 100:>9g}%" for q in QUANTILES)]
    names = ("elbo", "lk") + tuple(c for c in ("bpd_lk", "novelty", "lr") if c in cols)
    for name in names:
        label = {"elbo": "ELBO", "lk": f"L_{k}", "bpd_lk": "bits/dim"}.get(name, name)
        lines.append(f"  {label:<8s} " + " ".join(f"{v:10.3f}" for v in np.quantile(cols[name], QUANTILES)))
    if "flag" in cols:
        lines.append(f"  flagged  {int(cols['flag'].sum())} of {len(items)} (percentile of {rank_by} against the "
                     f"run's {reference} split)")
    return "\n".join(lines)
