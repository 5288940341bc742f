"""A model's saved forms, and the one way each is read back into a model: the folder of
``model.save_pretrained(DIR)`` (``DIR/model.safetensors``, with ``DIR/config.json``), the file of
``aevb export --format safetensors``, a run's checkpoint, and checkpoints of the layout before
models were stacks of latent cells. The functions take the model class (``cls``: aevb.model.VAE,
which calls them), so that this module sits below the model.

The safetensors file holds the weights and a description as metadata.

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
from typing import Dict, Optional, Sequence, Tuple, Union

import torch

from torch import nn

from .checkpoints import RUN_ID
from .config import RunConfig
from .errors import CheckpointError, ConfigError
from .io import atomic_path, atomic_write_text, load_checkpoint
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


# ------------------------------------------------------------------ a model's folder
def save(model, directory: Union[str, Path]) -> Path:
    """``model.save_pretrained(directory)``: DIRECTORY/model.safetensors and DIRECTORY/config.json."""
    directory = Path(directory)
    if (directory / "run.json").exists():
        raise ConfigError(f"{directory} is a run folder; save the model into a folder of its own")
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} exists and is not a folder; choose a folder to save the model in")
    if model.data_dim is None:
        raise ConfigError("the model does not know the shape of its data yet: train it (aevb.fit) or build it "
                          "with data_shape=... before saving it")
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.run_config()
    image_shape = model.config["image_shape"] if model.config else (1, 1, model.data_dim)
    custom = model.config is None
    data_shape = model.data_shape or (model.data_dim,)
    write_safetensors(model.state_dict(), cfg, model.data_dim, image_shape, directory / WEIGHTS_NAME, data_shape,
                      custom)
    about = {"format": FORMAT, "data_dim": model.data_dim, "image_shape": list(image_shape),
             "data_shape": list(data_shape), "custom": custom, **cfg.to_dict()}
    atomic_write_text(directory / CONFIG_NAME, json.dumps(about, indent=2) + "\n")
    return directory


def load(cls, path: Union[str, Path], checkpoint: str = "last", device="cpu", encoder: Optional[nn.Module] = None,
         decoder: Optional[nn.Module] = None):
    """``VAE.from_pretrained``: a folder of save_pretrained, an exported .safetensors file or a
    run folder (its ``checkpoint``), in eval mode on ``device``."""
    path = Path(path)
    if path.suffix == ".onnx":
        raise ConfigError(f"{path} is an ONNX file, for ONNX runtimes; load the run folder or a .safetensors "
                          "file into PyTorch instead")
    if path.is_dir() and (path / WEIGHTS_NAME).is_file():
        path = path / WEIGHTS_NAME
    if path.is_dir():
        if not (path / "checkpoints").is_dir() or not (path / CONFIG_NAME).is_file():
            raise ConfigError(f"{path} holds no model: neither {WEIGHTS_NAME} (save_pretrained) nor a run's "
                              "config.json and checkpoints/")
        return from_run(cls, path, checkpoint, encoder, decoder).to(device).eval()
    if not path.exists():
        raise ConfigError(f"{path} does not exist; give a folder written by save_pretrained, a run folder "
                          "or a .safetensors file written by aevb export")
    meta, tensors = read_safetensors(path)
    model = build(cls, meta["config"], meta["data_dim"], meta["image_shape"], meta["data_shape"], encoder, decoder,
                  path)
    load_weights(model, tensors, path)
    return model.to(device).eval()


def from_run(cls, run: Path, checkpoint: str, encoder, decoder):
    """The model of a run folder's ``last`` or ``best`` checkpoint."""
    names = {"last": "last.pt", "best": "best.pt"}
    if checkpoint not in names:
        raise ConfigError(f"checkpoint={checkpoint!r}: a run's checkpoints are 'last' and 'best'")
    file = run / "checkpoints" / names[checkpoint]
    try:
        cfg = RunConfig.from_dict(json.loads((run / CONFIG_NAME).read_text()))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{run / CONFIG_NAME} could not be read ({e}); the run folder is damaged") from None
    return from_checkpoint(cls, cfg, load_checkpoint(file, "cpu", model_only=True, run_id=_run_id(run)), file,
                           encoder, decoder)


def _run_id(run: Path) -> Optional[str]:
    """The id in a run folder's run.json (None: a run created before run ids, or no readable marker);
    its checkpoints must carry it."""
    try:
        info = json.loads((run / "run.json").read_text())
    except (OSError, ValueError):
        return None
    value = info.get(RUN_ID) if isinstance(info, dict) else None
    return str(value) if value else None


