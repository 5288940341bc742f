"""The VAE as an ``nn.Module``: q(z|x), p(z), p(x|z); the SGVB bound and the importance-weighted bound.

A model is an encoder (x -> the Gaussian parameters of the bottom latent layer), a stack of latent
cells (aevb.latent: every stochastic layer's q and p; one Gaussian layer with N(0, I) is the AEVB
paper's model, a flow or a learned prior is a part of a cell, stacked layers are more cells), a
decoder (the bottom layer's z -> the likelihood's parameters) and a likelihood. The importance
weight log w = log p(x|z) + log p(z) - log q(z|x) is computed in one place,
:meth:`VAE.log_weights`, for training (ELBO, IWAE) and evaluation (aevb.bounds) alike.

Use like any PyTorch module: ``model(x)`` gives the per-datapoint terms of the configured bound
and a scalar ``.loss``; ``model.encode(x)`` is q(z|x) and ``model.decode(z)`` is p(x|z), both
``torch.distributions`` objects. ``VAE(encoder, decoder, likelihood, latent_dim)`` takes your own
networks; ``VAE.from_config`` / ``VAE.for_data`` build aevb's.

Shapes: data x [B, D] (your encoder sees [B, *data_shape]); latents z [S, B, J] where S is the
number of samples per datapoint; every log-probability is in nats, one value per datapoint.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .bounds import KL_ESTIMATORS, SeededNoise, batch_bounds
from .config import ModelConfig, ObjectiveConfig, RunConfig, merge_keywords, resolve
from .convnets import ConvDecoder, ConvEncoder
from .distributions import (DataDistribution, Likelihood, get_likelihood, kl_normal_standard, likelihood_of,
                            log_normal)
from .errors import ConfigError
from .flows import FLOW_STEPS, Flow
from .latent import LatentSample, LatentStack, Posterior, assemble
from .networks import INPUT_SCALES, GaussianEncoder, MLPDecoder, init_normal_, scale_of_centred_inputs
from . import pretrained
from .priors import build_prior
from .sampling import prior_samples, reconstructions
from .sizing import model_sizes
from .stacked import stack_hidden, stacked_networks

# aevb's own networks: they read x [B, D] and z [..., J] as they are
NATIVE_ENCODERS = (GaussianEncoder, ConvEncoder)
NATIVE_DECODERS = (MLPDecoder, ConvDecoder)


@dataclass
class BoundTerms:
    """Per-datapoint terms of a bound, each [B] in nats.

    ``bound``: the estimate of the evidence lower bound (ELBO, or L_k for the IWAE objective);
    ``log_px_given_z``: the reconstruction term E_q[log p(x|z)] (Monte Carlo average);
    ``kl``: the KL(q(z|x) || p(z)) term (closed form or its Monte Carlo estimate);
    ``kl_per_dim``: [B, J] closed-form KL per latent dimension (diagnostics), None where the
    model has no closed-form KL (a flow posterior, a learned prior or stacked layers).
    ``loss`` (a property): minus the mean bound, the scalar to call ``.backward()`` on.
    """

    bound: Tensor
    log_px_given_z: Tensor
    kl: Tensor
    kl_per_dim: Optional[Tensor]

    @property
    def loss(self) -> Tensor:
        return -self.bound.mean()


class VAE(nn.Module):
    """A variational autoencoder: ``VAE(encoder, decoder, likelihood, latent_dim)``.

    ``encoder``: maps a batch [B, *data_shape] to q(z|x)'s mean and log-variance, as one tensor
    [B, 2 x latent_dim] (mean first) or a pair; ``decoder``: maps z [N, latent_dim] to the
    likelihood's parameters, in the data's shape ([N, *data_shape], logits for ``bernoulli``) or
    flat ([N, n_params x D]; a pair (mean, log_var) for ``gaussian``); ``likelihood``: a name
    (``bernoulli``, ``gaussian``, ``gaussian-fixed``, ``logistic``) or an aevb Likelihood.
    ``data_shape`` (one datapoint's shape) may be left to ``aevb.fit``, which takes it from the
    data. Optional: ``prior`` (aevb.priors; N(0, I) when None), ``flow`` (aevb.flows) or
    ``latents`` (an aevb.latent.LatentStack of several cells), ``objective`` (what
    ``model(x)`` computes: an aevb.config.ObjectiveConfig, default the one-sample ELBO).

    With ``center_inputs`` the encoder sees (x - m) * a, where m [D] is the training data's mean
    per value and a the factor ``input_scale`` gives for their standard deviation s over all values
    (aevb.networks.scale_of_centred_inputs: "std" 1 / s, "shrink" 1 / max(s, 1), "none" 1; buffers
    ``input_shift`` and ``input_scale``, set by :meth:`fit_to_data` and saved with the weights):
    inputs of mean 0.47 on [0, 1] move every first-layer unit coherently under Adam's first steps,
    centred ones do not (docs/stability.md). It changes q(z|x)'s network only, not the model.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Union[str, Likelihood] = "bernoulli",
                 latent_dim: Optional[int] = None, *, data_shape: Optional[Sequence[int]] = None,
                 data_dim: Optional[int] = None, prior=None, flow: Optional[Flow] = None,
                 latents: Optional[LatentStack] = None, center_inputs: bool = False,
                 input_scale: str = "std", objective: Optional[ObjectiveConfig] = None):
        super().__init__()
        if not isinstance(encoder, nn.Module) or not isinstance(decoder, nn.Module):
            raise ConfigError("VAE(encoder=..., decoder=...) takes two torch.nn.Module objects, not "
                              f"{type(encoder).__name__} and {type(decoder).__name__}")
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood if isinstance(likelihood, Likelihood) else _likelihood_named(likelihood)
        if latents is None:
            if latent_dim is None or isinstance(latent_dim, bool) or int(latent_dim) != latent_dim or latent_dim < 1:
                raise ConfigError(f"VAE(latent_dim={latent_dim!r}): give the number of latent variables, a whole "
                                  "number of at least 1")
            latents = assemble([int(latent_dim)], prior=prior, flow=flow)
        elif latent_dim is not None and int(latent_dim) != latents.sizes[0]:
            raise ConfigError(f"VAE(latent_dim={latent_dim}) differs from the bottom latent cell's size "
                              f"{latents.sizes[0]}; leave latent_dim out with latents=")
        self.latent = latents
        # aevb's own networks read x [B, D] and z [..., J] as they come; a user's read x in the
        # data's shape and z [N, J], and their outputs are checked and flattened
        self.native = isinstance(encoder, NATIVE_ENCODERS) and isinstance(decoder, NATIVE_DECODERS)
        self.data_shape: Optional[tuple] = None
        self.data_dim: Optional[int] = None
        if data_shape is not None or data_dim is not None:
            self.bind_data(tuple(data_shape) if data_shape is not None else (int(data_dim),))
        self.center_inputs = bool(center_inputs)
        if input_scale not in INPUT_SCALES:
            raise ConfigError(f"VAE(input_scale={input_scale!r}): choose one of {', '.join(INPUT_SCALES)}")
        self.input_scale_rule = input_scale
        if self.center_inputs:
            self.register_buffer("input_shift", torch.zeros(self.data_dim or 0))
            self.register_buffer("input_scale", torch.ones(()))
        self.objective = objective if objective is not None else ObjectiveConfig()
        self.output_bias_from_data = False
        self.config: Optional[dict] = None  # the ModelConfig this model was built from (from_config)
        self._register_load_state_dict_pre_hook(self._upgrade_keys)

    def _upgrade_keys(self, state, prefix, *args) -> None:
        pretrained.upgrade_state_dict(state, len(self.latent.cells), prefix)

    def bind_data(self, shape: Sequence[int]) -> None:
        """Fix the shape of one datapoint (``aevb.fit`` does it from the data when the model was
        built without one); a different shape than the one fixed before is refused."""
        shape = tuple(int(s) for s in shape)
        dim = int(math.prod(shape))
        if self.data_dim is not None and dim != self.data_dim:
            raise ConfigError(f"the data have {dim} values per datapoint (shape {list(shape)}) but the model "
                              f"was built for {self.data_dim} (shape {list(self.data_shape)})")
        self.data_shape, self.data_dim = shape, dim
        if getattr(self, "input_shift", None) is not None and self.input_shift.numel() != dim:
            self.input_shift = torch.zeros(dim, device=self.input_shift.device)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: ModelConfig, data_dim: int, image_shape=None,
                    objective: Optional[ObjectiveConfig] = None) -> "VAE":
        """Build from an ``aevb.config.ModelConfig`` for data with ``data_dim`` values per
        datapoint; conv encoders / decoders also need the data's ``image_shape`` (C, H, W)."""
        if cfg.encoder_network == "custom":
            raise ConfigError("encoder_network 'custom' is a model of your own encoder and decoder modules, which "
                              "only Python can build: train one with aevb.fit(aevb.VAE(encoder, decoder, ...), data), "
                              "use one with aevb.load(RUN, encoder=..., decoder=...)")
        image_shape = tuple(image_shape) if image_shape is not None else (1, 1, data_dim)
        unset = model_sizes(cfg, image_shape)  # sizes the user left to the data (aevb.sizing)
        if unset:
            cfg = dataclasses.replace(cfg, **unset)
        sizes = list(cfg.latent_dims or [cfg.latent_dim])
        bottom, top = sizes[0], sizes[-1]
        lik = likelihood_of(cfg)
        if "conv" in (cfg.encoder_network, cfg.decoder_network):
            conv = dict(kernel=cfg.kernel_size, act=cfg.activation, norm=cfg.conv_norm)
        if cfg.encoder_network == "conv":
            enc = ConvEncoder(image_shape, cfg.channels, bottom, **conv)
        else:
            enc = GaussianEncoder(data_dim, cfg.encoder_hidden, bottom, cfg.activation)
        if cfg.decoder_network == "conv":
            dec = ConvDecoder(bottom, cfg.channels, image_shape, lik.n_params, **conv)
        else:
            dec_hidden = cfg.decoder_hidden if cfg.decoder_hidden is not None else list(reversed(cfg.encoder_hidden))
            dec = MLPDecoder(bottom, dec_hidden, data_dim, lik.n_params, cfg.activation)
        # the order below is the order the initial weights are drawn in (fixed seeds repeat runs)
        q_nets, p_nets = stacked_networks(sizes, cfg.latent_hidden or stack_hidden(sizes), cfg.activation)
        for net in [enc, dec] + q_nets + p_nets:
            init_normal_(net, cfg.init_std)
        count = cfg.pseudo_inputs if cfg.prior == "vamp" else cfg.prior_components
        prior = build_prior(cfg.prior, top, data_dim, count)
        flow = None if cfg.flow == "none" else Flow(cfg.flow, cfg.flow_steps or FLOW_STEPS[cfg.flow], bottom)
        latents = assemble(sizes, q_nets, p_nets, prior, flow, cfg.inference)
        model = cls(enc, dec, lik, latents=latents, data_dim=data_dim, center_inputs=cfg.center_inputs,
                    input_scale=cfg.input_scale, objective=objective)
        model.output_bias_from_data = bool(cfg.output_bias_from_data)
        model.config = dict(dataclasses.asdict(cfg), data_dim=int(data_dim), image_shape=list(image_shape))
        return model

    @torch.no_grad()
    def fit_to_data(self, mean: Tensor, var: Tensor) -> None:
        """Set what a new model takes from its training data's per-value ``mean`` and ``var``
        ([D] each): the encoder's input centring (when ``center_inputs``) and, when the config
        asked for it, the decoder's output bias, so that at step 0 p(x|z) already has the
        data's mean (and variance, for Gaussians) whatever z: a decoder that starts at 0.5 on
        data whose mean is 0.1 spends its first steps, and large gradients, getting there."""
        if self.center_inputs:
            self.input_shift.copy_(mean.to(self.input_shift))
            self.input_scale.fill_(scale_of_centred_inputs(float(var.double().mean().sqrt()), self.input_scale_rule))
        if self.output_bias_from_data:
            bias = self.likelihood.output_bias(mean.float(), var.float())
            if bias is not None and hasattr(self.decoder, "set_output_bias"):
                self.decoder.set_output_bias(bias)
        self.prior.fit_to_data(mean, var)

    @classmethod
    def for_data(cls, data, **options) -> "VAE":
        """The model ``aevb train`` would build for ``data`` (a tensor or array of datapoints, a
        Dataset, a DataLoader or a data set name such as ``"mnist"``), sized from it and fitted to
        its training split's moments. ``options`` are the config fields' names of the model and
        objective sections (``likelihood``, ``latent_dim``, ``encoder_hidden``, ``prior``, ``k``,
        ...), plus ``network`` (both networks) and ``hidden`` (the encoder's hidden sizes)."""
        from .data import as_dataset

        cfg = merge_keywords(RunConfig(), options, "VAE.for_data", sections=("model", "objective"))
        dataset = as_dataset(data)
        shape = dataset.image_shape or (1, 1, dataset.dim)
        rcfg = resolve(cfg, dataset.kind, dataset.name, shape)
        model = cls.from_config(rcfg.model, dataset.dim, dataset.image_shape, objective=rcfg.objective)
        if rcfg.model.center_inputs or rcfg.model.output_bias_from_data:
            model.fit_to_data(*dataset.split("train").moments())
        model.bind_data(getattr(dataset, "item_shape", None) or (dataset.dim,))
        return model

    # ------------------------------------------------------------------ saving and loading
    def run_config(self) -> RunConfig:
        """The configuration that describes this model (its model and objective sections; for a
        model of your own modules, ``encoder_network = "custom"``, the likelihood and the sizes)."""
        if self.config is not None:
            model = {k: v for k, v in self.config.items() if k not in ("data_dim", "image_shape")}
        else:
            model = {"encoder_network": "custom", "decoder_network": "custom", "likelihood": self.likelihood.name,
                     "latent_dim": self.bottom_dim, "center_inputs": self.center_inputs,
                     "input_scale": self.input_scale_rule}
            for name in ("sigma", "mean_activation", "min_log_var", "components"):
                if hasattr(self.likelihood, name):
                    model[name] = getattr(self.likelihood, name)
        cfg = RunConfig()
        cfg.model = ModelConfig(**{**dataclasses.asdict(cfg.model), **model})
        cfg.objective = dataclasses.replace(self.objective)
        return cfg

    def save_pretrained(self, directory: Union[str, Path]) -> Path:
        """Write ``DIRECTORY/model.safetensors`` (the weights, with this model's description as
        metadata) and ``DIRECTORY/config.json`` (the same description, for people to read);
        :meth:`from_pretrained` gives back a bit-identical model. Returns the directory."""
        return pretrained.save(self, directory)

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], *, checkpoint: str = "last", device="cpu",
                        encoder: Optional[nn.Module] = None, decoder: Optional[nn.Module] = None) -> "VAE":
        """The model saved at ``path``, in eval mode on ``device``: a folder of
        :meth:`save_pretrained`, a ``.safetensors`` file of ``aevb export``, or a run folder (its
        ``checkpoint``, "last" or "best"; ``aevb.load(RUN)`` also checks that the run finished).
        A model of your own modules needs fresh ``encoder`` and ``decoder`` instances of them."""
        return pretrained.load(cls, path, checkpoint, device, encoder, decoder)

    @classmethod
    def from_checkpoint(cls, cfg: RunConfig, state: dict, source, encoder: Optional[nn.Module] = None,
                        decoder: Optional[nn.Module] = None) -> "VAE":
        """The model of a run's checkpoint ``state`` (as aevb.io.load_checkpoint reads it) and
        config ``cfg``, its weights the checkpoint's own tensors (aevb.pretrained.from_checkpoint)."""
        return pretrained.from_checkpoint(cls, cfg, state, source, encoder, decoder)

    # ------------------------------------------------------------------ parts and sizes
    @property
    def cells(self) -> nn.ModuleList:
        """The latent cells, bottom first (aevb.latent.LatentCell)."""
        return self.latent.cells

    @property
    def prior(self):
        """p(z) of the top latent layer (aevb.priors)."""
        return self.latent.prior

    @property
    def flow(self) -> Optional[Flow]:
        """The normalising flow on q(z|x), or None."""
        return self.latent.flow

    @property
    def layer_sizes(self) -> list:
        """The size of every stochastic layer, bottom first."""
        return list(self.latent.sizes)

    @property
    def latent_dim(self) -> int:
        """J: the full latent vector's size (with stacked layers, all of them)."""
        return self.latent.total

    @property
    def bottom_dim(self) -> int:
        """The size of z_1, the layer the decoder reads."""
        return self.latent.sizes[0]

    @property
    def closed_form_kl(self) -> bool:
        """Whether KL(q(z|x) || p(z)) has a closed form: one Gaussian layer (no flow) and the
        N(0, I) prior. Otherwise the KL is taken by Monte Carlo and per-unit KL is undefined."""
        return self.latent.closed_form_kl

    def fixed_prior(self):
        """A context for passes that change no parameter (evaluation): a prior built from the
        model's own encoder (the VampPrior) computes its components once for all of it."""
        return self.prior.fixed(self.encoder_params)

    # ------------------------------------------------------------------ the networks
    def encoder_params(self, x: Tensor):
        """x [B, D] -> (mu, log_var) of the bottom latent layer, each [B, J_1], in x's dtype
        (also when the networks run in bfloat16 under autocast, so the bound itself is always
        computed in full precision)."""
        h = (x - self.input_shift) * self.input_scale if self.center_inputs else x
        if self.native:
            mu, log_var = self.encoder(h)
        else:
            mu, log_var = self._split_encoder_output(self.encoder(h.reshape(h.shape[:-1] + self._shape())))
        return mu.to(x.dtype), log_var.to(x.dtype)

    def decoder_params(self, z: Tensor, cast: bool = True) -> Tensor:
        """z [..., J] -> the likelihood's parameters [..., n_params * D], in z's dtype (the decoder
        reads z_1, the first ``bottom_dim`` entries); ``cast=False`` leaves them in the decoder's
        own output dtype (bfloat16 under autocast)."""
        z1 = z[..., :self.bottom_dim]
        if self.native:
            out = self.decoder(z1)
        else:
            out = self._flat_decoder_output(self.decoder(z1.reshape(-1, z1.shape[-1])), z1.shape[:-1])
        return out.to(z.dtype) if cast else out

    def _likelihood_params(self, z: Tensor) -> Tensor:
        """decoder_params for the likelihood's log-density: left in the decoder's dtype for a
        likelihood that converts them itself (``takes_low_precision``)."""
        return self.decoder_params(z, cast=not getattr(self.likelihood, "takes_low_precision", False))

    def _shape(self) -> tuple:
        if self.data_shape is None:
            raise ConfigError("the model does not know the shape of a datapoint yet: build it with "
                              "VAE(..., data_shape=(C, H, W)) or train it with aevb.fit, which takes it from the data")
        return self.data_shape

    def _split_encoder_output(self, out):
        J = self.bottom_dim
        if isinstance(out, (tuple, list)) and len(out) == 2:
            mu, log_var = out
        elif isinstance(out, Tensor) and out.shape[-1] == 2 * J:
            mu, log_var = out.chunk(2, dim=-1)
        else:
            got = f"a {type(out).__name__} of {len(out)}" if isinstance(out, (tuple, list)) else \
                f"{out.shape[-1]} wide" if isinstance(out, Tensor) and out.dim() else type(out).__name__
            raise ConfigError(f"the encoder's output is {got}; with latent_dim={J} it must be one tensor [B, {2 * J}] "
                              f"(the mean, then the log-variance) or a pair (mean, log_var) of [B, {J}] each")
        if mu.shape != log_var.shape or mu.shape[-1] != J:
            raise ConfigError(f"the encoder's mean and log-variance are {list(mu.shape)} and {list(log_var.shape)}; "
                              f"with latent_dim={J} each must be [B, {J}]")
        return mu, log_var

    def _flat_decoder_output(self, out, lead) -> Tensor:
        D, n = self.data_dim, self.likelihood.n_params
        parts = out if isinstance(out, (tuple, list)) else [out]
        flat = [p.reshape(p.shape[0], -1) for p in parts]
        width = sum(f.shape[-1] for f in flat)
        if D is not None and width != n * D:
            need = f"{n * D}" if n == 1 else f"{n} x {D} = {n * D} (or {n} tensors of {D})"
            raise ConfigError(f"the decoder's output has {width} values per datapoint; a {self.likelihood.name} "
                              f"likelihood of data with {D} values needs {need}")
        params = flat[0] if len(flat) == 1 else torch.cat(flat, -1)
        return params.reshape(tuple(lead) + (width,))

    # ------------------------------------------------------------------ the distributions
    def encode(self, x: Tensor) -> Posterior:
        """q(z|x) for a batch x [B, D] (or [B, *data_shape]): a torch Distribution with ``.mean``,
        ``.stddev``, ``.rsample()``, ``.log_prob(z)`` and ``.code`` (aevb.latent.Posterior)."""
        x = self._flat(x)
        return Posterior(self.latent, *self.encoder_params(x), self.encoder_params)

    def decode(self, z: Tensor) -> DataDistribution:
        """p(x|z) for latents z [..., J]: a torch Distribution whose ``.mean`` [..., D] is in data
        space (probabilities for Bernoulli), with ``.log_prob(x)``, ``.sample()`` and the
        decoder's raw ``.params`` (aevb.distributions.DataDistribution)."""
        return DataDistribution(self.likelihood, self.decoder_params(z))

    def forward(self, x: Tensor) -> BoundTerms:
        """The per-datapoint terms of the bound the model is configured with (``objective``: the
        SGVB ELBO with L samples, or the IWAE bound L_k), and ``.loss`` to call ``.backward()`` on."""
        x = self._flat(x)
        obj = self.objective
        if obj.objective == "iwae":
            return self.iwae(x, obj.k)
        return self.elbo(x, n_samples=obj.samples, kl=obj.kl)

    def _flat(self, x: Tensor) -> Tensor:
        """A batch [B, D] from [B, D] or [B, ...] of D values per datapoint."""
        if x.dim() > 2 and self.data_dim is not None and x[0].numel() == self.data_dim:
            return x.reshape(len(x), -1)
        return x

    # ------------------------------------------------------------------ densities
    def log_p_x_given_z(self, x: Tensor, z: Tensor) -> Tensor:
        """x [B, D], z [S, B, J] -> [S, B]."""
        return self.likelihood.log_prob(x, self._likelihood_params(z))

    def log_p_z(self, z: Tensor) -> Tensor:
        """The prior log p(z): z [..., J] -> [...] (with stacked layers p(z_L) times every
        p(z_l | z_{l+1}))."""
        return self.latent.log_p(z, self.encoder_params)

    @staticmethod
    def log_q_z_given_x(z: Tensor, mu: Tensor, log_var: Tensor) -> Tensor:
        """A diagonal Gaussian posterior's density: z [S, B, J], mu/log_var [B, J] -> [S, B]."""
        return log_normal(z, mu, log_var)

    def latent_sample(self, eps: Tensor, mu: Tensor, log_var: Tensor) -> LatentSample:
        """z ~ q(z|x) for noise eps [..., J] and the encoder's (mu, log_var) broadcast against it,
        with log q(z|x) and log p(z) (aevb.latent.LatentStack.sample)."""
        return self.latent.sample(eps, mu, log_var, self.encoder_params)

    def log_weights(self, x: Tensor, eps: Tensor, mu: Tensor, log_var: Tensor, batch_first: bool = False,
                    log_px_fn=None):
        """The importance weights of the samples of noise ``eps``: (log w, log p(x|z), the
        LatentSample), log w = log p(x|z) + log p(z) - log q(z|x).

        eps [S, B, J] -> [S, B] (training's layout), or with ``batch_first`` eps [B, S, J] ->
        [B, S] (the evaluation engine's chunks); ``log_px_fn`` replaces the likelihood's
        log-density (e.g. a compiled version of it). The one place an importance weight is made."""
        if batch_first:
            mu, log_var = mu.unsqueeze(1), log_var.unsqueeze(1)
        s = self.latent_sample(eps, mu, log_var)
        params = self._likelihood_params(s.z)
        log_px = log_px_fn or (self.likelihood.log_prob_samples if batch_first else self.likelihood.log_prob)
        log_px_z = log_px(x, params)
        return log_px_z + s.log_p - s.log_q, log_px_z, s

    def codes(self, mu: Tensor, log_var: Tensor) -> Tensor:
        """The code of a datapoint, for figures and reconstructions: the posterior mean mu, or
        along q's mean path with a flow (f(mu)) or stacked layers, [..., J]."""
        return self.latent.mean_path(mu, log_var)[0]

    def posterior_params(self, mu: Tensor, log_var: Tensor):
        """(means, log-variances) [..., J] of q(z|x) along its mean path for the encoder's
        (mu, log_var): those themselves for one layer (the Gaussian before a flow)."""
        return self.latent.mean_path(mu, log_var)[1:]

    def draw_prior(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` draws z ~ p(z), [n, J] float32 on the CPU, the noise from the CPU ``generator``
        (for N(0, I): ``torch.randn(n, J, generator=generator)``)."""
        p = next(self.parameters())
        with torch.no_grad():
            return self.latent.draw_prior(n, generator, self.encoder_params, p.device, p.dtype)

    # ------------------------------------------------------------------ bounds
    def elbo(self, x: Tensor, n_samples: int = 1, kl: Optional[str] = None) -> BoundTerms:
        """The SGVB estimate of the ELBO per datapoint with L = ``n_samples`` samples.

        ``kl='analytic'``: estimator B of the paper, E_q[log p(x|z)] - KL in closed form.
        ``kl='mc'``: estimator A, the average of log p(x,z) - log q(z|x) over the samples.
        None: analytic where the model has a closed-form KL (:attr:`closed_form_kl`), else mc.
        """
        kl = kl if kl is not None else ("analytic" if self.closed_form_kl else "mc")
        if kl not in KL_ESTIMATORS:
            raise ValueError(f"kl must be 'analytic' or 'mc', not {kl!r}")
        if kl == "analytic" and not self.closed_form_kl:
            raise ValueError("the KL has no closed form with a flow posterior, a learned prior or stacked layers: "
                             "use kl='mc'")
        mu, log_var = self.encoder_params(x)
        eps = self._noise(n_samples, mu)
        if kl == "analytic":  # estimator B: only the reconstruction term is sampled
            z = self.latent.sample(eps, mu, log_var, densities=False).z
            log_px_z = self.log_p_x_given_z(x, z).mean(0)
            kl_per_dim = self.latent.kl_per_dim(mu, log_var)
            kl_term = kl_per_dim.sum(-1)
        else:  # estimator A: log p(x, z) - log q(z|x), the importance weight
            _, log_px_z, s = self.log_weights(x, eps, mu, log_var)
            log_px_z, kl_per_dim = log_px_z.mean(0), self.latent.kl_per_dim(mu, log_var)
            kl_term = (s.log_q - s.log_p).mean(0)
        return BoundTerms(log_px_z - kl_term, log_px_z, kl_term, kl_per_dim)

    def iwae(self, x: Tensor, k: int) -> BoundTerms:
        """The IWAE objective per datapoint: L_k from k samples, with the reconstruction term
        averaged over the same samples and the KL (closed form where it exists, else the Monte
        Carlo average of log q - log p over the samples), both for logging only."""
        mu, log_var = self.encoder_params(x)
        log_w, log_px_z, _ = self.log_weights(x, self._noise(k, mu), mu, log_var)
        bound = torch.logsumexp(log_w, 0) - math.log(k)
        if self.closed_form_kl:
            kl_per_dim = kl_normal_standard(mu, log_var)
            return BoundTerms(bound, log_px_z.mean(0), kl_per_dim.sum(-1), kl_per_dim)
        return BoundTerms(bound, log_px_z.mean(0), (log_px_z - log_w).mean(0).detach(), None)

    def log_importance_weights(self, x: Tensor, k: int, mu: Optional[Tensor] = None,
                               log_var: Optional[Tensor] = None) -> Tensor:
        """log w = log p(x, z) - log q(z|x) for k samples z ~ q(z|x): x [B, D] -> [k, B]."""
        if mu is None:
            mu, log_var = self.encoder_params(x)
        return self.log_weights(x, self._noise(k, mu), mu, log_var)[0]

    def _noise(self, n: int, mu: Tensor) -> Tensor:
        """eps ~ N(0, I) [n, B, J] from torch's global stream, J = ``latent_dim``."""
        return torch.randn((n,) + tuple(mu.shape[:-1]) + (self.latent_dim,), dtype=mu.dtype, device=mu.device)

    def iw_bound(self, x: Tensor, k: int, chunk_size: Optional[int] = None,
                 generator: Optional[torch.Generator] = None) -> Tensor:
        """The importance-weighted bound L_k = log (1/k) sum_i w_i per datapoint of a batch,
        [B] float64 nats (aevb.bounds' engine; no gradients).

        L_1 is the ELBO; L_k increases towards log p(x) as k grows. Samples are drawn in chunks
        of ``chunk_size`` (all at once when None) and combined exactly by log-sum-exp, so memory
        is bounded whatever k; the samples do not depend on the chunk size. Their seed comes from
        ``generator``, or from torch's global stream when None.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        x = self._flat(x)
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
        return torch.cat([b.lk for b in batch_bounds(self, x, k, len(x), chunk_size or k, SeededNoise(seed))])

    # ------------------------------------------------------------------ pictures
    def reconstruct(self, x: Tensor) -> Tensor:
        """The mean of p(x|z) at z = E_q[z|x] (the posterior mean): [B, D] on x's device
        (aevb.sampling.reconstructions)."""
        return reconstructions(self, self._flat(x)).to(x.device)

    def sample(self, n: int, generator: Optional[torch.Generator] = None, mean: bool = True) -> Tensor:
        """n draws from the model: z ~ p(z), then the mean of p(x|z) (or a draw when mean=False),
        [n, D] on the model's device (aevb.sampling.prior_samples, seeded from ``generator``, or
        from torch's global stream when None)."""
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
        return prior_samples(self, n, seed, draw=not mean)[1].to(next(self.parameters()).device)


def _likelihood_named(name) -> Likelihood:
    try:
        return get_likelihood(name)
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"VAE(likelihood={name!r}): {e}") from None
