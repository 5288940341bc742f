"""Training speed of the full-size CelebA MLP (``--preset celeba-mlp``) in float32 and bfloat16.

Runs the whole command a user runs,

    aevb train --preset celeba-mlp --dataset celeba --data-dir DIR --epochs E --precision P

once per setting and round, alternating float32 and bfloat16 or the settings of ``--variant``
(and, with ``--before SRC``, the same commands with the aevb of another source tree, on
PYTHONPATH), and reads from each run's
``metrics.jsonl`` the training time of every epoch. A full CelebA epoch (162,770 faces) is
extrapolated from the images per second of the measured epochs (all of them; the first includes
no set-up, which the command does before it). The reference, measured in the same process before
every round, is the float32 matrix-product time of one step: 6 x 271 M weights x 64 images at the
rate of the model's largest product (64 x 116,412 by 116,412 x 1,164), as float32 arithmetic alone
would take it. The test ELBO after the last epoch is read from the same rows.

    python benchmarks/bench_celeba_mlp.py --data-dir ../shared/datasets/celeba --epochs 3 --rounds 1

``--variant NAME=OPTIONS`` (repeatable) times other settings of the same command instead of the
two precisions, for instance a larger batch:

    python benchmarks/bench_celeba_mlp.py --data-dir ../shared/datasets/celeba --epochs 3 \
        --variant bf16 --variant "bf16-b128=--precision bf16 --batch-size 128 --lr 2e-4 --lr-warmup-steps 50"
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import _cpu_name  # noqa: E402
from aevb import metrics as M  # noqa: E402

FULL_EPOCH = 162_770  # training faces of CelebA's official partition
SHAPE = (3, 218, 178)
WEIGHTS = 271_399_656  # celeba-mlp: 116,412-1,164-116-10 and back, with biases
BATCH = 64
# the command's settings by name: the two precisions, and what --variant adds
PRECISIONS = {"fp32": ["--precision", "fp32"], "bf16": ["--precision", "bf16"]}


def matmul_seconds_per_step(rounds: int = 3, tensors: int = 3) -> float:
    """6 x weights x batch float32 operations at the rate of the model's largest product, the
    fastest of ``rounds`` products on each of ``tensors`` fresh pairs of operands (one pair's
    product ran at half the speed of another's in the same process on the 2-core machine)."""
    d = SHAPE[0] * SHAPE[1] * SHAPE[2]
    best = float("inf")
    for _ in range(tensors):
        x, w = torch.randn(BATCH, d), torch.randn(1164, d)
        x @ w.t()
        best = min(best, *(_timed(lambda: x @ w.t()) for _ in range(rounds)))
        del x, w
    rate = 2 * BATCH * d * 1164 / best
    return 6 * WEIGHTS * BATCH / rate


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def run(tree: str, options: list, args, out: Path) -> dict:
    cmd = [sys.executable, "-m", "aevb", "train", "--preset", "celeba-mlp", "--dataset", "celeba", "--data-dir",
           args.data_dir, "--epochs", str(args.epochs), *options, "--out", str(out), "--overwrite",
           "--no-progress", "--no-tensorboard", "--no-report", "--images-every", "0", "--seed", "1"]
    env = dict(os.environ, PYTHONPATH=tree)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:  # run outside the tree, so that PYTHONPATH picks the aevb
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=out.parent)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - t0
        if status:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err.read().decode()[-2000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if M.TRAIN_TIME_S in r]
    seconds = sum(r[M.TRAIN_TIME_S] for r in rows)
    images = args.train_faces * len(rows)
    return {"wall_s": wall, "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9, "train_s": seconds, "images_per_s": images / seconds,
            "full_epoch_min": FULL_EPOCH / (images / seconds) / 60, "test_elbo": rows[-1].get(M.TEST_BOUND)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, type=lambda s: str(Path(s).resolve()))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--train-faces", type=int, default=4560, help="training faces of the data set given")
    p.add_argument("--before", default=None, type=lambda s: str(Path(s).resolve()),
                   help="another aevb source tree (e.g. from git archive), timed the same way")
    p.add_argument("--variant", action="append", default=[], metavar="NAME[=OPTIONS]",
                   help="settings to time instead of fp32 and bf16: fp32, bf16, or NAME=OPTIONS of aevb train")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    variants = {}
    for v in args.variant or list(PRECISIONS):
        name, _, options = v.partition("=")
        if not options and name not in PRECISIONS:
            p.error(f"--variant {v!r}: give NAME=OPTIONS, or one of {', '.join(PRECISIONS)}")
        variants[name] = shlex.split(options) if options else PRECISIONS[name]
    here = str(Path(__file__).resolve().parents[1])
    trees = [("after", here)] + ([("before", args.before)] if args.before else [])
    print(f"{_cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, python {platform.python_version()}",
          flush=True)
    results, references = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            references.append(matmul_seconds_per_step())
            for name, tree in trees:
                for variant, options in variants.items():
                    res = run(tree, options, args, Path(tmp) / f"{name}-{variant}")
                    res["ratio_to_matmul"] = (BATCH / res["images_per_s"]) / references[-1]
                    results.setdefault(f"{name} {variant}", []).append(res)
                    print(f"round {r + 1} {name:6} {variant}: {res['images_per_s']:.1f} images/s, "
                          f"{res['full_epoch_min']:.1f} min per full epoch, {res['ratio_to_matmul']:.2f} x the "
                          f"float32 matrix-product time ({references[-1]:.3f} s/step), test ELBO "
                          f"{res['test_elbo']:.2f}, command {res['wall_s']:.0f} s, peak {res['peak_rss_gb']:.2f} GB", flush=True)
    summary = {k: {m: statistics.median(v[m] for v in vs) for m in vs[0]} for k, vs in results.items()}
    summary["matmul_s_per_step"] = statistics.median(references)
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, "summary": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
