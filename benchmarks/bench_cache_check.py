"""What the data cache's check costs when a prepared cache is opened, against one training epoch.

Each time a cache is opened, ``aevb.data.cache.check_cache`` proves it before use: the sealed
manifest, its schema, and the CRC-32 of every data file (read whole up to 1 GiB). This script
opens a prepared cache the way ``aevb train`` does (``load_dataset``: list and fingerprint the
sources, check the cache, read the splits into memory when they fit the budget) with the check
and with it replaced by a bare manifest read, alternating the two in one process, and times one
epoch of the default MLP (``aevb train`` with no model options) on the same data.

    # MNIST's 70,000 images as PNG files (train/ and test/ sub-folders), made once
    python benchmarks/bench_cache_check.py --mnist-dir ../shared/datasets/mnist \\
        --celeba-dir ../shared/datasets/celeba --work /tmp/bench-cache --rounds 5

The caches are built once with aevb's own preparation (``aevb data prepare``) into
``WORK/cache``; later runs reuse them (and the MNIST folder).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_train import _cpu_name  # noqa: E402
from aevb import metrics as M


def make_mnist_folder(mnist_dir: str, out: Path) -> None:
    """MNIST as PNG files: OUT/train/LABEL/N.png (60,000) and OUT/test/LABEL/N.png (10,000)."""
    if (out / "done").exists():
        return
    from PIL import Image

    from aevb.data import load_dataset

    data = load_dataset("mnist", mnist_dir, download=False)
    for name, split in (("train", data.train), ("test", data.test)):
        x = (split.materialize().reshape(-1, 28, 28) * 255).round().byte().numpy()
        for i, (img, label) in enumerate(zip(x, split.y.tolist())):
            folder = out / name / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i:05d}.png")
    (out / "done").write_text("")


def prepare(spec: str, data_dir, cache_dir: Path) -> None:
    cmd = [sys.executable, "-m", "aevb", "data", "prepare", spec, "--cache-dir", str(cache_dir), "--no-download"]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def open_times(spec: str, data_dir, cache_dir: Path, rounds: int) -> dict:
    """Seconds to open the prepared cache with and without the check, alternating; and of the
    check alone."""
    from aevb.data import cache, load_dataset
    from aevb.data.imageset import LoadOptions

    real_check = cache.check_cache
    checked = []

    def bare(folder, identity, splits):  # the manifest as it is, proven by nothing
        m = cache.read_manifest(folder)
        return m, None

    def timed(folder, identity, splits):
        t0 = time.perf_counter()
        got = real_check(folder, identity, splits)
        checked.append(time.perf_counter() - t0)
        return got

    def load():
        t0 = time.perf_counter()
        ds = load_dataset(spec, data_dir, download=False, options=LoadOptions(cache_dir=str(cache_dir), progress=False))
        assert ds.info.get("cache_reused"), ds.info
        return time.perf_counter() - t0

    load()  # warm: the page cache holds the files in both
    with_check, without = [], []
    for _ in range(rounds):
        cache.check_cache = timed
        with_check.append(load())
        cache.check_cache = bare
        without.append(load())
    cache.check_cache = real_check
    return {"open_with_check_s": with_check, "open_without_check_s": without, "check_s": checked}


def epoch_time(spec: str, data_dir, cache_dir: Path, work: Path) -> dict:
    """One epoch (training, test bound, grids, metrics, checkpoint) of the default MLP."""
    import shutil

    from aevb.config import RunConfig
    from aevb.training import Trainer

    cfg = RunConfig()
    cfg.data.dataset, cfg.data.cache_dir = spec, str(cache_dir)
    if data_dir:
        cfg.data.data_dir = str(data_dir)
    cfg.train.epochs, cfg.train.progress, cfg.train.tensorboard = 1, False, False
    out = work / "run"
    shutil.rmtree(out, ignore_errors=True)
    trainer = Trainer.new(cfg, out)
    t0 = time.perf_counter()
    rec = trainer.train_epoch()
    seconds = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return {"epoch_s": seconds, M.TEST_BOUND: rec[M.TEST_BOUND], "model": f"{cfg.model.encoder_hidden}, "
            f"latent {cfg.model.latent_dim}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist-dir", default="../shared/datasets/mnist")
    ap.add_argument("--celeba-dir", default="../shared/datasets/celeba")
    ap.add_argument("--work", default="/tmp/bench-cache", help="the MNIST folder, the caches and a run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", choices=("mnist", "celeba"))
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    import torch

    work = Path(args.work)
    cache_dir = work / "cache"
    sets = []
    if args.only in (None, "mnist"):
        make_mnist_folder(args.mnist_dir, work / "mnist-png")
        sets.append(("mnist", f"folder:{work / 'mnist-png'}", None))
    if args.only in (None, "celeba"):
        sets.append(("celeba", "celeba", args.celeba_dir))
    result = {"machine": f"{platform.machine()} {_cpu_name()}, {os.cpu_count()} cores, "
                         f"{torch.get_num_threads()} torch threads",
              "torch": torch.__version__, "python": platform.python_version(), "load": os.getloadavg()}
    for name, spec, data_dir in sets:
        prepare(spec, data_dir, cache_dir)
        r = open_times(spec, data_dir, cache_dir, args.rounds)
        r.update(epoch_time(spec, data_dir, cache_dir, work))
        med = {k: statistics.median(r[k]) for k in ("open_with_check_s", "open_without_check_s", "check_s")}
        r["median"] = med
        r["check_over_epoch"] = (med["open_with_check_s"] - med["open_without_check_s"]) / r["epoch_s"]
        r["open_over_epoch"] = {"with_check": med["open_with_check_s"] / r["epoch_s"],
                                "without_check": med["open_without_check_s"] / r["epoch_s"]}
        result[name] = r
        print(f"{name}: open {med['open_with_check_s']:.3f} s with the check, {med['open_without_check_s']:.3f} s "
              f"without (check alone {med['check_s']:.3f} s); one epoch {r['epoch_s']:.2f} s; the check adds "
              f"{100 * r['check_over_epoch']:.2f} % of an epoch", flush=True)
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
