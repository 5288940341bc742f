"""`aevb reconstruct RUN`: data images over their reconstructions (decoder mean at z = E_q[z])."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_device_argument, add_parser, add_run_argument


def register(sub) -> None:
    p = add_parser(sub, "reconstruct", "write data images over their reconstructions",
                   "Encode images of a split, decode the posterior mean, and write the originals "
                   "(odd rows) over their reconstructions (even rows) as a PNG grid.")
    add_run_argument(p)
    p.add_argument("-n", type=int, default=8, help="number of images")
    p.add_argument("--ncol", type=int, default=8, help="images per row")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--start", type=int, default=0, help="index of the first image")
    p.add_argument("--out", metavar="FILE", help="PNG to write (default: RUN/images/reconstructions.png)")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..config import ConfigError
    from ..images import save_grid
    from ..runs import Run, check_output, resolve_device

    if not 1 <= args.n <= 10000:
        raise ConfigError(f"-n must be in 1..10000 images; got {args.n}")
    if args.ncol < 1:
        raise ConfigError(f"--ncol must be at least 1; got {args.ncol}")
    run_ = Run(args.run)
    out = Path(args.out) if args.out else run_.images_dir / "reconstructions.png"
    check_output(out, "--out", suffixes=(".png",))
    device = resolve_device(args.device)
    data = run_.load_data()
    split = data.split(args.split)
    if not 0 <= args.start < len(split):
        raise ConfigError(f"--start {args.start} is outside the {args.split} split: choose 0..{len(split) - 1}")
    model = run_.load_model(device)
    x = split.rows(args.start, args.start + args.n, device)
    rec = model.reconstruct(x)
    ncol = min(args.ncol, len(x))
    pad = (-len(x)) % ncol  # blank tiles complete the last row pair
    if pad:
        blank = torch.zeros(pad, x.shape[1], dtype=x.dtype, device=x.device)
        x, rec = torch.cat([x, blank]), torch.cat([rec, blank])
    rows = []
    for i in range(0, len(x), ncol):  # originals over reconstructions, row pair by row pair
        rows += [x[i:i + ncol], rec[i:i + ncol]]
    save_grid(out, torch.cat(rows), data.image_shape, ncol)
    print(out)
    return 0
