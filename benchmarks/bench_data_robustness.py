"""Data conversion under kill -9, and memory of streamed training against the data set's size:
the timed and memory-measuring checks that do not belong in unit tests (tests/test_data_scale.py
keeps what asserts behaviour: an interrupted build is never taken for a finished one, and decoding
workers are set to die with their parent).

    # kill -9 of `aevb data prepare`: how long until the decoding workers are gone, and whether
    # the cache left behind is ever taken for a finished one (each of --rounds rounds)
    python benchmarks/bench_data_robustness.py kill --images 2500 --rounds 3

    # peak anonymous memory (RssAnon) of one epoch of streamed training on N = 2,000 and 60,000
    # rows of 3,072 uint8 values (6 MB and 184 MB), with a 1MB memory budget
    python benchmarks/bench_data_robustness.py growth

Targets: the workers are gone within 5 s of the kill (the kernel's parent-death signal, or the
workers' own watch of their parent at worst), a killed conversion leaves nothing that looks
complete; the peak grows by less than 60 MB from the small to the large data set (held in
memory, the large set alone would add 178 MB of rows).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from helpers import alive, children  # noqa: E402 (the tests' process helpers, one copy)

KILL_DEADLINE_S = 60  # for the conversion to reach the point where it is killed
WORKERS_GONE_S = 5  # target: every worker gone this long after the kill
GROWTH_MB = 60  # target: peak growth from 2,000 to 60,000 rows


def write_images(folder: Path, n: int, size=(120, 120)) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    for i in range(n):
        Image.fromarray(rng.randint(0, 256, size=size + (3,)).astype(np.uint8)).save(folder / f"{i:06d}.jpg",
                                                                                     quality=95)




def prepare(folder: Path, cache: Path, workers: int) -> subprocess.Popen:
    env = {**os.environ, "AEVB_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "aevb", "data", "prepare", f"folder:{folder}",
                             "--workers", str(workers)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_round(folder: Path, tmp: Path, workers: int) -> dict:
    """One conversion killed once its workers run: seconds until they are gone, and whether the
    cache left behind looks complete."""
    cache = tmp / f"cache-{time.time_ns()}"
    proc = prepare(folder, cache, workers)
    try:
        deadline, seen = time.time() + KILL_DEADLINE_S, []
        while time.time() < deadline and len(seen) < workers and proc.poll() is None:
            seen = children(proc.pid)
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    t0 = time.perf_counter()
    while any(alive(w) for w in seen) and time.perf_counter() - t0 < 10 * WORKERS_GONE_S:
        time.sleep(0.01)
    gone_s = time.perf_counter() - t0
    complete = [p for p in cache.glob("*") if (p / "manifest.json").is_file()]
    partial = [p for p in cache.glob("*") if ".partial-" in p.name]
    from aevb.data import load_dataset
    from aevb.data.imageset import LoadOptions

    ds = load_dataset(f"folder:{folder}", options=LoadOptions(cache_dir=str(cache), progress=False))
    return {"workers_seen": len(seen), "workers_gone_s": round(gone_s, 3),
            "left_alive": sum(alive(w) for w in seen), "looked_complete": len(complete),
            "partial_left": len(partial), "rebuilt": ds.info.get("cache_reused") is False,
            "partials_after_reload": sum(".partial-" in p.name for p in cache.glob("*"))}


def cmd_kill(a) -> None:
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        tmp = Path(tmp)
        write_images(tmp / "imgs", a.images)
        ok = True
        for r in range(a.rounds):
            res = kill_round(tmp / "imgs", tmp, a.workers)
            ok &= (res["workers_seen"] >= a.workers and res["left_alive"] == 0
                   and res["workers_gone_s"] <= WORKERS_GONE_S and res["looked_complete"] == 0 and res["rebuilt"]
                   and res["partials_after_reload"] == 0)
            print(f"round {r + 1}: {res}")
            if res["workers_seen"] < a.workers:
                print(f"  the conversion ended before {a.workers} workers were seen: give more --images")
        print(f"target (workers gone within {WORKERS_GONE_S} s, nothing complete-looking left): "
              f"{'met' if ok else 'MISSED'}")


MEASURE = textwrap.dedent("""
    import sys, threading, time
    peak = [0]
    def sample():
        while True:
            for line in open('/proc/self/status'):
                if line.startswith('RssAnon:'):
                    peak[0] = max(peak[0], int(line.split()[1]))
            time.sleep(0.005)
    threading.Thread(target=sample, daemon=True).start()
    import torch
    torch.set_num_threads(1)
    from aevb.config import RunConfig
    from aevb.training import Trainer
    cfg = RunConfig()
    cfg.data.dataset, cfg.data.memory_budget = 'array:' + sys.argv[1], '1MB'
    cfg.model.latent_dim, cfg.model.encoder_hidden = 2, [8]
    cfg.train.epochs, cfg.train.batch_size, cfg.train.eval_batch_size = 1, 64, 64
    cfg.train.progress, cfg.train.tensorboard, cfg.train.images_every = False, False, 0
    tr = Trainer.new(cfg, sys.argv[2])
    assert tr.data.train.streamed
    tr.fit()
    time.sleep(0.05)
    print(peak[0])
""")


def cmd_growth(a) -> None:
    rng = np.random.RandomState(0)
    peaks = {}
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        tmp = Path(tmp)
        for n in a.rows:
            np.save(tmp / f"d{n}.npy", rng.randint(0, 256, size=(n, 3072)).astype(np.uint8))
            out = subprocess.run([sys.executable, "-c", MEASURE, str(tmp / f"d{n}.npy"), str(tmp / f"r{n}")],
                                 capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            if out.returncode != 0:
                sys.exit(out.stderr[-2000:])
            peaks[n] = int(out.stdout.split()[-1]) / 1024
            print(f"N = {n:,}: peak RssAnon {peaks[n]:.0f} MB")
    growth = peaks[max(peaks)] - peaks[min(peaks)]
    print(f"growth {growth:.0f} MB; target < {GROWTH_MB} MB: {'met' if growth < GROWTH_MB else 'MISSED'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("kill", help="kill -9 of a conversion: workers gone, nothing complete-looking left")
    k.add_argument("--images", type=int, default=2500, help="JPEGs of 120x120 to convert")
    k.add_argument("--workers", type=int, default=2)
    k.add_argument("--rounds", type=int, default=3)
    g = sub.add_parser("growth", help="peak memory of streamed training against the data set's size")
    g.add_argument("--rows", type=int, nargs=2, default=[2000, 60000])
    for s in (k, g):
        s.add_argument("--tmp", default=None, help="folder for the data, caches and runs (default: the system's)")
    a = p.parse_args()
    if not Path("/proc/self/status").is_file():
        sys.exit("this benchmark reads /proc (Linux)")
    {"kill": cmd_kill, "growth": cmd_growth}[a.cmd](a)


if __name__ == "__main__":
    main()
