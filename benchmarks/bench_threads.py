"""Threads for the work: whole `aevb train` commands on one thread against two, idle and loaded.

For each case the script runs the same command with ``--threads 1``, ``--threads 2`` and without
``--threads`` (aevb's own choice), alternated round by round, and prints the median wall time of
each and the ratio of two threads to one, with the
arithmetic of one training step's forward pass (aevb.threads.linear_flops at the batch size),
against which aevb.threads.SMALL_WORK is set. ``--load`` runs a second `aevb train` (MNIST,
PyTorch's own threads) beside every timed command, as on a machine busy with other work.

    python benchmarks/bench_threads.py --mnist-dir ../shared/datasets/mnist --rounds 3
    python benchmarks/bench_threads.py --mnist-dir ../shared/datasets/mnist --rounds 3 --load
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import _cpu_name  # noqa: E402
from aevb import threads  # noqa: E402
from aevb.config import RunConfig, apply_preset, resolve  # noqa: E402
from aevb.model import VAE  # noqa: E402


def cases(mnist_dir: str):
    """(name, aevb train options, data kind, data name, image shape, preset or None)."""
    quiet = ["--no-progress", "--no-tensorboard", "--no-report", "--images-every", "0"]
    return [
        ("digits, default MLP, 20 epochs", ["--epochs", "20"] + quiet, "real", "digits", (1, 8, 8), None),
        ("MNIST, pytorch-example, 1 epoch", ["--preset", "pytorch-example", "--dataset", "mnist", "--data-dir",
                                             mnist_dir, "--no-download", "--epochs", "1"] + quiet,
         "real", "mnist", (1, 28, 28), "pytorch-example"),
        ("MNIST, default MLP, 1 epoch", ["--dataset", "mnist", "--data-dir", mnist_dir, "--no-download",
                                         "--epochs", "1"] + quiet, "real", "mnist", (1, 28, 28), None),
    ]


def step_flops(kind, name, shape, preset) -> float:
    cfg = RunConfig() if preset is None else apply_preset(RunConfig(), preset)
    cfg = resolve(cfg, kind, name, shape)
    with torch.device("meta"):
        model = VAE.from_config(cfg.model, shape[0] * shape[1] * shape[2], shape)
    return threads.linear_flops(model, cfg.train.batch_size)


def timed(argv, work: Path) -> float:
    out = tempfile.mkdtemp(dir=work)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "aevb", "train", "--out", out, "--overwrite"] + argv, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mnist-dir", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--load", action="store_true", help="a second aevb train beside every timed command")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    print(f"{_cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}; "
          f"{'loaded: a second aevb train beside each command' if args.load else 'idle'}; SMALL_WORK "
          f"{threads.SMALL_WORK / 1e6:.0f} MFLOP", flush=True)
    for name, options, kind, data, shape, preset in cases(args.mnist_dir):
        flops = step_flops(kind, data, shape, preset)
        times = {1: [], 2: [], None: []}
        for r in range(args.rounds):
            for n in (1, 2, None) if r % 2 == 0 else (None, 2, 1):
                load = None
                if args.load:
                    load = subprocess.Popen([sys.executable, "-m", "aevb", "train", "--dataset", "mnist",
                                             "--data-dir", args.mnist_dir, "--no-download", "--epochs", "100",
                                             "--no-progress", "--no-report", "--out", tempfile.mkdtemp(dir=work)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(3)
                try:
                    times[n].append(timed(options + (["--threads", str(n)] if n else []), work))
                finally:
                    if load is not None:
                        load.kill()
                        load.wait()
        m1, m2, m0 = (statistics.median(times[n]) for n in (1, 2, None))
        print(f"{name}: step forward {flops / 1e6:.0f} MFLOP; 1 thread {m1:.1f} s, 2 threads {m2:.1f} s, "
              f"aevb's choice {m0:.1f} s (medians of {args.rounds}); 2 threads / 1 thread {m2 / m1:.2f}; "
              f"aevb's choice / the faster {m0 / min(m1, m2):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
