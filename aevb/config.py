"""Typed run configuration, saved (resolved) as ``config.json`` in every run folder.

Precedence when a run is configured: defaults < preset < config file (YAML or JSON) < command
line. ``None`` in a few fields means "choose from the data set" and is filled by ``resolve``.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Union


class ConfigError(ValueError):
    """A configuration value is missing, unknown or contradictory."""


@dataclass
class DataConfig:
    dataset: str = "digits"  # digits, mnist, fashion-mnist, binarized-mnist, frey-face, omniglot, celeba, folder:PATH, array:PATH
    data_dir: Optional[str] = None  # the folder holding this data set's files (default: $AEVB_DATA/<name>)
    download: bool = True
    validation: float = 0  # training points held out: a count (>= 1) or a fraction (< 1)
    binarize: Optional[str] = None  # None, "static" or "dynamic"
    image_size: Optional[List[int]] = None  # [H, W] for folder:PATH and celeba
    color: Optional[str] = None  # "grey", "rgb" or None (auto) for folder:PATH
    seed: int = 0  # seed of held-out splits and static binarization
    crop: Optional[List[int]] = None  # [H, W] centre crop before resizing (celeba, folder:)
    memory_budget: Optional[str] = None  # data larger than this (e.g. "8GB") are streamed from disk; None: 1/4 of RAM
    cache_dir: Optional[str] = None  # where prepared (decoded) data are cached; None: $AEVB_CACHE or ~/.cache/aevb/prepared
    skip_bad_images: bool = False  # leave out unreadable image files (saying how many) instead of refusing


@dataclass
class ModelConfig:
    latent_dim: int = 20
    encoder_hidden: List[int] = field(default_factory=lambda: [400])
    decoder_hidden: Optional[List[int]] = None  # None: the encoder's sizes reversed
    activation: str = "relu"
    likelihood: Optional[str] = None  # bernoulli, gaussian, gaussian-fixed; None: from the data
    sigma: float = 1.0  # gaussian-fixed standard deviation
    mean_activation: str = "identity"  # identity or sigmoid (gaussian likelihoods)
    min_log_var: Optional[float] = None  # soft floor on the gaussian decoder's log-variance
    init_std: Optional[float] = None  # N(0, init_std^2) initialisation (AEVB paper: 0.01); None: PyTorch's


@dataclass
class ObjectiveConfig:
    objective: str = "elbo"  # elbo (SGVB) or iwae
    kl: str = "analytic"  # analytic (closed form, SGVB estimator B) or mc (estimator A)
    samples: int = 1  # L, samples of z per datapoint for the ELBO
    k: int = 50  # importance samples for the iwae objective
    beta: float = 1.0  # weight of the KL term in the training loss (the logged bound is unweighted)
    warmup_epochs: float = 0  # linear warm-up of beta from 0 over this many epochs


@dataclass
class OptimConfig:
    optimizer: str = "adam"  # adam, adagrad, sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0  # sgd only
    schedule: str = "constant"  # constant, step, exponential, cosine
    step_epochs: int = 10  # step schedule: multiply by gamma every step_epochs
    gamma: float = 0.5  # step / exponential decay factor (per epoch for exponential)
    grad_clip: Optional[float] = None  # clip the global gradient norm
    warmup_steps: int = 0  # linear learning-rate warm-up from 0 over the first steps


@dataclass
class TrainConfig:
    epochs: Optional[int] = None  # None: 100 on digits, 10 otherwise
    batch_size: int = 128
    eval_batch_size: int = 1000
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:1, mps
    threads: Optional[int] = None  # torch intra-op threads (None: PyTorch's default)
    images_every: int = 1  # write reconstruction / sample grids every n epochs (0: never)
    progress: bool = True  # show progress bars
    tensorboard: bool = True


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        return merge(cls(), d)

    def save(self, path: Union[str, Path]) -> None:
        from .io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")


SECTIONS = {"data": DataConfig, "model": ModelConfig, "objective": ObjectiveConfig,
            "optim": OptimConfig, "train": TrainConfig}


def field_names(section: str) -> List[str]:
    return [f.name for f in dataclasses.fields(SECTIONS[section])]


def merge(cfg: RunConfig, updates: dict, source: str = "config") -> RunConfig:
    """Return a copy of ``cfg`` with nested ``updates`` applied; unknown keys raise ConfigError."""
    out = copy.deepcopy(cfg)
    for key, value in (updates or {}).items():
        if key == "preset":
            out.preset = value
            continue
        if key not in SECTIONS:
            raise ConfigError(f"{source}: unknown section {key!r}; sections are {', '.join(SECTIONS)} and preset")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: section {key!r} must be a mapping, got {type(value).__name__}")
        section = getattr(out, key)
        names = field_names(key)
        for name, v in value.items():
            name = name.replace("-", "_")
            if name not in names:
                raise ConfigError(f"{source}: unknown option {key}.{name}; options are {', '.join(names)}")
            setattr(section, name, v)
    return out


def load_config_file(path: Union[str, Path]) -> dict:
    """Read a YAML (.yaml/.yml) or JSON config file into a nested dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            d = yaml.safe_load(text) or {}
        else:
            d = json.loads(text)
    except Exception as e:  # yaml.YAMLError, json.JSONDecodeError
        raise ConfigError(f"config file {path} could not be parsed: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(d).__name__}")
    return d


