"""`aevb explore RUN`: write RUN/explorer.html, the latent space explored in the browser."""
from __future__ import annotations

import argparse

from .common import add_checkpoint_argument, add_parser, add_run_argument, add_threads_argument, check_seed, open_checked_run


def register(sub) -> None:
    from ..explorer import DEFAULT_MAX_MB, ENCODINGS, HARD_MAX_MB

    p = add_parser(sub, "explore", "write an interactive latent explorer (one HTML file)",
                   "Write RUN/explorer.html: one self-contained page (no server, no network) with the "
                   "test points' posterior means in 2-D, one slider per latent dimension ordered by KL, "
                   "and the decoder's mean image at that z, decoded in the browser from embedded weights. "
                   "Hover a point for its image and reconstruction; click two for their interpolation.\n\n"
                   "Runs aevb's MLP and convolutional decoders with every likelihood. A decoder whose "
                   "weights would make the page exceed --max-size is left out: the page then has no live "
                   "decoding and shows, for fewer points, reconstructions computed when it is written "
                   "(--require-live refuses instead, writing nothing).\n\n"
                   "examples:\n"
                   "  aevb explore runs/mnist\n"
                   "  aevb explore runs/faces --weights float16 --points 500\n"
                   "  aevb explore runs/mnist --out ~/mnist-explorer.html")
    add_run_argument(p)
    p.add_argument("--out", metavar="FILE", help="HTML file to write (default: RUN/explorer.html)%(default).0s")
    p.add_argument("--points", type=int, default=1000, metavar="N",
                   help="test points in the scatter (fewer when their images would exceed 16 MB, "
                        "or with their reconstructions, without live decoding)")
    p.add_argument("--weights", choices=list(ENCODINGS), default="float32",
                   help="how the decoder's weights are embedded: float32 is exact, float16 half the size")
    p.add_argument("--max-size", type=float, default=DEFAULT_MAX_MB, metavar="MB",
                   help=f"largest page in MB (at most {HARD_MAX_MB:g}); a decoder that does not fit is left "
                        "out of the page")
    p.add_argument("--require-live", action="store_true",
                   help="refuse, writing nothing, when the decoder does not fit in --max-size (instead of "
                        "a page without live decoding)")
    p.add_argument("--seed", type=int, default=0, help="seed of the PCA view")
    p.add_argument("--device", default="cpu", help="device for the encoder pass over the test points")
    add_threads_argument(p)
    add_checkpoint_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..explorer import write_explorer
    from ..units import format_bytes

    check_seed(args.seed)
    result = write_explorer(open_checked_run(args), out=args.out, points=args.points, encoding=args.weights,
                            max_mb=args.max_size, seed=args.seed, device=args.device,
                            require_live=args.require_live, checkpoint=args.checkpoint)
    if not result.live:
        print(f"{result.path}  ({format_bytes(result.size_bytes)}; live decoding off: {result.why_not_live}; "
              f"hover shows precomputed reconstructions; {result.n_points} test points)")
        return 0
    extra = ""
    if result.encoding == "float16":
        extra = f"; float16 changes the mean image by at most {result.max_mean_error:.1e}"
    print(f"{result.path}  ({result.size_bytes / 1e6:.1f} MB: {result.n_weights:,} decoder weights as "
          f"{result.encoding}{extra}; {result.n_points} test points)")
    return 0
