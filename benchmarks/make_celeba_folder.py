"""Build a CelebA-size folder from the 6,000 real faces: N files under the official names
(``000001.jpg`` ...), each a hard link to one of the real JPEGs (cycled), and a partition file.

Decoding costs and content are real; only the identities repeat. For N = 202,599 the official
``list_eval_partition.txt`` is copied whole; for a smaller N, N of its lines evenly spread over
the file, so train, valid and test keep their official proportions.

    python benchmarks/make_celeba_folder.py --source ../shared/datasets/celeba --n 50000 --out /tmp/celeba50k
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path


def make(source: Path, n: int, out: Path) -> Path:
    real = sorted((source / "img_align_celeba").glob("*.jpg"))
    lines = (source / "list_eval_partition.txt").read_text().splitlines()
    if not real or not lines:
        sys.exit(f"{source} must hold img_align_celeba/*.jpg and list_eval_partition.txt")
    if n > len(lines):
        sys.exit(f"--n {n} is more than the {len(lines)} rows of the partition file")
    images = out / "img_align_celeba"
    if out.exists():
        shutil.rmtree(out)
    images.mkdir(parents=True)
    chosen = lines if n == len(lines) else [lines[round(i * (len(lines) - 1) / max(1, n - 1))] for i in range(n)]
    for i, line in enumerate(chosen):
        name = line.split()[0]
        try:
            os.link(real[i % len(real)], images / name)
        except OSError:  # another file system: a copy keeps the content and the decoding cost
            shutil.copyfile(real[i % len(real)], images / name)
    (out / "list_eval_partition.txt").write_text("\n".join(chosen) + "\n")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="../shared/datasets/celeba")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    out = make(Path(a.source), a.n, Path(a.out))
    print(f"{out}: {a.n} files")


if __name__ == "__main__":
    main()
