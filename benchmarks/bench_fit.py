"""aevb.fit on the user's data against aevb train on the same data, as whole processes.

Three measurements on MNIST (60,000 training and 10,000 test images, uint8), each a fresh
process, alternated round by round so that a busy machine slows both sides alike:

* speed: the median epoch time (training plus the test bound, from each run's metrics) of
  ``aevb train --preset pytorch-example --dataset mnist`` and of ``aevb.fit("pytorch-example",
  x_train, test=x_test)`` on the same images as a uint8 tensor; the ratio train / fit (at least
  0.95 means fit is no slower);
* a DataLoader: ``aevb.fit`` on a ``DataLoader(TensorDataset(x_train))`` against the tensor, and
  the time of one pass of that loader alone: fit on the loader costs at most the loader's pass
  plus the tensor's fit;
* memory: the peak resident memory during ``fit`` (VmHWM, reset just before it; figures and report
  off) above the process's memory just before it (torch imported, the array loaded, the heap
  trimmed), for all 60,000 training images and for 6,000 of them: what grows with the data, per
  byte of the array, is 0 when ``fit`` uses the array as it is and 1 when it makes one copy; the
  fixed part is set beside the model's training state (weights, gradients and Adam's two
  moments, 4 x 4 bytes per parameter).

    python benchmarks/bench_fit.py --data-dir ../shared/datasets/mnist --rounds 3 --epochs 2
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
from pathlib import Path

from aevb import metrics as M

# one process of the fit side: prints a JSON line {"rss_before": bytes, "params": n, "array": bytes}
FIT = r"""
import ctypes, json, os, sys, torch, aevb
from aevb.data.idx import read_idx_images
mode, data_dir, out, epochs, threads, n = sys.argv[1:7]
torch.set_num_threads(int(threads))
# the uint8 images as a user holds them: [N, 28, 28]
x_train = torch.from_numpy(read_idx_images(os.path.join(data_dir, "train-images-idx3-ubyte.gz")))[:int(n)].clone()
x_test = torch.from_numpy(read_idx_images(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"))).clone()

def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))

ctypes.CDLL("libc.so.6").malloc_trim(0)  # what reading the files left in the heap is not the user's data
with open("/proc/self/clear_refs", "w") as f:  # the peak (VmHWM) counts from here
    f.write("5")
rss_before = status("VmRSS")
data = x_train
if mode == "loader":
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train), batch_size=1000)
run = aevb.fit("pytorch-example", data, test=x_test, epochs=int(epochs), out=out, report=False, progress=False,
               threads=int(threads))
print(json.dumps({"rss_before": rss_before, "peak": status("VmHWM"), "array": x_train.numel() + x_test.numel(),
                  "params": sum(p.numel() for p in run.load_model().parameters())}))
"""

LOADER = r"""
import os, sys, time, torch
from aevb.data.idx import read_idx_images
x = torch.from_numpy(read_idx_images(os.path.join(sys.argv[1], "train-images-idx3-ubyte.gz")))
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=1000)
t0 = time.perf_counter()
for _ in loader:
    pass
print(time.perf_counter() - t0)
"""


def epoch_times(run: Path):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r[M.EPOCH_TIME_S] for r in rows]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    env = dict(os.environ)
    env.setdefault("AEVB_CACHE", tempfile.mkdtemp(prefix="aevb-bench-cache-"))
    cli, fit, loader, loader_pass, small, memory, rounds = [], [], [], [], [], {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            out = Path(tmp) / f"cli{r}"
            subprocess.run([sys.executable, "-m", "aevb", "train", "--preset", "pytorch-example", "--dataset", "mnist",
                            "--data-dir", a.data_dir, "--no-download", "--epochs", str(a.epochs), "--no-report",
                            "--threads", str(a.threads), "--out", str(out)], check=True, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cli += epoch_times(out)
            for mode, times, n in (("tensor", fit, 60000), ("loader", loader, 60000), ("tensor", small, 6000)):
                out = Path(tmp) / f"{mode}{n}-{r}"
                got = subprocess.run([sys.executable, "-c", FIT, mode, a.data_dir, str(out), str(a.epochs),
                                      str(a.threads), str(n)], check=True, env=env, capture_output=True, text=True)
                info = json.loads(got.stdout.strip().splitlines()[-1])
                times += epoch_times(out)
                if mode == "tensor":
                    memory.setdefault(n, []).append(info)
            got = subprocess.run([sys.executable, "-c", LOADER, a.data_dir], check=True, env=env, capture_output=True,
                                 text=True)
            loader_pass.append(float(got.stdout.strip().splitlines()[-1]))
            last = {name: statistics.median(times[-a.epochs:]) for name, times in
                    (("train", cli), ("fit", fit), ("loader", loader))}
            rounds.append(dict(last, loader_pass=loader_pass[-1]))
            print(f"round {r + 1}: train {last['train']:.2f} s/epoch, fit {last['fit']:.2f}, fit on a DataLoader "
                  f"{last['loader']:.2f}, one pass of the loader {loader_pass[-1]:.2f} s", file=sys.stderr)
    def extra(n):  # the median peak during fit above the process's memory before it, bytes
        return statistics.median(m["peak"] - m["rss_before"] for m in memory[n])

    full, tenth = memory[60000][-1], memory[6000][-1]
    state = 16 * full["params"]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"torch {__import__('torch').__version__}",
        "epochs_per_process": a.epochs, "rounds": a.rounds, "threads": a.threads,
        "train_epoch_s_median": statistics.median(cli), "fit_epoch_s_median": statistics.median(fit),
        "speed_ratio_train_over_fit": statistics.median(cli) / statistics.median(fit),
        # the same ratio in each round (its two sides ran one after the other), and their median
        "speed_ratio_per_round": [round(x["train"] / x["fit"], 3) for x in rounds],
        "speed_ratio_median_of_rounds": statistics.median(x["train"] / x["fit"] for x in rounds),
        "loader_cost_per_round_s": [round(x["loader"] - x["fit"], 3) for x in rounds],
        "fit_loader_epoch_s_median": statistics.median(loader),
        "loader_pass_s_median": statistics.median(loader_pass),
        "array_bytes": full["array"], "model_training_state_bytes": state,
        "fit_peak_above_before_bytes": extra(60000),
        "fit_peak_above_before_bytes_tenth_of_the_data": extra(6000),
        # memory that grows with the data, per byte of data: 1.0 means the array is used as it is
        "data_growth_per_array_byte": (extra(60000) - extra(6000)) / (full["array"] - tenth["array"]),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