def from_checkpoint(cls, cfg: RunConfig, state: dict, source, encoder: Optional[nn.Module] = None,
                    decoder: Optional[nn.Module] = None):
    """The model of a run's checkpoint ``state`` and config ``cfg``. aevb's own networks are built
    without memory (on the meta device) and take the checkpoint's tensors as their own, so
    memory-mapped weights stay pages of the file; a model of the user's own modules needs new
    ``encoder`` and ``decoder`` instances."""
    data_dim = int(state["data_dim"])
    image_shape = state.get("image_shape") or (1, 1, data_dim)
    custom = cfg.model.encoder_network == "custom"
    if custom:
        from .data import parse_spec  # the shape of a datapoint as the user gave it

        spec = parse_spec(cfg.data.dataset)
        data_shape = tuple(spec.record.shape[1:]) if spec.record is not None else tuple(image_shape)
        model = build(cls, cfg, data_dim, image_shape, data_shape, encoder, decoder, source)
    else:
        with torch.device("meta"):
            model = build(cls, cfg, data_dim, image_shape, (), None, None, source)
    try:
        model.load_state_dict(state["model"], assign=True)
    except (RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"{source} does not fit the run's config.json ({str(e).splitlines()[0][:200]}); "
                              "the run folder is damaged") from None
    return model


def build(cls, cfg: RunConfig, data_dim: int, image_shape, data_shape, encoder, decoder, source):
    """The model a saved description names, without its weights: ``cls.from_config``, or for a
    model of the user's own modules those modules (refused in one line without them)."""
    m = cfg.model
    if m.encoder_network != "custom":
        return cls.from_config(m, data_dim, image_shape, objective=cfg.objective)
    if encoder is None or decoder is None:
        raise ConfigError(f"{source} holds a model of your own encoder and decoder modules: pass new instances "
                          "of them, e.g. VAE.from_pretrained(PATH, encoder=MyEncoder(), decoder=MyDecoder())")
    from .distributions import likelihood_of

    return cls(encoder, decoder, likelihood_of(m), m.latent_dim, data_shape=tuple(data_shape) or (data_dim,),
               center_inputs=m.center_inputs, input_scale=m.input_scale or "std", objective=cfg.objective)


def load_weights(model: nn.Module, tensors: dict, source) -> None:
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise CheckpointError(f"{source}: the weights do not fit the model it describes "
                              f"({str(e).splitlines()[0][:200]})") from None


# ------------------------------------------------------------------ the layout before latent cells
def upgrade_state_dict(state: dict, n_layers: int, prefix: str = "") -> None:
    """Rename, in place, the keys of a state dict written before models were stacks of cells
    (``prior.*``, ``flow.*``, ``stack.up.i.*``, ``stack.down.i.*``) to today's."""
    moves = {"prior.": f"latent.cells.{n_layers - 1}.prior.", "flow.": "latent.cells.0.flow."}
    for key in [k for k in state if k.startswith(prefix)]:
        rest = key[len(prefix):]
        new = None
        for old, now in moves.items():
            if rest.startswith(old):
                new = now + rest[len(old):]
        if rest.startswith("stack.up.") or rest.startswith("stack.down."):
            _, kind, i, tail = rest.split(".", 3)
            new = f"latent.cells.{int(i) + 1}.q_net.{tail}" if kind == "up" else f"latent.cells.{i}.p_net.{tail}"
        if new is not None:
            state[prefix + new] = state.pop(key)


def upgrade_checkpoint(state: dict, model: nn.Module, optimizer) -> dict:
    """A training checkpoint ``state`` ({"model": ..., "optimizer": ...}) for ``model`` and its
    ``optimizer``, with a model state dict of the layout before latent cells renamed (see
    :func:`upgrade_state_dict`) and the optimizer's per-parameter state, which torch keeps by
    position, moved to today's order of the parameters. A checkpoint of today's layout is
    returned as it is."""
    saved = list(state["model"])
    if not any(k.startswith(("prior.", "flow.", "stack.")) for k in saved):
        return state
    renamed = {k: k for k in saved}
    probe = {k: k for k in saved}
    upgrade_state_dict(probe, len(model.cells))
    for new, old in probe.items():
        renamed[old] = new
    position = {renamed[k]: i for i, k in enumerate(saved)}
    name_of = {id(p): n for n, p in model.named_parameters()}
    mapping, start = {}, 0
    for group in optimizer.param_groups:  # the same groups, each once in the saved order
        names = [name_of[id(p)] for p in group["params"]]
        for old_i, name in enumerate(sorted(names, key=position.__getitem__)):
            mapping[start + old_i] = start + names.index(name)
        start += len(names)
    opt = state["optimizer"]
    moved = {"state": {mapping[int(i)]: v for i, v in opt["state"].items()},
             "param_groups": [dict(g, params=sorted(mapping[i] for i in g["params"])) for g in opt["param_groups"]]}
    model_state = dict(state["model"])
    upgrade_state_dict(model_state, len(model.cells))
    return dict(state, model=model_state, optimizer=moved)
