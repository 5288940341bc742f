"""Novelty detection of a digit the model never saw, with L_k scores, and a published remedy.

A VAE is trained on the MNIST digits except one (``--classes``), every test image is scored with
``aevb score`` (L_k, nats), and the held-out digit is told from the others by its score. The
ROC AUC says how well: 1 is perfect, 0.5 is chance, below 0.5 the model finds the new digit
*more* likely than the ones it was trained on (the failure Nalisnick et al., ICLR 2019, describe).

The remedy measured beside it is the input-complexity correction of Serra et al. (ICLR 2020):
S(x) = -log2 p(x) - L(x), where L(x) is the length in bits of x compressed by a general-purpose
compressor (here zlib at level 9 of the binary image's packed bits). Simple images are both likely
and short, so subtracting L(x) removes what the likelihood owes to simplicity alone.

    python examples/novelty_mnist.py --data-dir ../shared/datasets/mnist --held-out 1 --out runs/novelty

It trains the run (unless ``OUT/run`` exists), scores the test split, prints both AUCs and
writes ``OUT/typical.png``: the 8 test images the model finds most likely over the 8 it finds
least likely.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from aevb.data import load_dataset
from aevb.images import save_grid
from aevb.runs import Run


def aevb(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "aevb", *args], check=True)


def compressed_bits(x: np.ndarray) -> np.ndarray:
    """L(x): bits of zlib (level 9) of each binary image's packed bits, [N]."""
    packed = np.packbits(x.astype(np.uint8), axis=1)
    return np.array([8 * len(zlib.compress(row.tobytes(), 9)) for row in packed], dtype=np.float64)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True, help="the MNIST files")
    p.add_argument("--held-out", type=int, default=1, help="the digit left out of training")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--k", type=int, default=100, help="importance samples per test image")
    p.add_argument("--out", default="runs/novelty")
    args = p.parse_args()
    out = Path(args.out)
    run_dir, scores = out / "run", out / f"scores-k{args.k}.npz"
    kept = [str(d) for d in range(10) if d != args.held_out]
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        aevb("train", "--preset", "pytorch-example", "--dataset", "mnist", "--data-dir", args.data_dir,
             "--binarize", "static", "--classes", *kept, "--epochs", str(args.epochs), "--out", str(run_dir))
    if not scores.is_file():
        aevb("score", str(run_dir), "--data", "mnist:test", "--k", str(args.k), "--out", str(scores))

    got = np.load(scores)
    run = Run(run_dir)
    test = load_dataset("mnist", args.data_dir, download=False).test
    x = run.preprocess("mnist:test").split.materialize().numpy()  # binarized as the run's data were
    idx = got["id"].astype(np.int64)
    labels = test.y.numpy()[idx]
    novel = labels == args.held_out
    nll_bits = -got["lk"] / np.log(2)  # -log2 p(x), bits
    complexity = nll_bits - compressed_bits(x[idx])
    auc_lk = roc_auc_score(novel, nll_bits)
    auc_s = roc_auc_score(novel, complexity)
    mean_lk = {int(d): float(got["lk"][labels == d].mean()) for d in range(10)}
    print(f"held-out digit {args.held_out}: {int(novel.sum())} of {len(novel)} test images")
    print(f"ROC AUC, -L_{args.k} as the novelty score:            {auc_lk:.3f}")
    print(f"ROC AUC, -log2 p(x) - L(x) (input complexity):  {auc_s:.3f}")
    print("mean L_k per digit (nats): " + ", ".join(f"{d}: {v:.1f}" for d, v in mean_lk.items()))
    order = np.argsort(-got["lk"])
    rows = np.concatenate([x[idx[order[:8]]], x[idx[order[-8:]]]])
    print(save_grid(out / "typical.png", torch.from_numpy(rows), (1, 28, 28), 8))
    return 0


if __name__ == "__main__":
    sys.exit(main())
