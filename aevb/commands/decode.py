"""`aevb decode RUN --z FILE --out DIR`: one PNG per code, the mean of p(x|z)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..devices import resolve_device
from ..newdata import OutputClaim, PngFolder, check_png_folder, decode, png_names, read_codes, resolve_output
from ..runs import check_output
from .common import (add_checkpoint_argument, add_device_argument, add_parser, add_precision_argument, add_run_argument,
                     choose_threads, precision_of, say)
from .items import add_unfinished_argument, open_run


def register(sub) -> None:
    p = add_parser(sub, "decode", "write the decoded image of each code in a file",
                   "Decode codes z (the output of `aevb encode` in any of its formats, its mu, or any "
                   "[N, J] array or CSV of numbers, e.g. edited codes) to the mean of p(x|z) and write one "
                   "PNG per code, named by the code's id (from the file, or the ids file beside a .npy; "
                   "else the row).")
    add_run_argument(p)
    p.add_argument("--z", metavar="FILE", required=True, help="codes: a .npz, .npy or .csv file")
    p.add_argument("--out", metavar="DIR", required=True, help="a new or empty folder for the PNGs")
    add_device_argument(p)
    add_checkpoint_argument(p)
    add_unfinished_argument(p)
    add_precision_argument(p, bounds=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    run_ = open_run(args)
    out = resolve_output(check_output(args.out, "--out", folder=True))
    with OutputClaim(out, say(args), shown=args.out):  # one writer of --out; what a killed one left is removed
        check_png_folder(Path(args.out))
        loaded = run_.open_model(resolve_device(args.device), args.checkpoint)
        model, shape = loaded.model, loaded.image_shape
        choose_threads(args, model)
        ids, z = read_codes(args.z, model.latent_dim)
        names = png_names(ids, out)
        with PngFolder(out, shape) as folder, precision_of(args, model):
            for i in range(0, len(z), 1000):
                folder.write(names[i:i + 1000], decode(model, z[i:i + 1000], name=f"--z {args.z}", first_row=i))
    print(f"decoded {len(z)} codes into {args.out}")
    return 0
