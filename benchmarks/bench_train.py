"""One epoch of the pytorch-example setup on MNIST (training plus the test-set bound), for aevb
and for a reference written in the style of pytorch/examples vae/main.py: a DataLoader over a
Dataset that builds one tensor per image (PIL image -> ToTensor-style conversion), the same
784-400-20 ReLU model, Adam 1e-3, batch 128, BCE + KL.

The contenders are timed alternately in the same process, so a busy machine slows all alike;
the result is the ratio of median epoch times. ``--precision fp32 bf16`` times aevb in both
training precisions after the reference in every round (the reference stays float32, as the
example is).

    python benchmarks/bench_train.py --data-dir ../shared/datasets/mnist --rounds 3
    python benchmarks/bench_train.py --data-dir ../shared/datasets/mnist --rounds 10 --precision fp32 bf16
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from aevb import metrics as M


# ----------------------------------------------------------------------------- the reference
class PerImageMNIST(Dataset):
    """What torchvision.datasets.MNIST with transforms.ToTensor() does per item (torchvision has
    no CPU build here, so its steps are written out): index a uint8 tensor, make a PIL image,
    convert it back to a [1, 28, 28] float tensor in [0, 1]."""

    def __init__(self, images_uint8: torch.Tensor, labels: torch.Tensor):
        self.data, self.targets = images_uint8, labels

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        from PIL import Image

        img, target = self.data[index], int(self.targets[index])
        img = Image.fromarray(img.numpy(), mode="L")
        # transforms.ToTensor()
        t = torch.from_numpy(np.array(img, np.uint8, copy=True))
        t = t.view(img.size[1], img.size[0], 1).permute((2, 0, 1)).contiguous()
        return t.to(dtype=torch.get_default_dtype()).div(255), target


class ReferenceVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def forward(self, x):
        h1 = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h1), self.fc22(h1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def reference_loss(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def reference_epoch(model, opt, train_loader, test_loader, out_dir: Path, epoch: int) -> float:
    """train() and test() of the example, with its per-batch loss.item(), its log line every 10
    batches (to a sink here), its comparison image and its 64 samples per epoch."""
    from aevb.images import save_grid

    log = io.StringIO()
    model.train()
    train_loss = 0.0
    for batch_idx, (data, _) in enumerate(train_loader):
        opt.zero_grad()
        recon, mu, logvar = model(data)
        loss = reference_loss(recon, data, mu, logvar)
        loss.backward()
        train_loss += loss.item()
        opt.step()
        if batch_idx % 10 == 0:
            print(f"Train Epoch: {epoch} [{batch_idx * len(data)}/{len(train_loader.dataset)}]\t"
                  f"Loss: {loss.item() / len(data):.6f}", file=log)
    model.eval()
    test_loss = 0.0
    with torch.no_grad():
        for i, (data, _) in enumerate(test_loader):
            recon, mu, logvar = model(data)
            test_loss += reference_loss(recon, data, mu, logvar).item()
            if i == 0:
                comparison = torch.cat([data[:8].view(-1, 784), recon.view(-1, 784)[:8]])
                save_grid(out_dir / f"reconstruction_{epoch}.png", comparison, (1, 28, 28), 8)
        sample = torch.sigmoid(model.fc4(F.relu(model.fc3(torch.randn(64, 20)))))
        save_grid(out_dir / f"sample_{epoch}.png", sample, (1, 28, 28), 8)
    return test_loss / len(test_loader.dataset)


# ----------------------------------------------------------------------------- the benchmark
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/datasets/mnist")
    ap.add_argument("--rounds", type=int, default=3, help="epochs timed for each contender")
    ap.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=["fp32"],
                    help="aevb's training precisions, each timed in turn after the reference (default: fp32)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    from aevb.config import RunConfig
    from aevb.data import load_dataset
    from aevb.config import apply_preset
    from aevb.training import Trainer

    data = load_dataset("mnist", args.data_dir, download=False)
    to_u8 = lambda x: torch.round(x * 255).to(torch.uint8).reshape(-1, 28, 28)
    train_ds = PerImageMNIST(to_u8(data.train.materialize()), data.train.y)
    test_ds = PerImageMNIST(to_u8(data.test.materialize()), data.test.y)
    train_loader = DataLoader(train_ds, batch_size=128, shuffle=True)
    test_loader = DataLoader(test_ds, batch_size=128, shuffle=False)
    torch.manual_seed(0)
    ref = ReferenceVAE()
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-3)

    with tempfile.TemporaryDirectory() as tmp:
        trainers = {}
        for precision in args.precision:
            cfg = apply_preset(RunConfig(), "pytorch-example")
            cfg.data.dataset = "mnist"
            cfg.train.epochs = args.rounds
            cfg.train.progress = False
            cfg.train.tensorboard = False
            cfg.train.precision = precision
            trainers[precision] = Trainer.new(cfg, Path(tmp) / f"run-{precision}", data=data)
        t_ref, ref_losses = [], []
        t_aevb = {p: [] for p in trainers}
        aevb_losses = {p: [] for p in trainers}
        for r in range(args.rounds):
            t0 = time.perf_counter()
            ref_losses.append(reference_epoch(ref, ref_opt, train_loader, test_loader, Path(tmp), r + 1))
            t_ref.append(time.perf_counter() - t0)
            line = f"round {r + 1}: reference {t_ref[-1]:.2f}s (test loss {ref_losses[-1]:.2f})"
            for precision, trainer in trainers.items():
                t0 = time.perf_counter()
                rec = trainer.train_epoch()  # train, test bound, images, metrics, checkpoint
                t_aevb[precision].append(time.perf_counter() - t0)
                aevb_losses[precision].append(-rec[M.TEST_BOUND])
                line += (f"  aevb {precision} {t_aevb[precision][-1]:.2f}s "
                         f"(test loss {aevb_losses[precision][-1]:.2f})")
            print(line, flush=True)
    med_ref = statistics.median(t_ref)
    result = {
        "machine": f"{platform.machine()} {_cpu_name()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__, "python": platform.python_version(),
        "reference_epoch_s": t_ref, "median_reference_s": med_ref, "reference_test_loss": ref_losses,
    }
    for precision in trainers:  # fp32 keeps the keys it always had; other precisions are suffixed
        key = "" if precision == "fp32" else f"_{precision}"
        med = statistics.median(t_aevb[precision])
        result.update({f"aevb_epoch_s{key}": t_aevb[precision], f"median_aevb_s{key}": med,
                       f"speedup{key}": med_ref / med, f"aevb_test_loss{key}": aevb_losses[precision]})
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
