"""What the checkpoint check costs: the digest written with each checkpoint and the check on load.

Every checkpoint is sealed when saved (``aevb.checkpoints.seal``: an XXH3-128 digest per entry) and
checked when loaded (``aevb.checkpoints.problem``: the digests, finite weights and optimizer
state, the run id). Two measurements, each a ratio taken in one process:

1. MNIST, ``--preset pytorch-example``: epochs of ``aevb train`` with the time spent sealing
   last.pt, then a resume with the time of the full check of last.pt (every entry, Adam's moments
   included), against the epoch time of the same process.
2. A large MLP: a run of celeba-mlp's network (--hidden 1164 116, 10 latents) on random binary
   pictures of CelebA's size (3x218x178, 271 million parameters, last.pt 3.3 GB) trained one
   step (``--limit-batches 1 --epochs 1``); then, alternating, ``aevb score`` on 96 pictures with
   the check and with it replaced by nothing, and the model-only load alone both ways; what the
   check adds to the command is the difference of the two commands' medians (the first pages of
   the mapped weights are read by whichever touches them first, the check or the scoring).

    python benchmarks/bench_checkpoint_check.py --mnist-dir ../shared/datasets/mnist \\
        --work /tmp/bench-checkpoints --rounds 3
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_train import _cpu_name  # noqa: E402
import aevb.io as aio  # noqa: E402
from aevb import metrics as M  # noqa: E402
from aevb.cli import main  # noqa: E402

QUIET = ["--no-progress", "--no-tensorboard", "--no-report"]


class Timed:
    """Wrap ``aevb.io.<name>`` so that every call's time is recorded."""

    def __init__(self, name: str):
        self.name, self.real, self.times = name, getattr(aio, name), []

    def __enter__(self):
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return self.real(*a, **k)
            finally:
                self.times.append(time.perf_counter() - t)

        setattr(aio, self.name, timed)
        return self

    def __exit__(self, *exc):
        setattr(aio, self.name, self.real)


def mnist(args, work: Path) -> dict:
    out = work / "mnist"
    train = ["train", "--preset", "pytorch-example", "--dataset", "mnist", "--data-dir", args.mnist_dir,
             "--out", str(out), "--overwrite", *QUIET]
    with Timed("seal") as seal:
        assert main(train + ["--epochs", str(args.rounds)]) == 0
    with Timed("problem") as check:
        assert main(["train", "--resume", str(out), "--epochs", str(args.rounds + 1), *QUIET]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    epochs = [r[M.EPOCH_TIME_S] for r in rows]
    size = (out / "checkpoints" / "last.pt").stat().st_size
    return {"epoch_s": statistics.median(epochs), "seal_s": statistics.median(seal.times),
            "resume_check_s": check.times[0], "checkpoint_bytes": size, "epochs": len(epochs)}


def large(args, work: Path) -> dict:
    data = work / "pictures.npy"
    if not data.exists():
        np.save(data, (np.random.default_rng(0).random((96, 3, 218, 178)) < 0.5).astype(np.uint8))
    run = work / "large"
    if not (run / "checkpoints" / "last.pt").exists():
        assert main(["train", "--preset", "celeba-mlp", "--dataset", f"array:{data}", "--epochs", "1",
                     "--limit-batches", "1", "--out", str(run), "--overwrite", *QUIET]) == 0
    last = run / "checkpoints" / "last.pt"
    real = aio.problem
    score = ["score", str(run), "--data", f"array:{data}", "--out", str(work / "scores.csv"), "--device", "cpu"]
    got = {"with": [], "without": [], "load_with": [], "load_without": [], "score_k1_with": [], "score_k1_without": []}
    for _ in range(args.rounds):
        for how in ("with", "without"):
            aio.problem = real if how == "with" else (lambda *a, **k: None)
            try:
                t = time.perf_counter()
                aio.load_checkpoint(last, model_only=True)
                got[f"load_{how}"].append(time.perf_counter() - t)
                t = time.perf_counter()
                assert main(score + ["--k", "1"]) == 0
                got[f"score_k1_{how}"].append(time.perf_counter() - t)
                if args.score_k100:
                    t = time.perf_counter()
                    assert main(score) == 0
                    got[how].append(time.perf_counter() - t)
            finally:
                aio.problem = real
    med = {k: statistics.median(v) for k, v in got.items() if v}
    return {**med, "weights_bytes": sum(v.numel() * v.element_size() for v in
                                        aio.load_checkpoint(last, model_only=True)["model"].values()),
            "checkpoint_bytes": last.stat().st_size}


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mnist-dir", required=True)
    p.add_argument("--work", default="/tmp/bench-checkpoints")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--score-k100", action="store_true", help="also time aevb score at its default k (minutes)")
    p.add_argument("--skip-large", action="store_true")
    p.add_argument("--skip-mnist", action="store_true")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {_cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"Python {platform.python_version()}")
    m = None if args.skip_mnist else mnist(args, work)
    if m is not None:
        print(f"MNIST pytorch-example: epoch {m['epoch_s']:.2f} s (median of {m['epochs']}); sealing last.pt "
              f"({m['checkpoint_bytes'] / 1e6:.1f} MB) {m['seal_s'] * 1e3:.1f} ms = "
              f"{100 * m['seal_s'] / m['epoch_s']:.2f} % of an epoch; the full check on resume "
              f"{m['resume_check_s'] * 1e3:.1f} ms = {100 * m['resume_check_s'] / m['epoch_s']:.2f} % of an epoch")
    if args.skip_large:
        return
    g = large(args, work)
    check = g["load_with"] - g["load_without"]
    print(f"large MLP: weights {g['weights_bytes'] / 1e9:.2f} GB (last.pt {g['checkpoint_bytes'] / 1e9:.2f} GB); "
          f"model-only load {g['load_without'] * 1e3:.0f} ms unchecked (memory-mapped, nothing read), "
          f"{g['load_with'] * 1e3:.0f} ms checked ({g['weights_bytes'] / 1e9 / max(check, 1e-9):.2f} GB/s)")
    print(f"  aevb score, 96 pictures, --k 1: {g['score_k1_without']:.2f} s unchecked, {g['score_k1_with']:.2f} s "
          f"checked: the check alone is {100 * check / g['score_k1_with']:.1f} % of the command; what it adds to "
          f"the command: {100 * (g['score_k1_with'] - g['score_k1_without']) / g['score_k1_with']:.1f} %")
    if "with" in g:
        print(f"  aevb score, 96 pictures, k = 100: {g['without']:.1f} s unchecked, {g['with']:.1f} s checked: the "
              f"check is {100 * check / g['with']:.2f} % of the command")


if __name__ == "__main__":
    cli()
