"""Benchmark: what the complexity term of ``aevb score`` (``novelty``, computed once per item) costs
against the scoring it comes with, ``aevb score --k 1``, on the MNIST test split, in one process.

    python benchmarks/bench_novelty_cost.py --run runs/nov/mnist --rounds 3

Each round times, alternately, ``aevb.newdata.score_novelty`` on the 10,000 items without the
complexity term (``--no-novelty``: the bounds only) and with it (zlib, the default; and PNG and
bz2 for comparison), and prints the ratio (with - without) / without: the share the complexity
term adds. The machine may be shared, so ratios within a round, not absolute times, are the result.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from aevb.newdata import score_novelty
from aevb.runs import Run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a run trained on MNIST (e.g. pytorch-example, --binarize static)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compressors", nargs="+", default=["zlib", "png", "bz2"])
    args = p.parse_args()
    run = Run(args.run)
    model, items = run.load_model(), run.preprocess("mnist:test")
    items.split = items.split.in_memory()
    lik = run.config.model.likelihood
    ratios = {c: [] for c in args.compressors}
    print(f"torch threads {torch.get_num_threads()}; {len(items)} items")
    for r in range(args.rounds):
        for c in args.compressors:
            t0 = time.perf_counter()
            score_novelty(model, items, 1, lik, compressor=None)
            t1 = time.perf_counter()
            score_novelty(model, items, 1, lik, compressor=c)
            t2 = time.perf_counter()
            without, with_ = t1 - t0, t2 - t1
            ratios[c].append((with_ - without) / without)
            print(f"round {r + 1} {c}: without {without:.2f} s, with {with_:.2f} s, added {ratios[c][-1]:+.1%}")
    for c, v in ratios.items():
        print(f"{c}: median share added {statistics.median(v):+.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
