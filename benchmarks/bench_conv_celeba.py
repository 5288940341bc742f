"""One epoch of the conv-celeba64 preset on the real CelebA faces, aevb against a reference written
in the style of the common PyTorch VAE repositories (e.g. AntixK/PyTorch-VAE): a DataLoader over
the JPEG folder whose Dataset decodes every image on every epoch and applies CenterCrop(148),
Resize(64) and ToTensor (written out with Pillow + numpy: torchvision has no CPU build here),
the same network (aevb's conv encoder/decoder in the default NCHW layout), the same discretized
logistic likelihood, plain Adam, a per-batch ``loss.item()``, a test loss and a sample grid per
epoch, all in float32.

aevb's side is ``--dataset celeba --crop 148 148 --image-size 64 64``: the faces are decoded
once into the data cache (a fresh one; this one-off preparation is timed and reported
separately) and held compact in memory, and ``Trainer.train_epoch`` runs the epoch, the test
bound, image grids, metrics and an atomic checkpoint; in float32 and with ``--precision bf16``
(training steps in bfloat16 autocast, channels_last either way). They are timed alternately in
one process, so a busy machine slows both alike; the result is the ratio of median epoch times.
Both train on the official train split of the faces present (4,560 of the 6,000) and test on
the official test split (660).

    python benchmarks/bench_conv_celeba.py --data-dir ../shared/datasets/celeba --rounds 3
    python benchmarks/bench_conv_celeba.py --data-dir ../shared/datasets/celeba --n 256 --rounds 1  # a check
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset as TorchDataset
from aevb import metrics as M

CROP, SIZE = 148, 64


def crop_resize(path: Path) -> np.ndarray:
    """torchvision's CenterCrop(148) then Resize(64) (bilinear, PIL) on one JPEG: uint8 [64, 64, 3]."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        top, left = int(round((h - CROP) / 2.0)), int(round((w - CROP) / 2.0))
        im = im.crop((left, top, left + CROP, top + CROP)).resize((SIZE, SIZE), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


# ----------------------------------------------------------------------------- the reference
class JPEGFolder(TorchDataset):
    """A Dataset over JPEG files: decode, CenterCrop, Resize, ToTensor on every access."""

    def __init__(self, files: Sequence[Path]):
        self.files = list(files)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        arr = crop_resize(self.files[i])
        # transforms.ToTensor(): HWC uint8 -> CHW float in [0, 1]
        t = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        return t, 0


def reference_model(cfg, seed: int):
    from aevb.convnets import ConvDecoder, ConvEncoder
    from aevb.distributions import get_likelihood

    torch.manual_seed(seed)
    m = cfg.model
    shape = (3, SIZE, SIZE)
    lik = get_likelihood(m.likelihood, components=m.components)
    kw = dict(kernel=m.kernel_size, act=m.activation, norm=m.conv_norm, channels_last=False)
    enc = ConvEncoder(shape, m.channels, m.latent_dim, **kw)
    dec = ConvDecoder(m.latent_dim, m.channels, shape, lik.n_params, **kw)
    return torch.nn.ModuleDict({"enc": enc, "dec": dec}), lik


def reference_loss(model, lik, x):
    """The repositories' forward + loss_function: reconstruction term + KL, mean over the batch."""
    flat = x.flatten(1)
    mu, log_var = model["enc"](flat)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
    recons = -lik.log_prob(flat, model["dec"](z))
    kld = -0.5 * torch.sum(1 + log_var - mu ** 2 - log_var.exp(), dim=1)
    return (recons + kld).mean()


def reference_epoch(model, lik, opt, train_loader, test_loader, out_dir: Path) -> float:
    from aevb.images import save_grid

    t0 = time.perf_counter()
    model.train()
    for x, _ in train_loader:
        loss = reference_loss(model, lik, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _ = loss.item()
    model.eval()
    with torch.no_grad():
        total = sum(reference_loss(model, lik, x).item() * len(x) for x, _ in test_loader)
        z = torch.randn(64, model["enc"].latent_dim)
        save_grid(out_dir / "ref_samples.png", lik.mean(model["dec"](z)), (3, SIZE, SIZE))
    _ = total
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- aevb
def load_faces(folder: Path, n: int, cache_dir: str):
    """(aevb Dataset of the first n official-train faces and the official test faces, cropped and
    resized through the data cache, train files, test files)."""
    from aevb.config import RunConfig
    from aevb.data import load_configured
    from aevb.data.celeba import celeba_plan

    d = RunConfig().data
    d.dataset, d.data_dir, d.crop, d.image_size, d.cache_dir = "celeba", str(folder), [CROP, CROP], [SIZE, SIZE], cache_dir
    data = load_configured(d, progress=False)
    plan = celeba_plan(folder)
    train_files, test_files = plan.files["train"][:n], plan.files["test"]
    if n < len(data.train):
        data.train = data.train.subset(np.arange(n))
    return data, train_files, test_files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/datasets/celeba")
    ap.add_argument("--n", type=int, default=6000, help="at most this many training faces (default: all present)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--workers", type=int, default=2, help="the reference DataLoader's num_workers")
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                    help="aevb contenders (train.precision); the reference is always fp32")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    from aevb.config import RunConfig, merge
    from aevb.config import apply_preset
    from aevb.training import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = merge(apply_preset(RunConfig(), "conv-celeba64"),
                {"data": {"data_dir": args.data_dir},
                 "train": {"epochs": args.rounds, "progress": False, "tensorboard": False,
                           "threads": args.threads}})
    bs = cfg.train.batch_size

    tmp = Path(tempfile.mkdtemp(prefix="bench_conv_celeba_"))
    t0 = time.perf_counter()
    data, files, test_files = load_faces(Path(args.data_dir), args.n, str(tmp / "cache"))
    prepare_s = time.perf_counter() - t0

    trainers = {p: Trainer.new(merge(cfg, {"train": {"precision": p}}), tmp / f"aevb-{p}", data=data)
                for p in args.precision}
    ref_model, lik = reference_model(cfg, seed=0)
    ref_opt = torch.optim.Adam(ref_model.parameters(), lr=cfg.optim.lr)
    train_loader = DataLoader(JPEGFolder(files), batch_size=bs, shuffle=True, num_workers=args.workers)
    test_loader = DataLoader(JPEGFolder(test_files), batch_size=bs, shuffle=False, num_workers=args.workers)

    times = {"reference": [], **{f"aevb-{p}": [] for p in trainers}}
    bpd = {f"aevb-{p}": [] for p in trainers}
    for r in range(args.rounds):
        times["reference"].append(reference_epoch(ref_model, lik, ref_opt, train_loader, test_loader, tmp))
        for p, trainer in trainers.items():
            t0 = time.perf_counter()
            rec = trainer.train_epoch()
            times[f"aevb-{p}"].append(time.perf_counter() - t0)
            bpd[f"aevb-{p}"].append(-rec[M.TEST_BOUND] / (3 * SIZE * SIZE * np.log(2)))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items())
              + "; aevb test bits/dim " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in bpd.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "n_faces": len(files), "batch_size": bs, "epoch_s": times, "median_s": med,
        "ratio": {k: med["reference"] / med[k] for k in med if k != "reference"},
        "aevb_test_bits_per_dim": bpd, "aevb_prepare_once_s": prepare_s,
        "threads": torch.get_num_threads(), "workers": args.workers, "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(), "python": platform.python_version()}
    print("median epoch: " + ", ".join(f"{k} {v:.1f} s" for k, v in med.items()) + " -> "
          + ", ".join(f"{k} {r:.2f}x" for k, r in result["ratio"].items())
          + f"; aevb's one-off decode/crop/resize of {len(files)} faces: {prepare_s:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
