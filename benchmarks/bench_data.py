"""Data at scale: conversion throughput, memory of streamed training, streamed vs in-memory speed.

    # a CelebA-size folder first (hard links to the 6,000 real faces)
    python benchmarks/make_celeba_folder.py --n 50000 --out /tmp/celeba50k

    # conversion: `aevb data prepare celeba` against a bare Pillow decode loop (x workers)
    python benchmarks/bench_data.py convert --data-dir /tmp/celeba50k

    # peak anonymous memory of training steps with a budget smaller than the data
    python benchmarks/bench_data.py memory --data-dir /tmp/celeba50k --budget 1GB --steps 100

    # steps per second, streamed from the cache against held in memory (the same data)
    python benchmarks/bench_data.py stream --data-dir ../shared/datasets/celeba --steps 200

Memory is RssAnon (anonymous resident memory, /proc/PID/status) summed over the process and its
children, sampled every 20 ms; VmHWM (peak resident, including mapped file pages) is printed too.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A child process: train `steps` steps on celeba (full 218x178 unless --image-size) through
# aevb's Trainer and data path, then print JSON with its timing and VmHWM.
CHILD = r"""
import json, sys, time, torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
from aevb.config import RunConfig, merge
from aevb.config import apply_preset
from aevb.training import Trainer
from aevb.training.objective import batch_loss, binarize_batch, objective_terms
cfg = apply_preset(RunConfig(), args["preset"]) if args["preset"] else RunConfig()
cfg = merge(cfg, {"data": {"dataset": "celeba", "data_dir": args["data_dir"], "memory_budget": args["budget"],
                           "cache_dir": args["cache_dir"], "image_size": args["image_size"], "crop": args["crop"]},
                  "train": {"progress": False, "tensorboard": False, "images_every": 0,
                            "batch_size": args["batch_size"]}})
if args["hidden"]:
    cfg.model.encoder_hidden, cfg.model.latent_dim = args["hidden"], args["latent"]
t0 = time.perf_counter()
tr = Trainer.new(cfg, args["out"])
t_load = time.perf_counter() - t0
split = tr.splits["train"]
g = torch.Generator().manual_seed(0)
perm = torch.randperm(len(split), generator=g)
bs = cfg.train.batch_size
idx = [perm[(i * bs) % (len(split) - bs):(i * bs) % (len(split) - bs) + bs] for i in range(args["steps"] + args["warmup"])]
t1 = None
for b, xb in enumerate(split.batches(idx, tr.device)):
    if b == args["warmup"]:
        t1 = time.perf_counter()
    terms = objective_terms(tr.model, binarize_batch(xb, tr.data.dynamic_binarization), cfg.objective)
    loss = batch_loss(terms, cfg.objective, 1.0)
    tr.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    tr.optimizer.step()
steps_s = args["steps"] / (time.perf_counter() - t1)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"n_train": len(split), "streamed": split.streamed, "load_s": t_load,
                  "steps_per_s": steps_s, "vmhwm_mb": int(hwm) / 1024, "loss": float(loss)}))
"""


def rss_anon_kb(pid: int) -> int:
    """RssAnon of ``pid`` and all its descendants, kB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("RssAnon:"):
                    total += int(line.split()[1])
            for t in os.listdir(f"/proc/{p}/task"):
                try:
                    todo += [int(c) for c in open(f"/proc/{p}/task/{t}/children").read().split()]
                except OSError:
                    pass
        except OSError:
            continue
    return total


