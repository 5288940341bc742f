"""Novelty detection on pairs of data sets: how well each score of ``aevb score`` tells items of
another source from a run's own test items. Two steps around the command a user runs:

    # 1. the other sources as 28x28 grey 8-bit arrays (and the MNIST test labels)
    python benchmarks/novelty_pairs.py make --mnist DATA_DIR/mnist --frey DATA_DIR/frey_face \
        --celeba DATA_DIR/celeba --out runs/nov/sets
    # 2. aevb score on each of them (the in-distribution items too), then
    python benchmarks/novelty_pairs.py table --pair "MNIST / Frey Face" runs/nov/s-mnist.csv runs/nov/s-frey.csv \
        --pair "MNIST without 1 / the 1s" "runs/nov/s-no1.csv@label!=1" "runs/nov/s-no1.csv@label==1" \
        --labels runs/nov/sets/mnist-test-labels.npy

``make`` writes ``frey28.npy`` (the 1,965 Frey faces, 28x20, resized to 28x28), ``celeba28.npy``
(the first 2,000 CelebA files by name, centre 148x148 crop, grey, 28x28), ``mnist-inverted.npy``
(255 - each MNIST test image), ``mnist-noise.npy`` (each MNIST test image plus Gaussian noise of
standard deviation 0.2 of the range, clipped) and ``mnist-test-labels.npy``.

``table`` reads the CSV files ``aevb score`` wrote and prints, for each pair and each score both
files hold (``novelty``, ``lr``, and the raw ``lk`` and ``elbo`` as -L_k and -ELBO), the ROC AUC of
telling the second file's items (positives: new) from the first's (1 perfect, 0.5 chance, below
0.5 the wrong way round) and the false-positive rate at 95 % true positives: the share of the
run's own items scored at least as novel as the threshold that catches 95 % of the new ones.
``FILE@label==D`` / ``FILE@label!=D`` keeps the rows whose label (by the row's id, from
``--labels``) is / is not D.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np

SCORES = ("novelty", "lr", "lk", "elbo")


def read_scores(spec: str, labels):
    """{column: float array} of a CSV that aevb score wrote, filtered by ``@label==D`` / ``@label!=D``."""
    path, _, cond = spec.partition("@")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keep = np.ones(len(rows), dtype=bool)
    if cond:
        if labels is None:
            raise SystemExit(f"{spec}: a label filter needs --labels")
        op, digit = ("==", cond.split("==")[1]) if "==" in cond else ("!=", cond.split("!=")[1])
        lab = labels[np.array([int(r["id"]) for r in rows])]
        keep = (lab == int(digit)) if op == "==" else (lab != int(digit))
    return {c: np.array([float(r[c]) for r in rows])[keep] for c in rows[0] if c != "id"}


def novelty_of(cols: dict, score: str):
    """The score ``score`` (higher: more novel) from a file's columns, or None when it has none."""
    if score not in cols:
        return None
    return -cols[score] if score in ("lk", "elbo") else cols[score]


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a new item scores above one of the run's own) + half the ties (Mann-Whitney U)."""
    v = np.concatenate([pos, neg])
    order = np.argsort(v, kind="mergesort")
    _, start, counts = np.unique(v[order], return_index=True, return_counts=True)
    ranks = np.empty(len(v))
    ranks[order] = np.repeat(start + (counts + 1) / 2, counts)  # 1-based average ranks
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def fpr_at_95(pos: np.ndarray, neg: np.ndarray) -> float:
    """The share of own items at or above the highest threshold that catches 95 % of the new ones."""
    t = np.sort(pos)[::-1][math.ceil(0.95 * len(pos)) - 1]
    return float(np.mean(neg >= t))


def make(args) -> int:
    from PIL import Image

    from aevb.data import load_dataset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mnist = load_dataset("mnist", args.mnist, download=False).test
    x = np.round(mnist.materialize().numpy() * 255).astype(np.uint8).reshape(-1, 28, 28)
    np.save(out / "mnist-test-labels.npy", mnist.y.numpy())
    np.save(out / "mnist-inverted.npy", 255 - x)
    rng = np.random.default_rng(0)
    noisy = np.clip(x / 255.0 + rng.normal(0, 0.2, x.shape), 0, 1)
    np.save(out / "mnist-noise.npy", np.round(noisy * 255).astype(np.uint8))
    frey = load_dataset("frey-face", args.frey, download=False)
    faces = np.concatenate([frey.train.materialize().numpy(), frey.test.materialize().numpy()])
    faces = np.round(faces * 255).astype(np.uint8).reshape(-1, 28, 20)
    np.save(out / "frey28.npy", np.stack([np.asarray(Image.fromarray(f).resize((28, 28), Image.BILINEAR))
                                          for f in faces]))
    files = sorted((Path(args.celeba) / "img_align_celeba").glob("*.jpg"))[:args.celeba_n]
    celeba = []
    for f in files:
        with Image.open(f) as img:
            w, h = img.size
            left, top = (w - 148) // 2, (h - 148) // 2
            img = img.crop((left, top, left + 148, top + 148)).convert("L").resize((28, 28), Image.BILINEAR)
            celeba.append(np.asarray(img))
    np.save(out / "celeba28.npy", np.stack(celeba))
    print(f"wrote {out}: mnist-inverted.npy, mnist-noise.npy ({len(x)} each), frey28.npy ({len(faces)}), "
          f"celeba28.npy ({len(celeba)}), mnist-test-labels.npy")
    return 0


def table(args) -> int:
    labels = np.load(args.labels) if args.labels else None
    print("| pair | score | ROC AUC | FPR at 95 % TPR |")
    print("| --- | --- | --- | --- |")
    for name, own, new in args.pair:
        a, b = read_scores(own, labels), read_scores(new, labels)
        for score in SCORES:
            neg, pos = novelty_of(a, score), novelty_of(b, score)
            if neg is None or pos is None:
                continue
            label = {"lk": "-L_k (raw)", "elbo": "-ELBO (raw)"}.get(score, score)
            print(f"| {name} ({len(neg)} vs {len(pos)}) | {label} | {roc_auc(pos, neg):.3f} | "
                  f"{fpr_at_95(pos, neg):.3f} |")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="write the other sources as 28x28 grey arrays")
    m.add_argument("--mnist", required=True)
    m.add_argument("--frey", required=True)
    m.add_argument("--celeba", required=True)
    m.add_argument("--celeba-n", type=int, default=2000)
    m.add_argument("--out", required=True)
    t = sub.add_parser("table", help="ROC AUC and FPR at 95 %% TPR of each score, per pair")
    t.add_argument("--pair", nargs=3, action="append", metavar=("NAME", "OWN_CSV", "NEW_CSV"), required=True)
    t.add_argument("--labels", help="the labels of the rows (by id), for @label filters")
    args = p.parse_args()
    return make(args) if args.cmd == "make" else table(args)


if __name__ == "__main__":
    sys.exit(main())
