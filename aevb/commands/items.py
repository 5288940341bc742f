"""What the commands on new data share (`aevb encode`, `aevb score`, `aevb decode`,
`aevb reconstruct --data`): their options, and opening the run, its model and the data."""
from __future__ import annotations

import argparse
import sys

from ..devices import resolve_device
from ..newdata import SOURCE_FORMS
from ..runs import Run
from .common import add_checkpoint_argument, add_device_argument, choose_threads, open_checked_run


def add_data_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", metavar="SOURCE", nargs="+", required=required,
                   help=f"the data: {SOURCE_FORMS} (e.g. photos/*.jpg); prepared as the run's own data were")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out image files that cannot be read (and say which) instead of stopping")
    add_common_arguments(p)


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (samples, importance samples, binarization)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar (one is shown on a terminal)")
    add_device_argument(p)
    add_checkpoint_argument(p)
    add_unfinished_argument(p)


def add_unfinished_argument(p: argparse.ArgumentParser, prefix: str = "") -> None:
    p.add_argument("--allow-unfinished", action="store_true",
                   help=prefix + "use a run that is still training or stopped before it finished, with the checkpoint "
                        "it holds now (refused otherwise)")


def data_source(args: argparse.Namespace):
    """--data as a source: the one value given, or the list of image files given."""
    return args.data[0] if len(args.data) == 1 else list(args.data)


def open_run(args: argparse.Namespace) -> Run:
    """The run, refused (before anything else is done) when it has no --checkpoint, or, without
    --allow-unfinished, when it is still training or stopped before it finished."""
    run = open_checked_run(args)
    if not args.allow_unfinished:
        run.require_finished(", or pass --allow-unfinished to use the checkpoint it holds now")
    return run


def model_and_items(run: Run, args: argparse.Namespace):
    """(model, items) of --data on --device; says which unreadable images were left out."""
    model = run.load_model(resolve_device(args.device), args.checkpoint)
    choose_threads(args, model)
    items = run.preprocess(data_source(args), skip_bad_images=args.skip_bad_images, progress=args.progress, seed=args.seed)
    if items.skipped:
        shown = "; ".join(items.skipped[:5]) + (" ..." if len(items.skipped) > 5 else "")
        print(f"aevb {args.command}: left out {len(items.skipped)} unreadable image(s) (--skip-bad-images): {shown}",
              file=sys.stderr)
    return model, items
