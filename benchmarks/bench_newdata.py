"""Benchmark: encoding and scoring new data (``aevb encode`` / ``aevb score``) on the MNIST test
set or the CelebA subset's test faces, against a plain loop that calls the model once per item,
in the same process.

    python benchmarks/bench_newdata.py --data-dir ../shared/datasets/mnist --rounds 3
    python benchmarks/bench_newdata.py --dataset celeba --data-dir ../shared/datasets/celeba \
        --rounds 3 --score-n 100

A run is trained for one epoch into a temporary folder (MNIST: ``pytorch-example``, 784-400-20
ReLU, Bernoulli; CelebA: ``conv-celeba64``, four stride-2 convolutions each way, 100 latents,
discretized logistic, on the 148x148 centre crops at 64x64), the test split is read as new data
(``Run.preprocess("mnist:test")`` or ``"celeba:test"``, the commands' path: 10,000 digits or the
660 test faces), and three pairs are timed alternately, median of ``--rounds``:

  * encode: ``aevb.newdata.encode`` (the batched encoder of ``aevb encode``) against
    ``model.encode`` called on one item at a time;
  * score: ``aevb.newdata.score`` with k importance samples (``aevb score``) against
    ``model.iw_bound`` on one item at a time, both on the first ``--score-n`` items;
  * score against evaluate: ``aevb.newdata.score`` against ``aevb.bounds.evaluate_bounds`` (what
    ``aevb evaluate`` runs) on the same items and k; scoring runs that same engine, so the ratio
    shows what scoring adds to it (nothing, within the machine's noise).

Each round also times a 2048x2048 float32 matrix product, the most arithmetic per second the
machine gives torch under the same load. With the model's FLOPs per item (matrix products and
convolutions, counted by ``torch.utils.flop_counter``) that gives each contender's rate in
GFLOP/s and the largest speed-up any batching could reach over the per-item loop: the product's
rate over the loop's. Where the loop already runs near the machine's rate, no batched path can
be many times faster; where it is dominated by per-call overhead, batching gains the most.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from aevb.bounds import evaluate_bounds
from aevb.config import RunConfig, apply_preset
from aevb.newdata import encode, score
from aevb.runs import Run
from aevb.training import train
from bench_train import _cpu_name  # the machine's name, as every benchmark reports it


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def flops(fn) -> int:
    """FLOPs of the matrix products and convolutions ``fn`` runs (an add and a multiply: 2)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


MATMUL_N = 2048


def matmul_gflops(a: torch.Tensor, b: torch.Tensor, repeats: int = 10) -> float:
    """GFLOP/s of ``repeats`` float32 products of two MATMUL_N x MATMUL_N matrices."""
    a @ b  # warm
    t = timed(lambda: [a @ b for _ in range(repeats)])
    return 2 * MATMUL_N ** 3 * repeats / t / 1e9


def per_item_encode(model, x: torch.Tensor) -> None:
    with torch.no_grad():
        for i in range(len(x)):
            model.encoder_params(x[i:i + 1])


def per_item_score(model, x: torch.Tensor, k: int) -> None:
    for i in range(len(x)):
        model.iw_bound(x[i:i + 1], k)


# the run each data set is scored with
PRESETS = {"mnist": "pytorch-example", "celeba": "conv-celeba64"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=list(PRESETS), default="mnist")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--score-n", type=int, default=1000, help="items scored by both contenders")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = apply_preset(RunConfig(), PRESETS[args.dataset])
        cfg.data.dataset, cfg.data.data_dir, cfg.data.download = args.dataset, args.data_dir, False
        cfg.data.cache_dir = str(Path(tmp) / "cache")
        cfg.train.epochs, cfg.train.progress, cfg.train.tensorboard, cfg.train.images_every = 1, False, False, 0
        train(cfg, Path(tmp) / "run")
        run = Run(Path(tmp) / "run")
        model = run.load_model()
        items = run.preprocess(f"{args.dataset}:test")
        split, x = items.split, items.split.materialize()
        args.score_n = min(args.score_n, len(split))
        few = split.subset(torch.arange(args.score_n).numpy())
        encode_flops = flops(lambda: model.encoder_params(x[:1]))
        score_flops = flops(lambda: model.iw_bound(x[:1], args.k))
        a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
        times = {name: [] for name in ("encode", "encode_loop", "score", "score_loop", "evaluate")}
        gflops = []
        for r in range(args.rounds):
            gflops.append(matmul_gflops(a, b))
            times["encode"].append(timed(lambda: encode(model, split)))
            times["encode_loop"].append(timed(lambda: per_item_encode(model, x)))
            times["score"].append(timed(lambda: score(model, few, args.k)))
            times["score_loop"].append(timed(lambda: per_item_score(model, x[:args.score_n], args.k)))
            times["evaluate"].append(timed(lambda: evaluate_bounds(model, few, args.k)))
            print(f"round {r + 1}: " + "  ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items())
                  + f"  matmul {gflops[-1]:.0f} GFLOP/s", flush=True)
    med = {n: statistics.median(t) for n, t in times.items()}
    peak = statistics.median(gflops)
    rate = {  # GFLOP/s of each contender: items x FLOPs per item / seconds
        "encode": len(split) * encode_flops / med["encode"] / 1e9,
        "encode_loop": len(split) * encode_flops / med["encode_loop"] / 1e9,
        "score": args.score_n * score_flops / med["score"] / 1e9,
        "score_loop": args.score_n * score_flops / med["score_loop"] / 1e9,
    }
    result = {
        "machine": f"{platform.machine()} {_cpu_name()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__, "python": platform.python_version(), "dataset": args.dataset,
        "preset": PRESETS[args.dataset], "k": args.k,
        "items_encoded": len(split), "items_scored": args.score_n, "seconds": times,
        "encode_items_per_s": len(split) / med["encode"], "encode_speedup": med["encode_loop"] / med["encode"],
        "score_items_per_s": args.score_n / med["score"], "score_speedup": med["score_loop"] / med["score"],
        "score_over_evaluate": med["score"] / med["evaluate"],
        "mflop_per_item": {"encode": encode_flops / 1e6, "score": score_flops / 1e6},
        "matmul_gflops": gflops, "gflops": rate,
        "encode_speedup_ceiling": peak / rate["encode_loop"], "score_speedup_ceiling": peak / rate["score_loop"],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