def run_sampled(cmd, env=None) -> tuple:
    """(stdout, peak RssAnon MB summed over the process tree, wall s) of a command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, rss_anon_kb(proc.pid))
        time.sleep(0.02)
    out, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{err[-3000:]}")
    return out, peak / 1024, time.perf_counter() - t0


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][0]
    except (OSError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"


# ----------------------------------------------------------------------------- convert
def bare_decode_rate(files, size=None, crop=None, seconds: float = 20.0) -> float:
    """Images/s of a plain single-process Pillow loop: open, decode, (crop, resize), to numpy."""
    import numpy as np
    from PIL import Image

    t0, n = time.perf_counter(), 0
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB")
            if crop:
                left, top = (im.width - crop[1]) // 2, (im.height - crop[0]) // 2
                im = im.crop((left, top, left + crop[1], top + crop[0]))
            if size:
                im = im.resize((size[1], size[0]), Image.Resampling.LANCZOS)
            np.asarray(im)
        n += 1
        if time.perf_counter() - t0 > seconds:
            break
    return n / (time.perf_counter() - t0)


def cmd_convert(a) -> None:
    from aevb.data.decode import default_workers

    folder = Path(a.data_dir)
    files = sorted((folder / "img_align_celeba").glob("*.jpg"))
    workers = a.workers or default_workers()
    size_args = (["--image-size", *map(str, a.image_size)] if a.image_size else []) + \
                (["--crop", *map(str, a.crop)] if a.crop else [])
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        cache = a.cache_dir or tmp  # --cache-dir keeps the cache for `memory` and `stream`
        cmd = [sys.executable, "-m", "aevb", "data", "prepare", "celeba", "--data-dir", str(folder),
               "--cache-dir", cache, "--workers", str(workers), "--rebuild", *size_args]
        bare = bare_decode_rate(files[:3000], a.image_size, a.crop)
        out, peak, wall = run_sampled(cmd, env={**os.environ, "PYTHONPATH": str(REPO)})
        bare_after = bare_decode_rate(files[3000:6000], a.image_size, a.crop)
    rate = len(files) / wall
    bare_rate = statistics.mean([bare, bare_after])
    print(json.dumps({"n": len(files), "workers": workers, "prepare_wall_s": round(wall, 1),
                      "prepare_images_per_s": round(rate, 1), "bare_loop_images_per_s": round(bare_rate, 1),
                      "ratio_to_bare_x_workers": round(rate / (bare_rate * workers), 3),
                      "peak_rss_anon_mb": round(peak, 1), "machine": machine()}, indent=1))
    print(out.strip())


# ----------------------------------------------------------------------------- memory / stream
def child_run(a, budget: str, cache: str, out: str) -> tuple:
    args = {"data_dir": a.data_dir, "budget": budget, "cache_dir": cache, "steps": a.steps, "warmup": a.warmup,
            "threads": a.threads, "preset": a.preset, "hidden": a.hidden, "latent": a.latent,
            "batch_size": a.batch_size, "image_size": a.image_size, "crop": a.crop, "out": out}
    stdout, peak, wall = run_sampled([sys.executable, "-c", CHILD, json.dumps(args)],
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
    res = json.loads(stdout.strip().splitlines()[-1])
    res.update({"peak_rss_anon_mb": round(peak, 1), "wall_s": round(wall, 1), "budget": budget})
    return res


def prepared(a, cache: str) -> None:
    size_args = (["--image-size", *map(str, a.image_size)] if a.image_size else []) + \
                (["--crop", *map(str, a.crop)] if a.crop else [])
    subprocess.run([sys.executable, "-m", "aevb", "data", "prepare", "celeba", "--data-dir", a.data_dir,
                    "--cache-dir", cache, *size_args], check=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                   stdout=subprocess.DEVNULL)


def cmd_memory(a) -> None:
    cache = a.cache_dir or tempfile.mkdtemp(dir=a.tmp)
    prepared(a, cache)  # conversion is measured by `convert`; here only training
    with tempfile.TemporaryDirectory(dir=a.tmp) as out:
        res = child_run(a, a.budget, cache, str(Path(out) / "run"))
    res["machine"] = machine()
    print(json.dumps(res, indent=1))


def cmd_stream(a) -> None:
    cache = a.cache_dir or tempfile.mkdtemp(dir=a.tmp)
    prepared(a, cache)
    rows = {"memory": [], "streamed": []}
    for _ in range(a.rounds):  # alternate, so drift of the machine hits both alike
        for name, budget in (("memory", "64GB"), ("streamed", "1MB")):
            with tempfile.TemporaryDirectory(dir=a.tmp) as out:
                rows[name].append(child_run(a, budget, cache, str(Path(out) / "run"))["steps_per_s"])
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(json.dumps({"steps_per_s": rows, "median": med, "streamed_over_memory": round(med["streamed"] / med["memory"], 3),
                      "machine": machine()}, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    for name in ("convert", "memory", "stream"):
        s = sub.add_parser(name)
        s.add_argument("--data-dir", required=True, help="a CelebA folder (img_align_celeba/, list_eval_partition.txt)")
        s.add_argument("--image-size", type=int, nargs=2)
        s.add_argument("--crop", type=int, nargs=2)
        s.add_argument("--tmp", default=None, help="folder for caches and runs (default: the system's)")
        s.add_argument("--cache-dir", default=None)
        s.add_argument("--workers", type=int, default=0)
        s.add_argument("--budget", default="1GB")
        s.add_argument("--steps", type=int, default=100)
        s.add_argument("--warmup", type=int, default=5)
        s.add_argument("--threads", type=int, default=2)
        s.add_argument("--rounds", type=int, default=3)
        s.add_argument("--preset", default=None, help="e.g. celeba-mlp (default: a small MLP, --hidden)")
        s.add_argument("--hidden", type=int, nargs="+", default=[64])
        s.add_argument("--latent", type=int, default=8)
        s.add_argument("--batch-size", type=int, default=64)
    a = p.parse_args()
    if a.preset:
        a.hidden = None
    {"convert": cmd_convert, "memory": cmd_memory, "stream": cmd_stream}[a.what](a)


if __name__ == "__main__":
    main()
