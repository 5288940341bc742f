"""`aevb explore RUN`: write RUN/explorer.html, the latent space explored in the browser."""
from __future__ import annotations

import argparse

from .common import add_parser, add_run_argument


def register(sub) -> None:
    from ..explorer import DEFAULT_MAX_MB, ENCODINGS, HARD_MAX_MB

    p = add_parser(sub, "explore", "write an interactive latent explorer (one HTML file)",
                   "Write RUN/explorer.html: one self-contained page (no server, no network) with the "
                   "test points' posterior means in 2-D, one slider per latent dimension ordered by KL, "
                   "and the decoder's mean image at that z, decoded in the browser from embedded weights. "
                   "Hover a point for its image and reconstruction; click two for their interpolation.\n\n"
                   "Runs aevb's MLP and convolutional decoders with every likelihood. A decoder whose "
                   "page would exceed --max-size is refused and nothing is written.\n\n"
                   "examples:\n"
                   "  aevb explore runs/mnist\n"
                   "  aevb explore runs/faces --weights float16 --points 500\n"
                   "  aevb explore runs/mnist --out ~/mnist-explorer.html")
    add_run_argument(p)
    p.add_argument("--out", metavar="FILE", help="HTML file to write (default: RUN/explorer.html)%(default).0s")
    p.add_argument("--points", type=int, default=1000, metavar="N",
                   help="test points in the scatter (fewer when their images would exceed 16 MB)")
    p.add_argument("--weights", choices=list(ENCODINGS), default="float32",
                   help="how the decoder's weights are embedded: float32 is exact, float16 half the size")
    p.add_argument("--max-size", type=float, default=DEFAULT_MAX_MB, metavar="MB",
                   help=f"refuse to write a page larger than this many MB (at most {HARD_MAX_MB:g})")
    p.add_argument("--seed", type=int, default=0, help="seed of the PCA view")
    p.add_argument("--device", default="cpu", help="device for the encoder pass over the test points")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..explorer import write_explorer
    from ..runs import Run

    result = write_explorer(Run(args.run), out=args.out, points=args.points, encoding=args.weights,
                            max_mb=args.max_size, seed=args.seed, device=args.device)
    extra = ""
    if result.encoding == "float16":
        extra = f"; float16 changes the mean image by at most {result.max_mean_error:.1e}"
    print(f"{result.path}  ({result.size_bytes / 1e6:.1f} MB: {result.n_weights:,} decoder weights as "
          f"{result.encoding}{extra}; {result.n_points} test points)")
    return 0
