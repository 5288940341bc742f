"""Shared fixtures: a tiny, fast config on the embedded digits data, and the shared data sets."""
import os
import tempfile
from pathlib import Path

import pytest
import torch

from aevb.config import RunConfig, merge

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="session", autouse=True)
def private_data_cache():
    """Decoded images (folder:, celeba) are cached in a temporary folder, never in the user's
    ~/.cache; subprocesses inherit it through the environment."""
    before = os.environ.get("AEVB_CACHE")
    with tempfile.TemporaryDirectory(prefix="aevb-test-cache-") as d:
        os.environ["AEVB_CACHE"] = d
        yield d
    if before is None:
        os.environ.pop("AEVB_CACHE", None)
    else:
        os.environ["AEVB_CACHE"] = before


@pytest.fixture(autouse=True)
def bf16_speed_not_measured(monkeypatch):
    """The tests' bfloat16 passes neither time this machine's products nor warn of them (a
    warning on one CPU and none on another would change what commands print);
    tests/test_bf16_speed.py checks the warning."""
    from aevb import devices

    monkeypatch.setattr(devices, "_bf16_looked_at", {"cpu", "cuda"})


def tiny_config(**sections) -> RunConfig:
    """Digits, a 32-unit MLP, 3 latents, no progress output: trains an epoch in well under 1 s."""
    base = {
        "data": {"dataset": "digits"},
        "model": {"latent_dim": 3, "encoder_hidden": [32], "likelihood": "bernoulli"},
        "train": {"epochs": 2, "batch_size": 64, "progress": False, "tensorboard": False, "images_every": 1,
                  "report": False},
    }
    for sec, values in sections.items():
        base.setdefault(sec, {}).update(values)
    return merge(RunConfig(), base)


def train_tiny_run(path, **sections):
    """A finished one-epoch tiny run (tiny_config) at ``path``, trained on one thread."""
    from aevb.training import Trainer

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer.new(tiny_config(train={"epochs": 1}, **sections), path).fit()
    finally:
        torch.set_num_threads(before)
    return path


@pytest.fixture
def tiny_cfg():
    return tiny_config()


@pytest.fixture
def shared_datasets():
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared data sets not present at {SHARED_DATASETS}")
    return SHARED_DATASETS


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread avoids OpenMP spinning on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
