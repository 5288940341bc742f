"""A run's VAE as one ``.safetensors`` file (``aevb export --format safetensors``), with the
configuration as metadata, and back: the file format of aevb.pretrained, the same as
``model.save_pretrained`` writes. No pickle, no code runs while loading.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import torch

from ..config import RunConfig
from ..model import VAE
from ..pretrained import safetensors_metadata, write_safetensors  # noqa: F401 (safetensors_metadata: the export API)


def save_safetensors(model, config: RunConfig, image_shape: Sequence[int], path: Union[str, Path]) -> Path:
    """Write ``model``'s weights and ``config`` to ``path`` atomically (aevb.pretrained's format)."""
    return write_safetensors(model.state_dict(), config, model.data_dim, image_shape, path,
                             model.data_shape or (model.data_dim,), model.config is None)


def load_safetensors(path: Union[str, Path], device: Union[str, torch.device] = "cpu"):
    """The VAE stored in an aevb safetensors file, in eval mode on ``device``
    (``VAE.from_pretrained``)."""
    return VAE.from_pretrained(path, device=device)
