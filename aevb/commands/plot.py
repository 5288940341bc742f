"""`aevb plot RUN KIND`: figures of what a run's model learned, written as PNG into RUN/figures."""
from __future__ import annotations

import argparse
import sys

from ..devices import parse_device
from ..errors import ConfigError
from ..figures.compute import METHODS
from ..figures.runfigures import FIGURES_DIR, KINDS, FigureContext, draw_figures
from ..runs import check_output
from .common import (add_checkpoint_argument, add_device_argument, add_parser, add_run_argument, check_seed,
                     choose_threads, open_checked_run)
from .evaluate import add_data_argument, load_run_data

KIND_HELP = """figure kinds:
  reconstructions  test images over their reconstructions (decoder mean at z = posterior mean)
  samples          samples from the prior: the mean of p(x|z) (with --draw also a draw x ~ p(x|z))
  manifold         the learned data manifold on a grid of Gaussian quantiles (AEVB Fig. 4) and the
                   prior-predictive grid with z evenly spaced in [-3, 3]; for more than 2 latent
                   dimensions, over the 2 of highest KL with the others at 0
  latent           posterior means of test points coloured by label (PCA or t-SNE beyond 2-D)
  latent-series    the same at several epochs, side by side (snapshots saved during training)
  interpolation    decoder means between the posterior means of pairs of test images
  traversal        one latent dimension at a time over [-3, 3], dimensions ordered by KL
  curves           train / test bound per epoch with its reconstruction and KL terms
  kl               which latent units are active (Var_x E_q[z_j|x] > 0.01) and the KL per unit
  all              every figure that applies to the run

examples:
  aevb plot runs/digits all
  aevb plot runs/mnist-2d manifold -n 25
  aevb plot runs/mnist latent --method tsne --out figs/
  aevb plot runs/mine reconstructions --data array:x.npy   # a run trained on data given in memory"""


# kinds drawn from the model (and the run folder) alone; for a 2-D latent space that includes manifold
MODEL_ONLY_KINDS = ("samples", "manifold", "curves", "latent-series")


def register(sub) -> None:
    p = add_parser(sub, "plot", "draw figures of what a run learned (PNG)",
                   "Draw figures of a trained run and write them as PNG files (default: RUN/figures/).\n\n"
                   + KIND_HELP)
    add_run_argument(p)
    p.add_argument("kind", metavar="KIND", choices=list(KINDS) + ["all"],
                   help="one of: " + ", ".join(KINDS) + ", all%(default).0s")
    p.add_argument("--out", metavar="DIR", help="folder for the PNG files (default: RUN/figures)%(default).0s")
    add_figure_options(p, n_help="tiles per side of the manifold grids (default 20) and of the sample grid "
                          "(8); images per row of reconstructions (8); steps of interpolations (10) and "
                          "traversals (11)")
    p.add_argument("--draw", action="store_true", help="samples: also show a draw x ~ p(x|z), not only its mean")
    add_data_argument(p)
    p.set_defaults(func=run)


def add_figure_options(p: argparse.ArgumentParser, n_help: str) -> None:
    """-n/--grid-size, --method, --seed, --device and --checkpoint: shared by `aevb plot` and `aevb report`."""
    p.add_argument("-n", "--grid-size", dest="n", type=int, default=None, metavar="N",
                   help=n_help + "%(default).0s")
    p.add_argument("--method", choices=list(METHODS), default="pca",
                   help="how latent spaces of more than 2 dimensions are projected to 2-D")
    p.add_argument("--seed", type=int, default=0, help="seed of prior samples, t-SNE and PCA")
    add_device_argument(p)
    add_checkpoint_argument(p)


def check_grid_size(args: argparse.Namespace) -> None:
    """The figure options shared by plot and report, checked before any work."""
    if args.n is not None and not 1 <= args.n <= 200:
        raise ConfigError(f"-n/--grid-size must be in 1..200; got {args.n}")
    check_seed(args.seed)
    if args.device != "auto":
        parse_device(args.device)


def run(args: argparse.Namespace) -> int:
    check_grid_size(args)
    run_ = open_checked_run(args)
    check_output(args.out or run_.path / FIGURES_DIR, "--out", folder=True)
    # figures that need only the model can be drawn where the data set is not available
    optional = args.kind in MODEL_ONLY_KINDS + ("all",)
    # --data, or data every figure of the kind needs: loaded here, so a failure is one line naming the run
    data = load_run_data(run_, args.data) if args.data is not None or not optional else None
    ctx = FigureContext.from_run(run_, device=args.device, data=data, data_optional=optional,
                                 checkpoint=args.checkpoint)
    choose_threads(args, ctx.model)
    if ctx.data_error:
        print(f"aevb plot: warning: the run's data set could not be loaded, so figures that need it "
              f"are skipped:\n{ctx.data_error}", file=sys.stderr)
    written, skipped = draw_figures(ctx, args.kind, args.out, n=args.n, method=args.method,
                                    seed=args.seed, draw=args.draw)
    for path in written.values():
        print(path)
    for kind, why in skipped.items():
        print(f"aevb plot: skipped {kind}: {why}", file=sys.stderr)
    return 0