def diff(a: RunConfig, b: RunConfig) -> List[str]:
    """Dotted names of the options whose values differ between two configs."""
    da, db = a.to_dict(), b.to_dict()
    out = []
    for sec in SECTIONS:
        for k in da[sec]:
            if da[sec][k] != db[sec][k]:
                out.append(f"{sec}.{k}")
    return out


def resolve(cfg: RunConfig, data_kind: str, dataset_name: str) -> RunConfig:
    """Fill the data-dependent defaults and check the combination; returns a new config."""
    out = copy.deepcopy(cfg)
    if out.train.epochs is None:
        out.train.epochs = 100 if dataset_name == "digits" else 10
    if out.model.likelihood is None:
        binary_like = data_kind in ("binary", "unit") or out.data.binarize is not None
        out.model.likelihood = "bernoulli" if binary_like else "gaussian"
    validate(out)
    return out


def validate(cfg: RunConfig) -> None:
    """Raise ConfigError naming the option and its allowed values when something is off."""
    def choice(name, value, allowed):
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")

    def positive(name, value, allow_zero=False):
        if value is None or (value < 0 if allow_zero else value <= 0):
            raise ConfigError(f"{name} must be {'non-negative' if allow_zero else 'positive'}; got {value!r}")

    choice("objective.objective", cfg.objective.objective, ("elbo", "iwae"))
    choice("objective.kl", cfg.objective.kl, ("analytic", "mc"))
    positive("objective.samples", cfg.objective.samples)
    positive("objective.k", cfg.objective.k)
    positive("objective.beta", cfg.objective.beta, allow_zero=True)
    positive("objective.warmup_epochs", cfg.objective.warmup_epochs, allow_zero=True)
    if cfg.objective.objective == "iwae" and (cfg.objective.beta != 1.0 or cfg.objective.warmup_epochs):
        raise ConfigError("a KL weight (beta / warm-up) applies to the elbo objective only, not iwae")
    choice("optim.optimizer", cfg.optim.optimizer, ("adam", "adagrad", "sgd"))
    choice("optim.schedule", cfg.optim.schedule, ("constant", "step", "exponential", "cosine"))
    positive("optim.lr", cfg.optim.lr)
    positive("optim.weight_decay", cfg.optim.weight_decay, allow_zero=True)
    positive("optim.warmup_steps", cfg.optim.warmup_steps, allow_zero=True)
    if cfg.data.crop is not None and (len(cfg.data.crop) != 2 or any(int(c) <= 0 for c in cfg.data.crop)):
        raise ConfigError(f"data.crop must be two positive sizes [H, W]; got {cfg.data.crop!r}")
    if cfg.data.memory_budget not in (None, "", "auto"):
        from .data.cache import parse_size

        try:
            parse_size(cfg.data.memory_budget)
        except ValueError as e:
            raise ConfigError(f"data.memory_budget: {e}") from None
    choice("data.binarize", cfg.data.binarize, (None, "static", "dynamic"))
    choice("model.likelihood", cfg.model.likelihood, (None, "bernoulli", "gaussian", "gaussian-fixed"))
    choice("model.mean_activation", cfg.model.mean_activation, ("identity", "sigmoid"))
    from .networks import ACTIVATIONS

    choice("model.activation", cfg.model.activation, tuple(ACTIVATIONS))
    positive("model.latent_dim", cfg.model.latent_dim)
    positive("model.sigma", cfg.model.sigma)
    if any(int(h) <= 0 for h in cfg.model.encoder_hidden + (cfg.model.decoder_hidden or [])):
        raise ConfigError("hidden layer sizes must be positive integers")
    if cfg.train.epochs is not None:
        positive("train.epochs", cfg.train.epochs)
    positive("train.batch_size", cfg.train.batch_size)
    positive("train.eval_batch_size", cfg.train.eval_batch_size)
    positive("train.images_every", cfg.train.images_every, allow_zero=True)


def to_jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x):
        return asdict(x)
    return x
