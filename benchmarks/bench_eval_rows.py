"""Evaluation batches of a model bound by reading its weights: 64 rows against the 16 MB rule.

Every evaluation batch reads each weight matrix once. The MLP of full-size CelebA faces
(``--preset celeba-mlp``: 116,412 values, 1,164 hidden units, about 1 GB of float32 weights) gets
8 rows a batch from the 16 MB temporaries rule, so a pass over data is bound by reading its
weights; ``aevb.bounds.budget_rows`` gives such a model 64 rows. This script times the ELBO
(``evaluate_bounds``, k = 1, the pass of ``aevb score --k 1`` and the epochs' test bound) of the
same random faces with both batch sizes, alternating them in one process, and checks that the
per-datapoint bounds agree.

    python benchmarks/bench_eval_rows.py --rows 256 --rounds 5
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import _cpu_name  # noqa: E402
from aevb import bounds  # noqa: E402
from aevb.config import RunConfig, apply_preset, resolve  # noqa: E402
from aevb.model import VAE  # noqa: E402

SHAPE = (3, 218, 178)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=256, help="faces evaluated per timing")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = resolve(apply_preset(RunConfig(), "celeba-mlp"), "real", "celeba", SHAPE)
    torch.manual_seed(0)
    dim = SHAPE[0] * SHAPE[1] * SHAPE[2]
    model = VAE.from_config(cfg.model, dim, SHAPE).eval()
    x = torch.rand(args.rows, dim, generator=torch.Generator().manual_seed(1))
    rule = max(1, bounds.DEFAULT_BUDGET // bounds._bytes_per_row(model))
    floor = bounds.eval_rows(model)
    print(f"weights {bounds.weight_bytes(model) / 1e9:.2f} GB; 16 MB rule: {rule} rows; now: {floor} rows; "
          f"{args.rows} faces, {torch.get_num_threads()} threads, torch {torch.__version__}, {_cpu_name()}, "
          f"{platform.python_version()}", flush=True)
    times = {rule: [], floor: []}
    results = {}
    for r in range(args.rounds + 1):  # the first round warms up and is not counted
        for bs in (rule, floor):
            t0 = time.perf_counter()
            results[bs] = bounds.evaluate_bounds(model, x, k=1, seed=3, batch_size=bs)
            if r:
                times[bs].append(time.perf_counter() - t0)
        if r:
            print(f"round {r}: {rule} rows {times[rule][-1]:.2f} s, {floor} rows {times[floor][-1]:.2f} s", flush=True)
    same = torch.allclose(results[rule].elbo, results[floor].elbo, rtol=1e-5, atol=1e-2)
    ratios = [a / b for a, b in zip(times[rule], times[floor])]
    print(f"median seconds: {rule} rows {statistics.median(times[rule]):.2f}, {floor} rows "
          f"{statistics.median(times[floor]):.2f}; speed-up {statistics.median(ratios):.2f}x "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}); per-datapoint ELBO equal: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
