"""A VAE's weights as one ``.safetensors`` file, with the configuration as metadata, and back.

The file holds the model's ``state_dict`` (encoder.*, decoder.*) and string metadata:

    format        "aevb-vae"
    version       "1"
    config        the run's resolved configuration (JSON, as config.json)
    data_dim      D, values per datapoint
    image_shape   [C, H, W] (JSON)
    aevb_version  the aevb that wrote it

:func:`load_safetensors` rebuilds the VAE from the configuration and loads the weights: no
pickle, no code runs while loading.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence, Union

import torch

from ..config import RunConfig
from ..io import CheckpointError, atomic_path
from ..model import VAE
from ..version import __version__

FORMAT = "aevb-vae"


def save_safetensors(model, config: RunConfig, image_shape: Sequence[int], path: Union[str, Path]) -> Path:
    """Write ``model``'s weights and ``config`` to ``path`` atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "version": "1", "config": json.dumps(config.to_dict()),
            "data_dim": str(int(model.data_dim)), "image_shape": json.dumps([int(s) for s in image_shape]),
            "aevb_version": __version__}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def safetensors_metadata(path: Union[str, Path]) -> dict:
    """The metadata of an aevb safetensors file, with ``config`` as a RunConfig, ``data_dim`` an
    int and ``image_shape`` a tuple; CheckpointError when the file is not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:
        raise CheckpointError(f"{path} could not be read as a safetensors file ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''}); it is truncated or not a "
                              "safetensors file") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not one written by `aevb export` "
                              f"(metadata format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        meta["config"] = RunConfig.from_dict(json.loads(meta["config"]))
        meta["data_dim"] = int(meta["data_dim"])
        meta["image_shape"] = tuple(int(s) for s in json.loads(meta["image_shape"]))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: its aevb metadata is damaged ({e})") from None
    return meta


def load_safetensors(path: Union[str, Path], device: Union[str, torch.device] = "cpu"):
    """The VAE stored in an aevb safetensors file, in eval mode on ``device``."""
    from safetensors.torch import load_file

    meta = safetensors_metadata(path)
    model = VAE.from_config(meta["config"].model, meta["data_dim"], meta["image_shape"])
    try:
        model.load_state_dict(load_file(str(path), device="cpu"))
    except RuntimeError as e:
        raise CheckpointError(f"{path}: the weights do not fit the model its configuration describes "
                              f"({str(e).splitlines()[0][:200]})") from None
    return model.to(device).eval()
