"""A model's weights as one ``.safetensors`` file with its description as metadata, and back: the
file of ``model.save_pretrained(DIR)`` (``DIR/model.safetensors``, with ``DIR/config.json``) and of
``aevb export --format safetensors``.

String metadata:

    format        "aevb-vae"
    version       "1"
    config        the resolved run configuration (JSON, as a run's config.json); for a model of
                  the user's own encoder and decoder, only its model section says so
    data_dim      D, values per datapoint
    image_shape   [C, H, W] (JSON)
    data_shape    the shape of one datapoint as the model's encoder reads it (JSON)
    custom        "true" for a model of the user's own encoder and decoder modules
    aevb_version  the aevb that wrote it

Reading runs no code (no pickle): the tensors come back as a dict.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Sequence, Tuple, Union

import torch

from .config import RunConfig
from .errors import CheckpointError
from .io import atomic_path
from .version import __version__

FORMAT = "aevb-vae"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def write_safetensors(tensors: Dict[str, torch.Tensor], config: RunConfig, data_dim: int,
                      image_shape: Sequence[int], path: Union[str, Path], data_shape: Sequence[int] = (),
                      custom: bool = False) -> Path:
    """Write ``tensors`` (a state dict) and the description to ``path``, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"format": FORMAT, "version": "1", "config": json.dumps(config.to_dict()),
            "data_dim": str(int(data_dim)), "image_shape": json.dumps([int(s) for s in image_shape]),
            "data_shape": json.dumps([int(s) for s in data_shape]), "custom": "true" if custom else "false",
            "aevb_version": __version__}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def safetensors_metadata(path: Union[str, Path]) -> dict:
    """The metadata of an aevb safetensors file, with ``config`` as a RunConfig, ``data_dim`` an
    int, ``image_shape`` and ``data_shape`` tuples and ``custom`` a bool; CheckpointError when
    the file is not one."""
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
        raise CheckpointError(f"{path} is a safetensors file but not one written by aevb (`aevb export` or save_pretrained) "
                              f"(metadata format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        meta["config"] = RunConfig.from_dict(json.loads(meta["config"]))
        meta["data_dim"] = int(meta["data_dim"])
        meta["image_shape"] = tuple(int(s) for s in json.loads(meta["image_shape"]))
        meta["data_shape"] = tuple(int(s) for s in json.loads(meta.get("data_shape", "[]")))
        meta["custom"] = meta.get("custom") == "true"
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: its aevb metadata is damaged ({e})") from None
    return meta


def read_safetensors(path: Union[str, Path]) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """(metadata as :func:`safetensors_metadata` gives it, the tensors on the CPU)."""
    from safetensors.torch import load_file

    meta = safetensors_metadata(path)
    try:
        return meta, load_file(str(path), device="cpu")
    except Exception as e:
        raise CheckpointError(f"{path}: its tensors could not be read ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
