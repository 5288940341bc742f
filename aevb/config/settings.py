"""The settings of a run: typed sections, the valid values of each (choices and ranges), and
their checking where a value enters (defaults, preset, config file, command line, Python).

Precedence when a run is configured: defaults < preset < config file (YAML or JSON) < command
line. ``None`` in a few fields means "choose from the data set" and is filled by ``resolve``.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from ..convnets import CONV_NORMS
from ..data.imageset import COLOR_CHANNELS
from ..data.registry import BINARIZE_MODES
from ..devices import PRECISIONS
from ..distributions import LIKELIHOODS, MEAN_ACTIVATIONS
from ..flows import FLOWS
from ..bounds import KL_ESTIMATORS, OBJECTIVES
from ..networks import ACTIVATIONS, INPUT_SCALES, NETWORKS
from ..optimizers import OPTIMIZERS, SCHEDULES
from ..presets import PRESETS
from ..priors import PRIORS
from ..stacked import INFERENCE
from .ranges import (SEEDS, THREADS, between, byte_size, choice, device_name, holdout, integers, layer_sizes, shown,
                     too_large, two_sizes)


from ..errors import ConfigError
from ..io import atomic_write_text

@dataclass
class DataConfig:
    dataset: str = "digits"  # digits, mnist, fashion-mnist, binarized-mnist, frey-face, omniglot, celeba, folder:PATH, array:PATH
    data_dir: Optional[str] = None  # the folder holding this data set's files (default: $AEVB_DATA/<name>)
    download: bool = True
    validation: float = 0  # training points held out: a count (>= 1) or a fraction (< 1)
    binarize: Optional[str] = None  # None, "static" or "dynamic"
    image_size: Optional[List[int]] = None  # [H, W] for folder:PATH and celeba
    color: Optional[str] = None  # "grey", "rgb" or None (auto) for folder:PATH
    crop: Optional[List[int]] = None  # [H, W] centre crop before resizing (celeba, folder:)
    seed: int = 0  # seed of held-out splits and static binarization
    memory_budget: Optional[str] = None  # data larger than this (e.g. "8GB") are streamed from disk; None: 1/4 of RAM
    cache_dir: Optional[str] = None  # where prepared (decoded) data are cached; None: $AEVB_CACHE or ~/.cache/aevb/prepared
    skip_bad_images: bool = False  # leave out unreadable image files (saying how many) instead of refusing
    classes: Optional[List[int]] = None  # keep only datapoints with these labels, in every split (e.g. train on some digits)
    perturb: float = 0.0  # background model: each training value replaced with this probability by a random level (Ren et al. 2019)


@dataclass
class ModelConfig:
    latent_dim: Optional[int] = None  # size of z; None: from the data's size (aevb.config.sizing)
    encoder_hidden: Optional[List[int]] = None  # MLP hidden sizes; None: from the data's size
    decoder_hidden: Optional[List[int]] = None  # None: the encoder's sizes reversed
    activation: str = "relu"
    likelihood: Optional[str] = None  # bernoulli, gaussian, gaussian-fixed; None: from the data
    sigma: float = 1.0  # gaussian-fixed standard deviation
    mean_activation: str = "identity"  # identity or sigmoid (gaussian likelihoods)
    min_log_var: Optional[float] = None  # soft floor on the gaussian decoder's log-variance
    init_std: Optional[float] = None  # N(0, init_std^2) initialisation (AEVB paper: 0.01); None: PyTorch's
    encoder_network: str = "mlp"  # mlp or conv (strided convolutions over the data's image shape)
    decoder_network: str = "mlp"  # mlp or conv (transposed convolutions back to the data's H x W)
    channels: Optional[List[int]] = None  # conv: channels per stride-2 stage; None: from the image size
    kernel_size: int = 4  # conv: kernel height = width
    conv_norm: str = "none"  # conv: none or group (GroupNorm: per datapoint, never across a batch)
    components: Optional[int] = None  # discretized-logistic: mixture components per value; None: 3 (else 1)
    center_inputs: bool = True  # the encoder sees x - the training data's mean, scaled (see docs/stability.md)
    input_scale: Optional[str] = None  # the centred inputs' scale: std, shrink or none; None: from the network (aevb.sizing)
    output_bias_from_data: bool = True  # the decoder's last bias starts at the training data's mean
    latent_dims: Optional[List[int]] = None  # stacked stochastic layers, bottom to top (e.g. [100, 50]); None: one layer
    latent_hidden: Optional[List[int]] = None  # deterministic layers between two stochastic ones; None: 2 of twice the upper size
    inference: str = "bottom-up"  # stacked layers: bottom-up (IWAE) or top-down (ladder VAE)
    prior: str = "standard"  # standard (N(0, I)), mog (learned mixture of Gaussians) or vamp (VampPrior)
    prior_components: Optional[int] = None  # mog: mixture components; None: 10
    pseudo_inputs: Optional[int] = None  # vamp: learned pseudo-inputs; None: 500
    flow: str = "none"  # none, planar or iaf: a normalising flow on top of the Gaussian posterior
    flow_steps: Optional[int] = None  # steps of the flow; None: 10 planar, 2 iaf


@dataclass
class ObjectiveConfig:
    objective: str = "elbo"  # elbo (SGVB) or iwae
    kl: Optional[str] = None  # analytic (closed form, SGVB estimator B) or mc (estimator A); None: analytic where it exists
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
    warmup_steps: int = 20  # linear learning-rate warm-up from 0 over the first steps
    fan_in_scale: int = 1024  # a weight with fan-in n > this learns at lr * sqrt(this / n); 0: off
    max_skipped_steps: int = 20  # non-finite steps skipped (not applied) before the run stops; 0: stop at the first


@dataclass
class TrainConfig:
    epochs: Optional[int] = None  # None: 100 on digits, 10 otherwise
    early_stop: Optional[int] = None  # stop when the validation bound has not improved for this many epochs; None: never
    batch_size: Optional[int] = None  # None: from the data's size (128, or 64 for large images)
    eval_batch_size: Optional[int] = None  # rows per test/validation batch; None: sized in bytes (aevb.bounds.eval_rows, at most 1000)
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:1, mps
    threads: Optional[int] = None  # torch intra-op threads (None: one for a small step, else PyTorch's; aevb.threads)
    precision: str = "fp32"  # fp32, or bf16: networks in bfloat16 autocast for training steps (the bounds and the test bound stay fp32)
    images_every: int = 1  # write reconstruction / sample grids every n epochs (0: never)
    progress: bool = True  # show progress bars
    tensorboard: bool = True
    report: bool = True  # figures and report.html at the end of training (and latent snapshots during it)
    limit_batches: Optional[int] = None  # a quick debug run: only the first N batches of each epoch (and N evaluation batches)


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
        """A saved configuration (a run's ``config.json``): a setting it lacks was added after
        it was written and takes the value that gives that run's old behaviour (AS_BEFORE)."""
        if isinstance(d, dict):
            d = {sec: dict(vals) if isinstance(vals, dict) else vals for sec, vals in d.items()}
            for key, value in AS_BEFORE.items():
                section, name = key.split(".")
                if isinstance(d.get(section), dict):
                    d[section].setdefault(name, value)
        return merge(cls(), d)

    def save(self, path: Union[str, Path]) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")


# Settings added after runs were first saved, with the value that reproduces what those runs did:
# a saved config.json without them is read with these (RunConfig.from_dict), so --resume
# continues an old run exactly as it started.
AS_BEFORE = {
    "model.center_inputs": False,
    "model.input_scale": "std",  # centred runs before the per-network choice divided by s
    "model.output_bias_from_data": False,
    "optim.fan_in_scale": 0,
    "optim.max_skipped_steps": 0,
}

SECTIONS = {"data": DataConfig, "model": ModelConfig, "objective": ObjectiveConfig,
            "optim": OptimConfig, "train": TrainConfig}


def field_names(section: str) -> List[str]:
    return [f.name for f in dataclasses.fields(SECTIONS[section])]


# ---------------------------------------------------------------------------- checking values
# One rule per setting: the type comes from the dataclass annotation, the range from RANGES.
# Every value is checked where it enters (preset, config file, command line, Python) and again
# as a whole by validate(); a refusal names the setting, the value, the valid range and where
# the value came from.

CHOICES = {
    "data.binarize": BINARIZE_MODES,
    "data.color": (None,) + tuple(COLOR_CHANNELS),
    "model.activation": tuple(ACTIVATIONS),
    "model.likelihood": (None,) + tuple(LIKELIHOODS),
    "model.mean_activation": MEAN_ACTIVATIONS,
    "model.encoder_network": NETWORKS,
    "model.decoder_network": NETWORKS,
    "model.conv_norm": CONV_NORMS,
    "model.input_scale": (None,) + INPUT_SCALES,
    "objective.objective": OBJECTIVES,
    "model.prior": PRIORS,
    "model.flow": FLOWS,
    "model.inference": INFERENCE,
    "objective.kl": (None,) + tuple(KL_ESTIMATORS),
    "optim.optimizer": tuple(OPTIMIZERS),
    "optim.schedule": tuple(SCHEDULES),
    "train.precision": PRECISIONS,
}


def choices(key: str) -> list:
    """The values a user can name for the choice setting ``key`` (for --help and argparse)."""
    return [v for v in CHOICES[key] if v is not None]


RANGES = {
    **{key: choice(*allowed) for key, allowed in CHOICES.items()},
    "data.dataset": (lambda v: bool(v.strip()), "a data set name, folder:PATH or array:PATH"),
    "data.validation": (holdout, "a count >= 1 (a whole number) or a fraction in [0, 1)"),
    "data.image_size": (two_sizes, "two sizes [H, W], each in 1..16384"),
    "data.seed": integers(*SEEDS),
    "data.classes": (lambda v: len(v) >= 1 and len(set(v)) == len(v) and all(0 <= c <= 1_000_000 for c in v),
                     "a list of distinct class labels, each in 0..1000000"),
    "data.crop": (two_sizes, "two sizes [H, W] of the centre region, each in 1..16384"),
    "data.perturb": between(0, 1, hi_open=True),
    "data.memory_budget": (byte_size, "a size such as 500MB, 8GB or 1.5GiB up to 1 EB, or auto"),
    "model.latent_dim": (lambda v: 1 <= v <= 65536, "an integer in 1..65536"),
    "model.encoder_hidden": (layer_sizes, "a list of layer sizes, each in 1..1000000"),
    "model.decoder_hidden": (layer_sizes, "a list of layer sizes, each in 1..1000000"),
    "model.channels": (lambda v: len(v) >= 1 and all(1 <= c <= 65536 for c in v),
                       "a list of at least one positive channel count, one per stride-2 stage, e.g. 32 64 128 256"),
    "model.kernel_size": (lambda v: 2 <= v <= 15, "an integer from 2 to 15 (e.g. 3 or 4)"),
    "model.components": (lambda v: 1 <= v <= 32, "an integer from 1 to 32"),
    "model.prior_components": (lambda v: 1 <= v <= 10_000, "an integer in 1..10000"),
    "model.pseudo_inputs": (lambda v: 1 <= v <= 10_000, "an integer in 1..10000"),
    "model.flow_steps": (lambda v: 1 <= v <= 100, "an integer in 1..100"),
    "model.latent_dims": (lambda v: 2 <= len(v) <= 10 and all(1 <= j <= 65536 for j in v),
                          "a list of 2 to 10 layer sizes, bottom to top, each in 1..65536 (one layer: --latent-dim)"),
    "model.latent_hidden": (layer_sizes, "a list of layer sizes, each in 1..1000000"),
    "optim.fan_in_scale": (lambda v: 0 <= v <= 1_000_000_000, "an integer in 0..1000000000 (0: off)"),
    "optim.max_skipped_steps": (lambda v: 0 <= v <= 1_000_000_000, "an integer in 0..1000000000 (0: stop at the first)"),
    "model.sigma": between(0, lo_open=True),
    "model.min_log_var": between(-100, 100),
    "model.init_std": between(0, 10, lo_open=True),
    "objective.samples": (lambda v: 1 <= v <= 100_000, "an integer in 1..100000"),
    "objective.k": (lambda v: 1 <= v <= 100_000, "an integer in 1..100000"),
    "objective.beta": between(0),
    "objective.warmup_epochs": between(0),
    "optim.lr": between(0, lo_open=True),
    "optim.weight_decay": between(0),
    "optim.momentum": between(0, 1, hi_open=True),
    "optim.step_epochs": (lambda v: v >= 1, "an integer >= 1"),
    "optim.gamma": between(0, 1, lo_open=True),
    "optim.grad_clip": between(0, lo_open=True),
    "optim.warmup_steps": (lambda v: v >= 0, "an integer >= 0 (0: no warm-up)"),
    "train.epochs": (lambda v: 1 <= v <= 10_000_000, "an integer in 1..10000000"),
    "train.early_stop": (lambda v: 1 <= v <= 10_000_000, "a whole number of epochs in 1..10000000 (stop when the "
                         "validation bound has not improved for that many epochs)"),
    "train.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "train.eval_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "train.seed": integers(*SEEDS),
    "train.device": (device_name, "auto, cpu, cuda, cuda:N or mps"),
    "train.threads": integers(*THREADS),
    "train.images_every": (lambda v: v >= 0, "an integer >= 0 (0: never)"),
    "train.limit_batches": (lambda v: 1 <= v <= 1_000_000_000, "an integer in 1..1000000000 (batches per epoch)"),
}


def _types() -> Dict[str, Any]:
    out = {}
    for sec, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            out[f"{sec}.{f.name}"] = hints[f.name]
    return out


TYPES = _types()


def _type_name(t) -> str:
    args = typing.get_args(t)
    if typing.get_origin(t) is Union:
        inner = [a for a in args if a is not type(None)]
        return f"{_type_name(inner[0])} or none"
    if typing.get_origin(t) in (list, List):
        return f"a list of {_type_name(args[0])}s"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(t, str(t))


def _describe(v) -> str:
    kind = {bool: "a boolean", str: "a string", float: "a number", int: "an integer",
            list: "a list", dict: "a mapping", type(None): "none"}.get(type(v), type(v).__name__)
    return f"{v!r} ({kind})"


class _Mismatch(Exception):
    pass


def _convert(t, v):
    """``v`` as type ``t`` without coercion: an int for a float is widened, nothing else changes."""
    if typing.get_origin(t) is Union:
        if v is None:
            return None
        inner = [a for a in typing.get_args(t) if a is not type(None)][0]
        return _convert(inner, v)
    if typing.get_origin(t) in (list, List):
        if not isinstance(v, (list, tuple)):
            raise _Mismatch
        return [_convert(typing.get_args(t)[0], x) for x in v]
    if t is bool:
        if not isinstance(v, bool):
            raise _Mismatch
        return v
    if t is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Mismatch
        return int(v)
    if t is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _Mismatch
        return float(v)
    if t is str:
        if not isinstance(v, str):
            raise _Mismatch
        return v
    return v


def check_value(key: str, value, where: str = "the default"):
    """``value`` for the dotted setting ``key`` checked (type, finiteness, range) and returned;
    ConfigError names the setting, the value, what is valid and ``where`` it came from."""
    t = TYPES[key]
    try:
        v = _convert(t, value)
    except _Mismatch:
        expected = RANGES[key][1] if key in RANGES else _type_name(t)
        if typing.get_origin(t) is Union and "none" not in expected:
            expected += " (or unset)"
        raise ConfigError(f"{key} = {_describe(value)} (from {where}) has the wrong type: "
                          f"must be {expected}") from None
    if v is None:
        return v
    numbers = v if isinstance(v, list) else [v]
    if any(isinstance(x, float) and not math.isfinite(x) for x in numbers):
        raise ConfigError(f"{key} = {value!r} (from {where}) is not finite: must be "
                          + (RANGES[key][1] if key in RANGES else "a finite number"))
    if key in RANGES:
        ok, text = RANGES[key]
        if not ok(v):
            numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
            what = "out of range" if numeric or too_large(key, v) else "not valid"
            raise ConfigError(f"{key} = {shown(value)} (from {where}) is {what}: must be {text}")
    return v


def merge(cfg: RunConfig, updates: dict, source: str = "config",
          where: Optional[Callable[[str], str]] = None) -> RunConfig:
    """Return a copy of ``cfg`` with nested ``updates`` applied, each value checked by
    ``check_value``; unknown keys raise ConfigError. ``where(key)`` says where a value came from
    (default: ``source`` and the key), for messages and for later checks of combinations."""
    where = where or (lambda k: f"{source}, key {k}")
    out = copy.deepcopy(cfg)
    sources = dict(getattr(out, "_sources", {}))
    values = dict(getattr(out, "_values", {}))  # each value as set there: one changed since was set in Python
    if not isinstance(updates, dict):
        raise ConfigError(f"{source}: must be a mapping of sections, got {_describe(updates)}")
    for key, value in (updates or {}).items():
        if key == "preset":
            if value is not None and value not in _preset_names():
                raise ConfigError(f"preset = {_describe(value)} (from {where('preset')}): must be one of "
                                  + ", ".join(_preset_names()))
            out.preset = value
            continue
        if key not in SECTIONS:
            raise ConfigError(f"{source}: unknown section {key!r}; sections are {', '.join(SECTIONS)} and preset")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: section {key!r} must be a mapping, got {_describe(value)}")
        section = getattr(out, key)
        names = field_names(key)
        for name, v in value.items():
            name = str(name).replace("-", "_")
            if name not in names:
                raise ConfigError(f"{source}: unknown option {key}.{name}; options are {', '.join(names)}")
            dotted = f"{key}.{name}"
            checked = check_value(dotted, v, where(dotted))
            setattr(section, name, checked)
            sources[dotted], values[dotted] = where(dotted), copy.deepcopy(checked)
    out._sources, out._values = sources, values
    return out


# Python keywords that set two fields or a field by another name, as --network and --hidden do
KEYWORD_ALIASES = {"network": ("encoder_network", "decoder_network"), "hidden": ("encoder_hidden",)}


def merge_keywords(cfg: RunConfig, options: dict, caller: str, sections=("train", "model", "objective", "optim", "data"),
                   built: bool = False) -> RunConfig:
    """``cfg`` with Python keyword ``options`` named like the fields of ``sections`` (a name two
    sections share goes to the first: ``seed`` is the training seed) or like KEYWORD_ALIASES,
    each checked as the command line's options are (:func:`merge`); a ConfigError names the
    argument as ``caller(name=...)``. ``built``: the model exists already, so model settings
    are refused."""
    owners: Dict[str, str] = {}
    for sec in sections:
        for name in field_names(sec):
            owners.setdefault(name, sec)
    if "model" in sections:
        owners.update({alias: "model" for alias in KEYWORD_ALIASES})
    updates: dict = {}
    keys: Dict[str, str] = {}
    for name, value in options.items():
        if name not in owners:
            raise ConfigError(f"{caller}({name}=...): unknown option; the options are the settings of the "
                              f"config's {', '.join(sections)} sections, by their names (see aevb.RunConfig)")
        if owners[name] == "model" and built:
            raise ConfigError(f"{caller}({name}=...): the model is already built; give its settings to "
                              f"VAE.for_data(data, {name}=...) instead")
        for field_name in KEYWORD_ALIASES.get(name, (name,)):
            updates.setdefault(owners[name], {})[field_name] = value
            keys[f"{owners[name]}.{field_name}"] = name
    return merge(cfg, updates, source=caller, where=lambda k: f"{caller}({keys.get(k, k)}=...)")


def _preset_names() -> List[str]:
    return sorted(PRESETS)


def source_of(cfg: RunConfig, key: str) -> str:
    """Where the value of dotted ``key`` in ``cfg`` came from: what set it (a preset, a file, an
    option), 'the default', or, for a value changed since by assigning the attribute in Python,
    that assignment (``cfg.model.latent_dim``)."""
    sources, values = getattr(cfg, "_sources", {}), getattr(cfg, "_values", {})
    sec, name = key.split(".")
    value = getattr(getattr(cfg, sec), name)
    if key in sources and (key not in values or values[key] == value):
        return sources[key]
    if key in sources or value != getattr(getattr(RunConfig(), sec), name):
        return f"cfg.{key}, set in Python"
    return "the default"


def to_jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x):
        return asdict(x)
    return x


def get_setting(cfg: RunConfig, dotted: str):
    """The value of the dotted setting ``section.name`` of ``cfg``."""
    sec, name = dotted.split(".")
    return getattr(getattr(cfg, sec), name)


def set_setting(cfg: RunConfig, dotted: str, value) -> None:
    """Set the dotted setting ``section.name`` of ``cfg`` (unchecked: check_value first)."""
    sec, name = dotted.split(".")
    setattr(getattr(cfg, sec), name, value)
