"""`aevb report RUN`: (re)draw a run's figures and write its self-contained report.html."""
from __future__ import annotations

import argparse

from ..figures.runfigures import FIGURES_DIR
from ..report import REPORT_FILE, write_report
from ..runs import CHECKPOINTS, Run, check_output
from .common import add_parser, add_run_argument
from .plot import add_figure_options, check_grid_size


def register(sub) -> None:
    p = add_parser(sub, "report", "write a run's self-contained HTML report",
                   "Draw every figure of the run (RUN/figures/*.png) and write RUN/report.html: the "
                   "configuration, the final numbers (with the importance-weighted bound of any "
                   "evaluation*.json written by `aevb evaluate`), the training curves and the figures, "
                   "all in one file with embedded images (no network needed to view it).\n\n"
                   "examples:\n"
                   "  aevb report runs/digits\n"
                   "  aevb report runs/mnist --method tsne --out mnist-report.html\n"
                   "  aevb report runs/mnist --no-figures     # embed the figures already drawn")
    add_run_argument(p)
    p.add_argument("--out", metavar="FILE", help="HTML file to write (default: RUN/report.html)%(default).0s")
    p.add_argument("--no-figures", dest="figures", action="store_false",
                   help="do not redraw figures; embed those already in RUN/figures%(default).0s")
    add_figure_options(p, n_help="grid size of the figures (see `aevb plot --help`)")
    p.add_argument("--no-draw", dest="draw", action="store_false",
                   help="samples: show only the mean of p(x|z), not also a draw%(default).0s")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_grid_size(args)
    run_ = Run(args.run)
    if args.checkpoint != "last" and args.figures:  # the last one may be missing: the report then says so
        run_.checkpoint_file(args.checkpoint)
    if args.figures and (run_.path / CHECKPOINTS[args.checkpoint]).is_file():
        # the figures come from its model: a checkpoint refused on load (damaged, not finite, another
        # run's, unsafe) is one line, not a note inside a report written anyway
        run_.checkpoint(checkpoint=args.checkpoint, model_only=True)
    check_output(args.out or run_.path / REPORT_FILE, "--out", suffixes=(".html", ".htm"))
    if args.figures:
        check_output(run_.path / FIGURES_DIR, "figures folder", folder=True)
    path = write_report(run_, figures=args.figures, out=args.out, n=args.n, method=args.method,
                        seed=args.seed, draw=args.draw, device=args.device, checkpoint=args.checkpoint)
    print(path)
    return 0
