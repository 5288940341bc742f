"""`aevb data prepare`: convert a data set once (decode images into the on-disk cache) and say
what was made; `aevb train` does the same when needed."""
from __future__ import annotations

import argparse
import time

from ..data.decode import MAX_WORKERS_PER_CORE, check_workers
from .common import add_parser


def register(sub) -> None:
    p = add_parser(sub, "data", "prepare data sets (decode and cache them once)",
                   "Work with data sets.\n\n"
                   "examples:\n"
                   "  aevb data prepare celeba --data-dir DIR --crop 148 148 --image-size 64 64\n"
                   "  aevb data prepare folder:my_faces --image-size 128 128 --color rgb")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    prep = verbs.add_parser("prepare", help="decode a data set into its on-disk cache and report it",
                            description="Load a data set as `aevb train` would with the same options: decode "
                                        "images into the on-disk cache (in parallel, once; later runs reuse it) "
                                        "or download missing files, then print what was made.")
    prep.add_argument("dataset", metavar="DATASET", help="celeba, folder:PATH, array:PATH, mnist, ...")
    from .train import OPTIONS

    for flag, key, kw in OPTIONS:  # the same data options as `aevb train`, validated the same way
        if key.startswith("data.") and key != "data.dataset":
            p_kw = dict(kw)
            prep.add_argument(flag, dest=key, default=argparse.SUPPRESS, **p_kw)
    prep.add_argument("--workers", type=int, default=0, metavar="N",
                      help="decoding processes (default: one per CPU core; at most "
                           f"{MAX_WORKERS_PER_CORE} per core: decoding is CPU-bound, so more only take memory)")
    prep.add_argument("--rebuild", action="store_true", help="rebuild the cache even if it is up to date")
    prep.set_defaults(func=run_prepare)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_prepare(args: argparse.Namespace) -> int:
    from ..config import RunConfig, merge, validate
    from ..data import load_configured
    from ..units import format_bytes
    from ..data.registry import load_options
    from ..data.spec import ARRAY, parse_spec
    from ..training.session import check_cache_dir
    from .train import OPTIONS

    updates = {"dataset": args.dataset}
    for key, value in vars(args).items():
        if key.startswith("data."):
            updates[key.split(".", 1)[1]] = value
    flags = {key: flag for flag, key, _ in OPTIONS}
    cfg = merge(RunConfig(), {"data": updates}, source="command line",
                where=lambda k: f"option {flags.get(k, 'DATASET' if k == 'data.dataset' else k)}")
    validate(cfg)
    check_workers(args.workers, "--workers")
    d = cfg.data
    check_cache_dir(cfg)
    opts = load_options(d, workers=args.workers, rebuild=bool(args.rebuild))
    budget = opts.budget
    if parse_spec(d.dataset).form != ARRAY:
        opts.memory_budget = 1  # the splits are opened (memory-mapped), not read into memory
    t0 = time.perf_counter()
    ds = load_configured(d, options=opts)
    seconds = time.perf_counter() - t0
    c, h, w = ds.image_shape
    print(f"{ds.name}: " + ", ".join(f"{len(s)} {n}" for n, s in ds.splits().items())
          + f" datapoints of {c}x{h}x{w} = {ds.dim} values ({ds.kind}, "
          + (f"{ds.levels} levels" if ds.levels else "continuous") + ")")
    if "cache" in ds.info or ds.streamed:
        how = "held in memory" if ds.nbytes <= budget else "streamed from disk"
        print(f"  {format_bytes(ds.nbytes)} uint8 in all: `aevb train` will keep it {how} "
              f"(memory budget {format_bytes(budget)})")
    else:
        print(f"  {format_bytes(ds.nbytes)} in memory ({ds.train.storage_dtype})")
    if "cache" in ds.info:
        n = sum(len(s) for s in ds.splits().values())
        state = "reused (up to date)" if ds.info.get("cache_reused") else f"built in {seconds:.1f} s ({n / max(seconds, 1e-9):.0f} images/s)"
        print(f"  cache: {ds.info['cache']} ({state})")
    else:
        print(f"  no cache needed: {ds.name} is read from its files into memory ({seconds:.1f} s)")
    return 0
