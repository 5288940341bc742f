"""Benchmark: L_5000 on MNIST test images for the pytorch-example architecture (784-400-20 ReLU,
Bernoulli), as a fraction of this machine's matrix-multiply throughput, and against a
per-datapoint loop.

    python benchmarks/bench_evaluate.py --data-dir ../shared/datasets/mnist --n 1000 --k 5000

What is timed:
  * the evaluator (``aevb.evaluate.evaluate_bounds``) on the first ``--n`` test images;
  * a per-datapoint loop (one datapoint at a time, its k samples in sub-batches of
    ``--loop-batch``, as in libraries that estimate log p(x) per datapoint) on ``--loop-n`` images,
    extrapolated to ``--n`` and to the 10,000 test images;
  * plain ``torch.mm`` at the decoder's shapes ([rows, 20] x [20, 400] and [rows, 400] x [400, 784],
    rows = chunk x batch of the evaluator), into preallocated outputs, before and after the
    evaluation; the best of them is "this machine's matmul throughput".

FLOPs counted: encoder 2 N (784*400 + 400*40); decoder 2 N k (20*400 + 400*784). The element-wise
work (ReLU, softplus, log-sum-exp, noise) is not counted, so the fraction is a lower bound on how
well the matrix units are used.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aevb.config import ModelConfig  # noqa: E402
from aevb.bounds import DEFAULT_BUDGET, evaluate_bounds  # noqa: E402
from aevb.model import VAE  # noqa: E402


def load_mnist_test(data_dir: str) -> torch.Tensor:
    try:
        from aevb.data import load_dataset

        return load_dataset("mnist", data_dir, download=False).test.materialize()
    except Exception:  # parse the gzip IDX file directly
        with gzip.open(Path(data_dir) / "t10k-images-idx3-ubyte.gz", "rb") as f:
            raw = f.read()
        return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255.0)


def matmul_gflops(rows: int, repeats: int = 5) -> float:
    """Best GFLOP/s of the decoder's two matrix products at ``rows`` rows (preallocated outputs)."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(rows, 20, generator=g)
    w1, w2 = torch.randn(20, 400, generator=g), torch.randn(400, 784, generator=g)
    h, out = torch.empty(rows, 400), torch.empty(rows, 784)
    torch.mm(z, w1, out=h)
    torch.mm(h, w2, out=out)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(z, w1, out=h)
        torch.mm(h, w2, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * rows * (20 * 400 + 400 * 784) / best / 1e9


@torch.inference_mode()
def per_datapoint_loop(model, x: torch.Tensor, k: int, sub: int) -> torch.Tensor:
    """The slow path: one datapoint at a time, k samples in sub-batches of ``sub``."""
    out = []
    for i in range(len(x)):
        xi = x[i:i + 1]
        mu, log_var = model.encoder_params(xi)
        parts = [torch.logsumexp(model.log_importance_weights(xi, min(sub, k - s), mu, log_var), 0)
                 for s in range(0, k, sub)]
        out.append(torch.logsumexp(torch.stack(parts), 0) - math.log(k))
    return torch.cat(out)


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"))
    p.add_argument("--n", type=int, default=1000, help="test images evaluated (10000: all)")
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--loop-n", type=int, default=20, help="images timed with the per-datapoint loop")
    p.add_argument("--loop-batch", type=int, default=100, help="samples per step of the per-datapoint loop")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET / 1e6, help="memory budget of one chunk, MB")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="fused Bernoulli likelihood via torch.compile")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    x = load_mnist_test(args.data_dir)[:args.n].contiguous()
    n, k = len(x), args.k
    torch.manual_seed(0)
    cfg = ModelConfig(latent_dim=20, encoder_hidden=[400], activation="relu", likelihood="bernoulli")
    model = VAE.from_config(cfg, 784).eval()  # untrained weights: the timing does not depend on them
    budget = int(args.budget * 1e6)

    if args.compile:  # compile once outside the timing (a warm-up on a few images)
        evaluate_bounds(model, x[:2], min(k, 64), compile=True)
    evaluate_bounds(model, x[:4], min(k, 256), args.batch_size, args.chunk, budget=budget)
    rows = None
    from aevb.bounds import default_sizes

    bs, chunk = default_sizes(model, n, k, args.batch_size, args.chunk, budget)
    rows = bs * chunk
    mm_before = matmul_gflops(rows)
    res = evaluate_bounds(model, x, k, args.batch_size, args.chunk, seed=0, budget=budget, compile=args.compile)
    mm_after = matmul_gflops(rows)
    mm_best = max(mm_before, mm_after)
    flops = 2 * n * (784 * 400 + 400 * 40) + 2 * n * k * (20 * 400 + 400 * 784)
    gflops = flops / res.seconds / 1e9

    ln = min(args.loop_n, n)
    t0 = time.perf_counter()
    loop = per_datapoint_loop(model, x[:ln], k, args.loop_batch)
    loop_s = time.perf_counter() - t0
    loop_per_point = loop_s / ln
    vec_per_point = res.seconds / n
    diff = float((loop - res.lk[:ln].float()).abs().mean())

    out = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                    "load_average": os.getloadavg()},
        "torch": torch.__version__, "command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
        "n": n, "k": k, "batch_size": res.batch_size, "chunk": res.chunk, "rows_per_chunk": rows,
        "compile": args.compile,
        "evaluator_s": res.seconds, "evaluator_s_per_datapoint": vec_per_point,
        "extrapolated_10000_s": vec_per_point * 10000,
        "gflops": gflops, "matmul_gflops_before": mm_before, "matmul_gflops_after": mm_after,
        "fraction_of_matmul": gflops / mm_best,
        "loop_n": ln, "loop_batch": args.loop_batch, "loop_s": loop_s, "loop_s_per_datapoint": loop_per_point,
        "loop_extrapolated_10000_s": loop_per_point * 10000, "speedup_vs_loop": loop_per_point / vec_per_point,
        "loop_vs_evaluator_mean_abs_diff_nats": diff,
        "mean_lk": float(res.lk.mean()), "mean_elbo": float(res.elbo.mean()),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
