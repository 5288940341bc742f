"""Peak anonymous memory of whole commands, as a user runs them: conversion, training, the test
bound, figures and the report for `aevb train`; loading, evaluation and the page for `aevb
evaluate` and `aevb explore`.

``folders`` makes folders of N distinct full-size faces (every file a re-encoded copy of one of the
6,000 real CelebA JPEGs with two pixels set from its index, so no two files or decoded images are
alike); ``run`` runs one command and prints its peak RssAnon (summed over the process and its
children, sampled every 20 ms) and wall time as one JSON line.

    python benchmarks/bench_command_memory.py folders --source ../shared/datasets/celeba --n 2001 20001 --out /tmp/faces
    python benchmarks/bench_command_memory.py run -- aevb train --dataset folder:/tmp/faces/2001 --color rgb \\
        --memory-budget 500MB --epochs 1 --out /tmp/r2001
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_data import machine, run_sampled  # noqa: E402


def make_folder(source: Path, n: int, out: Path) -> Path:
    """``n`` distinct JPEGs in ``out``: copy i is real face i mod 6000 with pixel (0, 0) set to
    (i mod 256, i // 256 mod 256, i // 65536) and re-encoded at quality 95."""
    from PIL import Image

    real = sorted((source / "img_align_celeba").glob("*.jpg"))
    if not real:
        sys.exit(f"{source}/img_align_celeba holds no JPEGs")
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = out / f"{i:06d}.jpg"
        if path.exists():
            continue
        with Image.open(real[i % len(real)]) as im:
            im = im.convert("RGB")
            im.putpixel((0, 0), (i % 256, (i // 256) % 256, i // 65536))
            im.save(path.with_suffix(".tmp"), "JPEG", quality=95)
        path.with_suffix(".tmp").rename(path)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    f = sub.add_parser("folders")
    f.add_argument("--source", default="../shared/datasets/celeba")
    f.add_argument("--n", type=int, nargs="+", default=[2001, 20001])
    f.add_argument("--out", default="/tmp/faces")
    r = sub.add_parser("run")
    r.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if args.what == "folders":
        for n in args.n:
            print(make_folder(Path(args.source), n, Path(args.out) / str(n)))
        return 0
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    _, peak_mb, wall = run_sampled(cmd)
    print(json.dumps({"command": " ".join(cmd), "peak_rss_anon_mb": round(peak_mb), "wall_s": round(wall, 1),
                      "machine": machine()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
