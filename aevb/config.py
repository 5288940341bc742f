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
    dataset: str = "digits"  # digits, mnist, fashion-mnist, binarized-mnist, frey-face, omniglot, folder:PATH, array:PATH
    data_dir: Optional[str] = None  # the folder holding this data set's files (default: $AEVB_DATA/<name>)
    download: bool = True
    validation: float = 0  # training points held out: a count (>= 1) or a fraction (< 1)
    binarize: Optional[str] = None  # None, "static" or "dynamic"
    image_size: Optional[List[int]] = None  # [H, W] for folder:PATH
    color: Optional[str] = None  # "grey", "rgb" or None (auto) for folder:PATH
    crop: Optional[List[int]] = None  # [H, W] centre crop before resizing (celeba; read by the data loaders of issue 8)
    seed: int = 0  # seed of held-out splits and static binarization


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
    encoder_network: str = "mlp"  # mlp or conv (strided convolutions over the data's image shape)
    decoder_network: str = "mlp"  # mlp or conv (transposed convolutions back to the data's H x W)
    channels: List[int] = field(default_factory=lambda: [32, 64, 128, 256])  # conv: channels per stride-2 stage
    kernel_size: int = 4  # conv: kernel height = width
    conv_norm: str = "none"  # conv: none or group (GroupNorm: per datapoint, never across a batch)
    components: int = 1  # discretized-logistic: mixture components per value


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


@dataclass
class TrainConfig:
    epochs: Optional[int] = None  # None: 100 on digits, 10 otherwise
    batch_size: int = 128
    eval_batch_size: int = 1000
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:1, mps
    threads: Optional[int] = None  # torch intra-op threads (None: PyTorch's default)
    precision: str = "fp32"  # fp32, or bf16: networks in bfloat16 autocast for training steps (bounds and evaluation stay fp32)
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
    choice("data.binarize", cfg.data.binarize, (None, "static", "dynamic"))
    choice("model.likelihood", cfg.model.likelihood,
           (None, "bernoulli", "gaussian", "gaussian-fixed", "discretized-logistic"))
    choice("model.mean_activation", cfg.model.mean_activation, ("identity", "sigmoid"))
    from .networks import ACTIVATIONS

    choice("model.activation", cfg.model.activation, tuple(ACTIVATIONS))
    positive("model.latent_dim", cfg.model.latent_dim)
    positive("model.sigma", cfg.model.sigma)
    if any(int(h) <= 0 for h in cfg.model.encoder_hidden + (cfg.model.decoder_hidden or [])):
        raise ConfigError("hidden layer sizes must be positive integers")
    validate_conv(cfg.model)
    if cfg.train.epochs is not None:
        positive("train.epochs", cfg.train.epochs)
    positive("train.batch_size", cfg.train.batch_size)
    positive("train.eval_batch_size", cfg.train.eval_batch_size)
    positive("train.images_every", cfg.train.images_every, allow_zero=True)
    choice("train.precision", cfg.train.precision, ("fp32", "bf16"))


def validate_conv(m: "ModelConfig") -> None:
    """The convolutional options and the mixture size; their fit to the data's image shape is
    checked when the networks are built (aevb.convnets.check_fits)."""
    for name in ("encoder_network", "decoder_network"):
        if getattr(m, name) not in ("mlp", "conv"):
            raise ConfigError(f"model.{name} must be mlp or conv; got {getattr(m, name)!r}")
    if "conv" in (m.encoder_network, m.decoder_network):
        ch = m.channels
        if not isinstance(ch, (list, tuple)) or not ch:
            raise ConfigError(f"model.channels must list at least one channel count per stride-2 stage, "
                              f"e.g. --channels 32 64 128 256; got {ch!r}")
        if any(isinstance(c, bool) or not isinstance(c, int) or c <= 0 for c in ch):
            raise ConfigError(f"model.channels must be positive integers, e.g. --channels 32 64 128 256; got {ch!r}")
        k = m.kernel_size
        if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= 15:
            raise ConfigError(f"model.kernel_size must be an integer from 2 to 15 (e.g. 3 or 4); got {k!r}")
        if m.conv_norm not in ("none", "group"):
            raise ConfigError(f"model.conv_norm must be none or group; got {m.conv_norm!r}")
    c = m.components
    if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= 32:
        raise ConfigError(f"model.components must be an integer from 1 to 32; got {c!r}")
    if c > 1 and m.likelihood not in (None, "discretized-logistic"):
        raise ConfigError(f"model.components = {c} applies to --likelihood discretized-logistic only, "
                          f"not {m.likelihood}")


def to_jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x):
        return asdict(x)
    return x
