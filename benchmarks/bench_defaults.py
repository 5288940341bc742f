"""Training with nothing but --dataset: is epoch 1 stable, and how close does a fixed budget come
to the tuned preset?

For each data set it trains three runs from the same seed:

* ``defaults``: what `aevb train --dataset NAME` does now (sizes from the data, centred inputs, the
  decoder's bias at the data's mean, fan-in-scaled learning rates, a 20-step warm-up);
* ``before``: the defaults as they were (400 hidden units, 20 latents, batch 128, none of the
  stabilisers), i.e. the same options with the settings of ``aevb.presets.MEASURED_WITH``;
* ``preset``: the tuned preset for that data, where one exists.

Per run it reports the loss of the first training batch, the largest training-batch loss of
epoch 1, the largest excess of a batch's loss over the step-0 model's loss on that same batch
(batches differ: the step-0 model's own losses spread over a range, printed too), and the test
ELBO after the budget (nats per datapoint; bits/dim for the discretized logistic).

    python benchmarks/bench_defaults.py --shared ../shared/datasets [--only mnist,frey-face]
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aevb.config import RunConfig, merge
from aevb.config.rules import apply_preset
from aevb.errors import TrainingDiverged
from aevb.presets import MEASURED_WITH
from aevb.training import Callback, Trainer

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import _cpu_name  # noqa: E402
from aevb import metrics as M


def cases(shared: Path, scratch: Path):
    """(name, data settings, preset or None, epochs, extra model settings shared by all runs)."""
    celeba = {"dataset": "celeba", "data_dir": str(shared / "celeba")}
    return [
        ("digits", {"dataset": "digits"}, "digits", 100, {}),
        ("mnist", {"dataset": "mnist", "data_dir": str(shared / "mnist")}, "pytorch-example", 10, {}),
        ("frey-face", {"dataset": "frey-face", "data_dir": str(shared / "frey_face")}, "aevb-frey", 100, {}),
        ("celeba-218x178", celeba, "celeba-mlp", 1, {}),
        ("celeba-64x64", {**celeba, "image_size": [64, 64], "crop": [148, 148]}, None, 3, {}),
        ("celeba-32x32-conv", {**celeba, "image_size": [32, 32], "crop": [148, 148]}, "conv-rgb32", 3,
         {"encoder_network": "conv", "decoder_network": "conv", "likelihood": "discretized-logistic"}),
        ("array-real", {"dataset": f"array:{make_array(scratch)}"}, None, 20, {}),
    ]


def make_array(folder: Path) -> Path:
    """Real values, uncentred and on a large scale: 5,000 points x = 1000 + 100 (A z + noise)
    with z of 5 dimensions in 64 dimensions, split 4,500 / 500 (train / test)."""
    path = folder / "real.npz"
    if not path.exists():
        g = np.random.default_rng(0)
        z = g.standard_normal((5000, 5))
        x = 1000 + 100 * (z @ g.standard_normal((5, 64)) + 0.3 * g.standard_normal((5000, 64)))
        np.savez(path, train=x[:4500].astype(np.float32), test=x[4500:].astype(np.float32))
    return path


def config(data: dict, preset, epochs: int, model: dict, kind: str) -> RunConfig:
    base = {"data": data, "model": dict(model), "train": {"epochs": epochs, "progress": False,
                                                          "tensorboard": False, "images_every": 0}}
    if kind == "before":
        for section, values in MEASURED_WITH.items():
            base.setdefault(section, {}).update({k: v for k, v in values.items() if k not in base.get(section, {})})
    cfg = merge(RunConfig(), base)
    if kind == "preset":
        cfg = merge(apply_preset(RunConfig(), preset), {"data": data, "model": {k: v for k, v in model.items()
                                                                              if k == "likelihood"},
                                                        "train": base["train"]})
    return cfg


def run(cfg: RunConfig, out: Path) -> dict:
    trainer = Trainer.new(cfg, out)
    split = trainer.splits["train"]
    n, bs = len(split), trainer.cfg.train.batch_size
    perm = torch.randperm(n, generator=copy.deepcopy(trainer.shuffle))
    start = copy.deepcopy(trainer.model).eval()
    g = torch.random.fork_rng()
    with g, torch.no_grad():
        torch.manual_seed(12345)
        step0 = [float(-start.elbo(split.take(perm[i:i + bs], trainer.device)).bound.mean())
                 for i in range(0, n, bs)]
    losses = {}

    class Keep(Callback):
        def on_epoch_end(self, t, record):
            if t.epoch == 1:
                losses["epoch1"] = list(t.batch_losses)

    trainer.callbacks.append(Keep())
    t0 = time.perf_counter()
    try:
        history = trainer.fit()
    except TrainingDiverged as e:
        return {"diverged": str(e).split(";")[0], "epoch1_losses_head": losses.get("epoch1", [])[:5]}
    seconds = time.perf_counter() - t0
    ep1 = np.array(losses["epoch1"])
    ok = np.isfinite(ep1)
    last = history[-1]
    dim = trainer.data.dim
    out = {"loss_step0": ep1[0], "max_loss_epoch1": float(ep1[ok].max()) if ok.any() else math.inf,
           "max_excess_over_step0_model": float((ep1[ok] - np.array(step0)[ok]).max()) if ok.any() else math.inf,
           "step0_model_range": [min(step0), max(step0)], M.SKIPPED_STEPS: int((~ok).sum()),
           "test_elbo": last[M.TEST_BOUND], "epochs": trainer.epoch, "seconds": round(seconds, 1),
           "sizes": {"hidden": trainer.cfg.model.encoder_hidden, "latents": trainer.cfg.model.latent_dim,
                     "batch": trainer.cfg.train.batch_size, "channels": trainer.cfg.model.channels
                     if "conv" in (trainer.cfg.model.encoder_network,) else None}}
    if trainer.cfg.model.likelihood == "discretized-logistic":
        out["test_bits_per_dim"] = -last[M.TEST_BOUND] / (dim * math.log(2))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", default="../shared/datasets", help="the folder holding mnist/, frey_face/, celeba/")
    p.add_argument("--only", default=None, help="comma-separated case names")
    p.add_argument("--kinds", default="defaults,before,preset", help="which of the three runs, comma-separated")
    p.add_argument("--out", default=None, help="write the JSON results here too")
    args = p.parse_args(argv)
    results = {"machine": _cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(), "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, data, preset, epochs, model in cases(Path(args.shared), tmp):
            if args.only and name not in args.only.split(","):
                continue
            row = {}
            for kind in args.kinds.split(","):
                if kind == "preset" and preset is None:
                    continue
                cfg = config(data, preset, epochs, model, kind)
                row[kind] = run(cfg, tmp / f"{name}-{kind}")
                print(json.dumps({name: {kind: row[kind]}}), flush=True)
            results["cases"][name] = row
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
