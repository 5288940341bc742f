"""The run folder: what a training run writes and how to open it again.

Layout::

    RUN/
      run.json             marker: format, version, status (running|finished|failed|interrupted)
      config.json          the resolved RunConfig
      metrics.csv          one row per epoch (bounds per datapoint in nats, KL, reconstruction, time)
      metrics.jsonl        the same rows as JSON lines
      checkpoints/last.pt  model, optimizer, schedule, epoch, step, RNG states (atomic, every epoch)
      images/              reconstructions_epochNNN.png, samples_epochNNN.png, ...
      tensorboard/         TensorBoard event files
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional, Union

import torch

from .config import RunConfig
from .io import atomic_write_text, load_checkpoint

RUN_MARKER = "run.json"
CHECKPOINT = Path("checkpoints") / "last.pt"


class RunError(ValueError):
    """A folder is not a usable aevb run."""


def is_run(path: Union[str, Path]) -> bool:
    return (Path(path) / RUN_MARKER).is_file()


def write_marker(path: Path, status: str, **extra) -> None:
    info = {"format": "aevb-run", "version": 1, "status": status,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    old = path / RUN_MARKER
    if old.is_file():
        try:
            prev = json.loads(old.read_text())
            info = {**prev, **info}
        except (OSError, json.JSONDecodeError):
            pass
    info.update(extra)
    atomic_write_text(old, json.dumps(info, indent=2) + "\n")


class Run:
    """An existing run folder. ``Run(path)`` checks that it is one."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunError(f"{self.path} does not exist; give the folder that `aevb train` wrote")
        if not is_run(self.path):
            raise RunError(f"{self.path} is not an aevb run folder (no {RUN_MARKER}); "
                           "give the folder that `aevb train --out` wrote")
        cfg_path = self.path / "config.json"
        try:
            self.config = RunConfig.from_dict(json.loads(cfg_path.read_text()))
        except FileNotFoundError:
            raise RunError(f"{self.path} has no config.json; the run folder is damaged") from None
        except (json.JSONDecodeError, ValueError) as e:
            raise RunError(f"{cfg_path} could not be read: {e}") from None

    @property
    def info(self) -> dict:
        return json.loads((self.path / RUN_MARKER).read_text())

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def images_dir(self) -> Path:
        return self.path / "images"

    def checkpoint(self, map_location="cpu") -> dict:
        if not self.checkpoint_path.is_file():
            raise RunError(f"{self.path} has no checkpoint yet ({CHECKPOINT}); train at least one epoch")
        return load_checkpoint(self.checkpoint_path, map_location)

    def load_model(self, device="cpu"):
        """The VAE with the weights of the last checkpoint, in eval mode."""
        from .model import VAE

        state = self.checkpoint(map_location=device)
        model = VAE.from_config(self.config.model, int(state["data_dim"]), state.get("image_shape"))
        model.load_state_dict(state["model"])
        return model.to(device).eval()

    def load_data(self, download: Optional[bool] = None):
        """The data set as configured for this run (same splits, same seed)."""
        from .data import load_dataset

        d = self.config.data
        return load_dataset(d.dataset, d.data_dir, download=d.download if download is None else download,
                            validation=d.validation, binarize=d.binarize, image_size=d.image_size,
                            color=d.color, seed=d.seed)

    def metrics(self) -> List[dict]:
        p = self.path / "metrics.jsonl"
        if not p.is_file():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


def load_run(path: Union[str, Path]) -> Run:
    return Run(path)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device {name!r} was asked for but CUDA is not available; use --device cpu")
    return dev
