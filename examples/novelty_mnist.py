"""Novelty detection of a digit the model never saw, with the scores of ``aevb score``.

A VAE is trained on the MNIST digits except one (``--classes``), every test image is scored with
``aevb score`` (L_k in nats and the novelty scores beside it), and the held-out digit is told from
the others by each score. The ROC AUC says how well: 1 is perfect, 0.5 is chance, below 0.5 the
model finds the new digit *more* likely than the ones it was trained on (the failure Nalisnick et
al., ICLR 2019, describe).

``aevb score`` writes, beside -L_k, the input-complexity score of Serra et al. (ICLR 2020) in its
column ``novelty``: S(x) = -log2 p(x) - L(x), where L(x) is the length in bits of the 8-bit image
under zlib (level 9). With ``--background`` the script also trains the run's background model
(``aevb train --background-of``: the same network on training images with 20 % of their pixels
replaced at random, Ren et al., NeurIPS 2019) and reports the likelihood ratio, column ``lr``.

    python examples/novelty_mnist.py --data-dir ../shared/datasets/mnist --held-out 1 --out runs/novelty

It trains the run (unless ``OUT/run`` exists), scores the test split, prints the AUCs and
writes ``OUT/typical.png``: the 8 test images the model finds most likely over the 8 it finds
least likely.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from aevb.data import load_dataset
from aevb.images import save_grid
from aevb.runs import Run


def aevb(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "aevb", *args], check=True)


def roc_auc(novel: np.ndarray, score: np.ndarray) -> float:
    """P(a held-out item scores above a trained one) + half the ties (Mann-Whitney U)."""
    order = np.argsort(score, kind="mergesort")
    _, start, counts = np.unique(score[order], return_index=True, return_counts=True)
    ranks = np.empty(len(score))
    ranks[order] = np.repeat(start + (counts + 1) / 2, counts)
    pos = int(novel.sum())
    return float((ranks[novel].sum() - pos * (pos + 1) / 2) / (pos * (len(score) - pos)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True, help="the MNIST files")
    p.add_argument("--held-out", type=int, default=1, help="the digit left out of training")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--k", type=int, default=100, help="importance samples per test image")
    p.add_argument("--out", default="runs/novelty")
    p.add_argument("--background", action="store_true", help="also train the background run and report lr")
    args = p.parse_args()
    out = Path(args.out)
    run_dir, scores = out / "run", out / f"scores-k{args.k}.npz"
    kept = [str(d) for d in range(10) if d != args.held_out]
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        aevb("train", "--preset", "pytorch-example", "--dataset", "mnist", "--data-dir", args.data_dir,
             "--binarize", "static", "--classes", *kept, "--epochs", str(args.epochs), "--out", str(run_dir))
    extra = []
    if args.background:
        bg = out / "run-background"
        if not (bg / "checkpoints" / "last.pt").is_file():
            aevb("train", "--background-of", str(run_dir), "--epochs", str(args.epochs), "--out", str(bg))
        extra, scores = ["--background", str(bg)], out / f"scores-k{args.k}-lr.npz"
    if not scores.is_file():
        aevb("score", str(run_dir), "--data", "mnist:test", "--k", str(args.k), "--out", str(scores), *extra)

    got = np.load(scores)
    run = Run(run_dir)
    test = load_dataset("mnist", args.data_dir, download=False).test
    x = run.preprocess("mnist:test").split.materialize().numpy()  # binarized as the run's data were
    idx = got["id"].astype(np.int64)
    labels = test.y.numpy()[idx]
    novel = labels == args.held_out
    print(f"held-out digit {args.held_out}: {int(novel.sum())} of {len(novel)} test images")
    print(f"ROC AUC, -L_{args.k} as the novelty score:                  {roc_auc(novel, -got['lk']):.3f}")
    print(f"ROC AUC, novelty = -log2 p(x) - L(x) (input complexity): {roc_auc(novel, got['novelty']):.3f}")
    if "lr" in got.files:
        print(f"ROC AUC, lr = L_k(background) - L_k (likelihood ratio):  {roc_auc(novel, got['lr']):.3f}")
    mean_lk = {int(d): float(got["lk"][labels == d].mean()) for d in range(10)}
    print("mean L_k per digit (nats): " + ", ".join(f"{d}: {v:.1f}" for d, v in mean_lk.items()))
    order = np.argsort(-got["lk"])
    rows = np.concatenate([x[idx[order[:8]]], x[idx[order[-8:]]]])
    print(save_grid(out / "typical.png", torch.from_numpy(rows), (1, 28, 28), 8))
    return 0


if __name__ == "__main__":
    sys.exit(main())
