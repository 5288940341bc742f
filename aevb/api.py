"""The library's entry points, as a PyTorch user would guess them: ``aevb.fit`` trains a model on
their data into a run folder (the same folder ``aevb train`` writes), ``aevb.load`` opens a run
and ``aevb.resume`` continues one.

>>> import aevb, torch
>>> x = (torch.rand(1000, 28, 28) > 0.5).to(torch.uint8)
>>> run = aevb.fit(aevb.VAE.for_data(x, latent_dim=8), x, epochs=5, out="runs/mine")
>>> model = run.load_model()
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from .config import RunConfig, apply_preset, merge, merge_keywords
from .data import Dataset, as_dataset
from .data.spec import short_name
from .errors import ConfigError
from .model import VAE
from .runs import Run
from .training import Callback, Trainer

def default_out(spec: str) -> str:
    """runs/<data set's short name>-<date>-<time>, the folder a run goes to when none is given."""
    return str(Path("runs") / f"{short_name(spec)}-{time.strftime('%Y%m%d-%H%M%S')}")


def config_of(model_or_config, options: dict, caller: str = "aevb.fit") -> RunConfig:
    """The RunConfig of ``model_or_config`` (None: the defaults; a preset's name; a RunConfig;
    a VAE, whose model and objective sections describe it) with ``options`` named like config
    fields of any section (``epochs``, ``lr``, ``latent_dim``, ...), each checked as the command
    line's options are; ConfigError names the argument."""
    if model_or_config is None:
        cfg = RunConfig()
    elif isinstance(model_or_config, str):
        cfg = apply_preset(RunConfig(), model_or_config)
    elif isinstance(model_or_config, RunConfig):
        cfg = model_or_config
    elif isinstance(model_or_config, VAE):
        cfg = model_or_config.run_config()
    elif isinstance(model_or_config, torch.nn.Module):
        raise ConfigError(f"{caller} trains an aevb VAE; wrap your modules as VAE(encoder, decoder, likelihood, "
                          f"latent_dim), not a bare {type(model_or_config).__name__}")
    else:
        raise ConfigError(f"{caller}: the first argument is a VAE, a RunConfig, a preset's name or None, not "
                          f"{type(model_or_config).__name__}")
    return merge_keywords(cfg, options, caller, built=isinstance(model_or_config, VAE))


def fit(model: Union[VAE, RunConfig, str, None] = None, data="digits", *, valid=None, test=None, labels=None,
        out: Union[str, Path, None] = None, overwrite: bool = False, callbacks: Sequence[Callback] = (),
        **options) -> Run:
    """Train ``model`` on ``data`` into the run folder ``out`` and return the :class:`~aevb.Run`.

    ``model``: an aevb :class:`~aevb.VAE` (your own encoder and decoder, or
    ``VAE.for_data(data, ...)``), a :class:`~aevb.RunConfig`, a preset's name, or None (the
    defaults of ``aevb train``, sized from the data). ``data``: a tensor or NumPy array of
    datapoints ([N, D], [N, H, W] or [N, C, H, W]; uint8 stays uint8 and is not copied), a
    map-style ``torch.utils.data.Dataset`` of tensors or ``(tensor, label)`` pairs, a
    ``DataLoader`` (read once), or a data set name or spec as ``aevb train --dataset`` takes it
    (``"mnist"``, ``"folder:DIR"``); ``valid`` / ``test``: parts given apart (without ``test`` a
    seeded 10 % is held out). ``options``: settings by their config names (``epochs``, ``lr``,
    ``batch_size``, ``seed``, ``report=False``, ``limit_batches``, ``data_dir``, ...).

    The run folder is the one ``aevb train`` writes (config, metrics, checkpoints, figures and
    report); ``out`` defaults to ``runs/<name>-<time>`` and must not hold a run unless
    ``overwrite``. A run of data given in memory records their shape, dtype and checksum, and
    later commands ask for the data again (``--data``)."""
    cfg = config_of(model, options)
    if isinstance(data, str):
        cfg = merge(cfg, {"data": {"dataset": data}}, source="aevb.fit", where=lambda k: "aevb.fit(data=...)")
        dataset: Optional[Dataset] = None
        name = data
        if any(v is not None for v in (valid, test, labels)):
            raise ConfigError("aevb.fit(valid=, test=, labels=) apply to data given in memory; a named data set "
                              "has its own splits")
    else:
        d = cfg.data
        dataset = as_dataset(data, valid=valid, test=test, labels=labels, validation=d.validation,
                             binarize=d.binarize, seed=d.seed, classes=d.classes)
        name = dataset.info.get("spec", dataset.name)
        cfg = merge(cfg, {"data": {"dataset": name}}, source="aevb.fit", where=lambda k: "aevb.fit(data=...)")
    vae = model if isinstance(model, VAE) else None
    if vae is not None and dataset is not None and vae.data_shape is None:
        record = dataset.info.get("memory")  # the shape of a datapoint as the user gave it
        vae.bind_data(tuple(record["shape"][1:]) if record else dataset.image_shape or (dataset.dim,))
    trainer = Trainer.new(cfg, out if out is not None else default_out(name), overwrite=overwrite, data=dataset,
                          callbacks=callbacks, model=vae)
    trainer.fit()
    if vae is not None and not vae.native:
        return Run(trainer.run_dir, encoder=vae.encoder, decoder=vae.decoder)
    return Run(trainer.run_dir)


def load(path: Union[str, Path], encoder: Optional[torch.nn.Module] = None,
         decoder: Optional[torch.nn.Module] = None) -> Run:
    """The run in the folder ``path``: its config, metrics, models (``run.load_model()``) and the
    methods on new data (``encode``, ``score``, ``reconstruct``, ``decode``). A run of your own
    modules needs instances of them (``encoder=``, ``decoder=``)."""
    return Run(path, encoder=encoder, decoder=decoder)
