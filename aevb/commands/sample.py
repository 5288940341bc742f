"""`aevb sample RUN -n 64`: a grid of samples from the model's prior p(z) through p(x|z)."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from .common import add_device_argument, add_parser, add_run_argument


def register(sub) -> None:
    p = add_parser(sub, "sample", "write a grid of samples from the model",
                   "Draw z ~ N(0, I), decode, and write the likelihood's mean (or a draw from p(x|z) "
                   "with --draw) as a PNG grid.")
    add_run_argument(p)
    p.add_argument("-n", type=int, default=64, help="number of samples")
    p.add_argument("--ncol", type=int, default=None, help="images per row (default: about sqrt(n))")
    p.add_argument("--draw", action="store_true", help="sample x ~ p(x|z) instead of showing its mean")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="FILE", help="PNG to write (default: RUN/images/samples.png)")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..config import ConfigError
    from ..images import save_grid
    from ..runs import Run, check_output, resolve_device

    if not 1 <= args.n <= 10000:
        raise ConfigError(f"-n must be in 1..10000 samples; got {args.n}")
    if args.ncol is not None and args.ncol < 1:
        raise ConfigError(f"--ncol must be at least 1; got {args.ncol}")
    if not 0 <= args.seed <= 2 ** 63 - 1:
        raise ConfigError(f"--seed must be in 0..2**63-1; got {args.seed}")
    run_ = Run(args.run)
    out = Path(args.out) if args.out else run_.images_dir / "samples.png"
    check_output(out, "--out", suffixes=(".png",))
    device = resolve_device(args.device)
    model = run_.load_model(device)
    shape = run_.checkpoint()["image_shape"]
    gen = torch.Generator().manual_seed(args.seed)
    z = torch.randn(args.n, model.latent_dim, generator=gen).to(device)
    with torch.no_grad():
        params = model.decode(z)
        x = model.likelihood.sample(params) if args.draw else model.likelihood.mean(params)
    save_grid(out, x, shape, args.ncol or max(1, int(math.ceil(math.sqrt(args.n)))))
    print(out)
    return 0
