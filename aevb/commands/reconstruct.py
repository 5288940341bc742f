"""`aevb reconstruct RUN`: data images over their reconstructions (decoder mean at z = E_q[z]);
with --data, one reconstruction per item of new data, as a PNG under the item's own name."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..data.base import SPLITS
from ..errors import ConfigError
from ..images import save_grid
from ..newdata import OutputClaim, PngFolder, check_png_folder, png_names, reconstruction_blocks, resolve_output
from ..runs import check_output
from ..sampling import paired_rows, reconstructions
from .common import (add_checkpoint_argument, add_device_argument, add_grid_arguments, add_parser,
                     add_precision_argument, add_run_argument, check_seed, open_grid_run, precision_of, say)
from .items import add_unfinished_argument, model_and_items, open_run


def register(sub) -> None:
    p = add_parser(sub, "reconstruct", "write data images over their reconstructions",
                   "Encode images of a split, decode the posterior mean, and write the originals "
                   "(odd rows) over their reconstructions (even rows) as a PNG grid. With --data SOURCE, "
                   "prepare new data as the run's own data were and write one PNG per item into the "
                   "folder --out, under the item's name (a file's path relative to its folder, or the "
                   "row's index).")
    add_run_argument(p)
    add_grid_arguments(p, 8, "number of images", 8, "images per row", "reconstructions.png")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--start", type=int, default=0, help="index of the first image")
    p.add_argument("--data", metavar="SOURCE", nargs="+", default=None,
                   help="new data (folder:DIR, array:FILE, NAME:SPLIT, image files): one PNG per item in --out")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="with --data: leave out image files that cannot be read (and say which)")
    p.add_argument("--seed", type=int, default=0, help="with --data: seed of a binarization")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_device_argument(p)
    add_checkpoint_argument(p)
    add_unfinished_argument(p, "with --data: ")
    add_precision_argument(p, bounds=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.data is not None:
        return run_data(args)
    run_, out, loaded = open_grid_run(args, "images", "reconstructions.png")
    model = loaded.model
    data = run_.load_data()
    split = data.split(args.split)
    if not 0 <= args.start < len(split):
        raise ConfigError(f"--start {args.start} is outside the {args.split} split: choose 0..{len(split) - 1}")
    x = split.rows(args.start, args.start + args.n)
    with precision_of(args, model):
        rec = reconstructions(model, x)
    save_grid(out, paired_rows(x, rec, args.ncol), data.image_shape, min(args.ncol, len(x)))
    print(out)
    return 0


# options of the grid of a split, which --data (every item of a source) does not take, with their defaults
GRID_ONLY = (("-n", "n", 8), ("--ncol", "ncol", 8), ("--split", "split", "test"), ("--start", "start", 0))


def run_data(args: argparse.Namespace) -> int:
    given = [flag for flag, dest, default in GRID_ONLY if getattr(args, dest) != default]
    if given:
        raise ConfigError(f"{', '.join(given)} choose images of the run's split for a grid; with --data every item of "
                          f"{' '.join(args.data)} is reconstructed into --out: drop {', '.join(given)} or --data")
    check_seed(args.seed)
    if not args.out:
        raise ConfigError("--data needs --out DIR, a new or empty folder for one PNG per item")
    run_ = open_run(args)
    out = check_output(args.out, "--out", folder=True)
    if out.suffix.lower() == ".png" and not out.exists():
        raise ConfigError(f"--out {out}: with --data, --out is a folder (one PNG per item), not a PNG file")
    out = resolve_output(out)
    with OutputClaim(out, say(args), shown=args.out):  # one writer of --out; what a killed one left is removed
        check_png_folder(Path(args.out))
        model, items = model_and_items(run_, args)
        names = png_names(items.ids, out)
        with PngFolder(Path(out), items.image_shape) as folder, precision_of(args, model):
            for i, rec in reconstruction_blocks(model, items.split, progress=args.progress):
                folder.write(names[i:i + len(rec)], rec)
    print(f"reconstructed {len(items)} items of {items.source} into {args.out}")
    return 0
