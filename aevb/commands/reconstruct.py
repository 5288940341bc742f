"""`aevb reconstruct RUN`: data images over their reconstructions (decoder mean at z = E_q[z])."""
from __future__ import annotations

import argparse

from ..data.base import SPLITS
from ..errors import ConfigError
from ..sampling import paired_rows, reconstructions
from ..images import save_grid
from .common import add_device_argument, add_grid_arguments, add_parser, add_run_argument, open_grid_run


def register(sub) -> None:
    p = add_parser(sub, "reconstruct", "write data images over their reconstructions",
                   "Encode images of a split, decode the posterior mean, and write the originals "
                   "(odd rows) over their reconstructions (even rows) as a PNG grid.")
    add_run_argument(p)
    add_grid_arguments(p, 8, "number of images", 8, "images per row", "reconstructions.png")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--start", type=int, default=0, help="index of the first image")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    run_, out, model = open_grid_run(args, "images", "reconstructions.png")
    data = run_.load_data()
    split = data.split(args.split)
    if not 0 <= args.start < len(split):
        raise ConfigError(f"--start {args.start} is outside the {args.split} split: choose 0..{len(split) - 1}")
    x = split.rows(args.start, args.start + args.n)
    save_grid(out, paired_rows(x, reconstructions(model, x), args.ncol), data.image_shape, min(args.ncol, len(x)))
    print(out)
    return 0
