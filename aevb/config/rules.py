"""The rules over a whole configuration: presets, data-dependent defaults, the checks of
combinations, and which options differ between two configurations."""
from __future__ import annotations

import copy
from typing import List, Optional

from ..data.spec import FOLDER, MemorySpecError, Spec, parse_spec
from ..distributions import mean_activation_likelihoods
from ..errors import ConfigError, DataError
from ..presets import PRESETS
from ..sizing import batch_size, model_sizes
from .settings import SECTIONS, RunConfig, check_value, field_names, get_setting, merge, source_of

# the settings chosen from the data when unset (aevb.sizing), with the option that sets each
SIZED = {"model.encoder_hidden": "--hidden", "model.latent_dim": "--latent-dim", "model.channels": "--channels",
         "model.components": "--components", "train.batch_size": "--batch-size"}


def apply_preset(cfg: RunConfig, name: str) -> RunConfig:
    """``cfg`` with the named preset's settings applied (see aevb.presets)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    out = merge(cfg, PRESETS[name], source=f"preset {name}", where=lambda k: f"preset {name}")
    out.preset = name
    return out


def diff(a: RunConfig, b: RunConfig) -> List[str]:
    """Dotted names of the options whose values differ between two configs."""
    da, db = a.to_dict(), b.to_dict()
    out = []
    for sec in SECTIONS:
        for k in da[sec]:
            if da[sec][k] != db[sec][k]:
                out.append(f"{sec}.{k}")
    return out


def sized(cfg: RunConfig, image_shape, n_train: Optional[int] = None) -> RunConfig:
    """``cfg`` with every unset network and batch size chosen for data of ``image_shape``
    (C, H, W) and ``n_train`` training datapoints (None: not known) by aevb.sizing; returns a
    new config."""
    out = copy.deepcopy(cfg)
    for name, value in model_sizes(out.model, image_shape).items():
        setattr(out.model, name, value)
    if out.train.batch_size is None:
        c, h, w = (int(s) for s in image_shape)
        out.train.batch_size = batch_size(c * h * w, "conv" in (out.model.encoder_network, out.model.decoder_network),
                                          n_train)
    return out


def sizes_chosen(given: RunConfig, resolved: RunConfig) -> str:
    """The sizes ``resolve`` chose (unset in ``given``) as the options that set them, e.g.
    '--hidden 400 --latent-dim 20 --batch-size 128'; '' when the user gave them all."""
    m = resolved.model
    conv = "conv" in (m.encoder_network, m.decoder_network)
    parts = []
    for key, flag in SIZED.items():
        value = get_setting(resolved, key)
        if get_setting(given, key) is not None or (key == "model.latent_dim" and m.latent_dims) \
                or (key == "model.encoder_hidden" and "mlp" not in
                                                    (m.encoder_network, m.decoder_network)) \
                or (key == "model.channels" and not conv) or (key == "model.components" and value == 1):
            continue
        parts.append(f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}")
    return " ".join(parts)


def resolve(cfg: RunConfig, data_kind: str, dataset_name: str, image_shape,
            n_train: Optional[int] = None) -> RunConfig:
    """Fill the data-dependent defaults (epochs, likelihood, the sizes of aevb.sizing for data of
    ``image_shape`` (C, H, W) and ``n_train`` training datapoints) and check the combination;
    returns a new config."""
    out = copy.deepcopy(cfg)
    if out.train.epochs is None:
        out.train.epochs = 100 if dataset_name == "digits" else 10
    if out.model.likelihood is None:
        binary_like = data_kind in ("binary", "unit") or out.data.binarize is not None
        out.model.likelihood = "bernoulli" if binary_like else "gaussian"
    validate(out)  # before the sizes: --latent-dim against --latent-dims is the user's, not the data's
    if out.model.latent_dims:
        out.model.latent_dim = sum(out.model.latent_dims)  # the full latent vector
    out = sized(out, image_shape, n_train)
    if out.objective.kl is None:
        m = out.model
        out.objective.kl = "analytic" if m.prior == "standard" and m.flow == "none" and not m.latent_dims else "mc"
    validate(out)
    return out


def data_spec(cfg: RunConfig) -> Optional[Spec]:
    """The parsed ``data.dataset`` (aevb.data.spec), None for a name the loader will refuse (it
    says why, with the names it knows); a damaged ``memory:`` record is refused here, naming it."""
    try:
        return parse_spec(cfg.data.dataset)
    except MemorySpecError as e:
        raise ConfigError(f"data.dataset (from {source_of(cfg, 'data.dataset')}): {e}") from None
    except DataError:
        return None


def validate(cfg: RunConfig) -> None:
    """Check every setting (type and range, as check_value) and the combinations; ConfigError
    names the setting, its value, what is valid and where it came from."""
    for sec in SECTIONS:
        section = getattr(cfg, sec)
        for name in field_names(sec):
            key = f"{sec}.{name}"
            setattr(section, name, check_value(key, getattr(section, name), source_of(cfg, key)))

    def refuse(keys, why):
        said = "; ".join(f"{k} = {get_setting(cfg, k)!r} (from {source_of(cfg, k)})" for k in keys)
        raise ConfigError(f"{said}: {why}")

    o = cfg.objective
    if o.objective == "iwae" and (o.beta != 1.0 or o.warmup_epochs):
        refuse(["objective.objective", "objective.beta", "objective.warmup_epochs"],
               "a KL weight (beta / warm-up) applies to the elbo objective only, not iwae")
    if cfg.optim.momentum and cfg.optim.optimizer != "sgd":
        refuse(["optim.momentum", "optim.optimizer"], "momentum applies to the sgd optimizer only; "
               "drop it or use --optimizer sgd")
    takes = mean_activation_likelihoods()
    chosen = cfg.model.likelihood  # None: chosen from the data by resolve, which validates again
    if chosen is not None and chosen not in takes and cfg.model.mean_activation != "identity":
        refuse(["model.likelihood", "model.mean_activation"], "a mean activation applies to gaussian "
               f"likelihoods only ({', '.join(takes)}); drop --mean-activation or choose one of them")
    spec = data_spec(cfg)
    folder, pictures = spec is not None and spec.form == FOLDER, spec is not None and spec.pictures
    if not pictures and (cfg.data.image_size is not None or cfg.data.crop is not None):
        key = "data.image_size" if cfg.data.image_size is not None else "data.crop"
        refuse(["data.dataset", key], "image size and crop apply to folder:PATH and celeba data only")
    if not folder and cfg.data.color is not None and not (pictures and cfg.data.color == "rgb"):
        refuse(["data.dataset", "data.color"], "colour applies to folder:PATH data only")
    if cfg.train.early_stop is not None and not cfg.data.validation:
        refuse(["train.early_stop", "data.validation"], "early stopping watches the validation bound, and the run "
               "holds out no validation split: add --validation N (a count, or a fraction such as 0.1) or drop "
               "--early-stop")
    m = cfg.model
    if o.kl == "analytic" and (m.prior != "standard" or m.flow != "none" or m.latent_dims):
        keys = ["objective.kl"] + (["model.prior"] if m.prior != "standard" else []) + \
            (["model.flow"] if m.flow != "none" else []) + (["model.latent_dims"] if m.latent_dims else [])
        refuse(keys, "the KL has a closed form only for one Gaussian layer against the N(0, I) prior; "
               "use --kl mc (or leave --kl unset)")
    if m.latent_dims:
        said = source_of(cfg, "model.latent_dim")
        if m.latent_dim is not None and m.latent_dim != sum(m.latent_dims) and \
                not (said == "the default" or said.startswith("preset")):
            refuse(["model.latent_dim", "model.latent_dims"], "give one of them: --latent-dims sets every layer's "
                   "size (the full latent vector has their sum)")
        if m.flow != "none":
            refuse(["model.flow", "model.latent_dims"], "a flow applies to one stochastic layer; drop --flow or "
                   "--latent-dims")
        if m.prior == "vamp":
            refuse(["model.prior", "model.latent_dims"], "the VampPrior needs the encoder to give the top layer's "
                   "posterior, which stacked layers do not; use --prior standard or mog with --latent-dims")
    else:
        for key in ("model.latent_hidden", "model.inference"):
            if get_setting(cfg, key) not in (None, "bottom-up"):
                refuse([key, "model.latent_dims"], "it applies to stacked layers only: add --latent-dims, e.g. "
                       "--latent-dims 100 50")
    for key, applies, what in (("model.prior_components", m.prior == "mog", "--prior mog"),
                               ("model.pseudo_inputs", m.prior == "vamp", "--prior vamp"),
                               ("model.flow_steps", m.flow != "none", "a flow (--flow planar or iaf)")):
        if get_setting(cfg, key) is not None and not applies:
            refuse([key, "model.prior" if "prior" in what else "model.flow"], f"it applies to {what} only")
    if m.components is not None and m.components > 1 and m.likelihood not in (None, "discretized-logistic"):
        refuse(["model.components", "model.likelihood"], "mixture components apply to --likelihood "
               "discretized-logistic only")
