"""`aevb sample RUN -n 64`: a grid of samples from the model's prior p(z) through p(x|z)."""
from __future__ import annotations

import argparse
import math

from ..sampling import prior_samples
from ..images import save_grid
from .common import (add_checkpoint_argument, add_device_argument, add_grid_arguments, add_parser, add_run_argument,
                     check_seed, open_grid_run)


def register(sub) -> None:
    p = add_parser(sub, "sample", "write a grid of samples from the model",
                   "Draw z ~ N(0, I), decode, and write the likelihood's mean (or a draw from p(x|z) "
                   "with --draw) as a PNG grid. --seed fixes z and the draw, on any device.")
    add_run_argument(p)
    add_grid_arguments(p, 64, "number of samples", None, "images per row (default: about sqrt(n))", "samples.png")
    p.add_argument("--draw", action="store_true", help="sample x ~ p(x|z) instead of showing its mean")
    p.add_argument("--seed", type=int, default=0, help="seed of z ~ N(0, I) and of the draw from p(x|z)")
    add_device_argument(p)
    add_checkpoint_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_seed(args.seed)
    run_, out, loaded = open_grid_run(args, "samples", "samples.png")
    _, x = prior_samples(loaded.model, args.n, seed=args.seed, draw=args.draw)
    save_grid(out, x, loaded.image_shape, args.ncol or max(1, int(math.ceil(math.sqrt(args.n)))))
    print(out)
    return 0
