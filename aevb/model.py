"""The VAE: q(z|x), p(z), p(x|z); the SGVB bound and the importance-weighted bound.

One model of parts chosen by options: an encoder giving the Gaussian q_0(z|x) = N(mu, sigma^2),
optionally a normalising flow on top of it (aevb.flows), a prior (aevb.priors: N(0, I) as in
the AEVB paper, a learned mixture of Gaussians or the VampPrior), a decoder and a likelihood.
The KL has a closed form only for the Gaussian posterior against N(0, I); every other
combination takes it by Monte Carlo, log q(z|x) - log p(z) at the sampled z.

Shapes: data x [B, D]; latents z [S, B, J] where S is the number of samples per datapoint;
every log-probability is in nats, one value per datapoint ([B] or [S, B]).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from .bounds import SeededNoise, batch_bounds
from .convnets import ConvDecoder, ConvEncoder
from .distributions import Likelihood, get_likelihood, kl_normal_standard, log_normal
from .flows import FLOW_STEPS, Flow
from .networks import GaussianEncoder, MLPDecoder, init_normal_
from .priors import Prior, StandardNormal, build_prior
from .stacked import LatentStack
from .sampling import prior_samples, reconstructions
from .sizing import model_sizes

# encoder / decoder networks VAE.from_config builds
NETWORKS = ("mlp", "conv")
# training bounds: the SGVB ELBO (VAE.elbo) or the importance-weighted bound (VAE.iwae)
OBJECTIVES = ("elbo", "iwae")
# how VAE.elbo takes the KL: in closed form (estimator B) or by Monte Carlo (estimator A)
KL_ESTIMATORS = ("analytic", "mc")


def stack_hidden(sizes) -> list:
    """Deterministic layers between two stochastic ones when --latent-hidden is not given: two
    of twice the upper layer's size (the IWAE paper's 100-100 between 100 and 50 latents)."""
    return [2 * int(sizes[-1])] * 2


@dataclass
class BoundTerms:
    """Per-datapoint terms of a bound, each [B] in nats.

    ``bound``: the estimate of the evidence lower bound (ELBO, or L_k for the IWAE objective);
    ``log_px_given_z``: the reconstruction term E_q[log p(x|z)] (Monte Carlo average);
    ``kl``: the KL(q(z|x) || p(z)) term (closed form or its Monte Carlo estimate);
    ``kl_per_dim``: [B, J] closed-form KL per latent dimension (diagnostics), None where the
    model has no closed-form KL (a flow posterior or a learned prior).
    """

    bound: Tensor
    log_px_given_z: Tensor
    kl: Tensor
    kl_per_dim: Optional[Tensor]


class VAE(nn.Module):
    """A variational autoencoder with a Gaussian inference network.

    ``encoder(x) -> (mu, log_var)`` each [B, J]; ``decoder(z) -> params`` [..., n_params * D];
    ``likelihood`` turns decoder parameters into log p(x|z). Optional parts: ``prior`` (an
    aevb.priors.Prior over the top layer; N(0, I) when None), ``flow`` (an aevb.flows.Flow on the
    Gaussian posterior) and ``stack`` (aevb.stacked.LatentStack: stochastic layers above z_1,
    whose sizes the full latent vector of ``latent_dim`` values concatenates).

    With ``center_inputs`` the encoder sees (x - m) * s, where m [D] is the training data's mean
    per value and s the inverse of their standard deviation over all values (buffers
    ``input_shift`` and ``input_scale``, set by :meth:`fit_to_data` and saved with the weights):
    inputs of mean 0.47 on [0, 1] move every first-layer unit coherently under Adam's first steps,
    centred ones do not (docs/stability.md). It changes q(z|x)'s network only, not the model.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Likelihood,
                 data_dim: int, latent_dim: int, center_inputs: bool = False,
                 prior: Optional[Prior] = None, flow: Optional[Flow] = None,
                 stack: Optional[LatentStack] = None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.data_dim = data_dim
        self.stack = stack
        # the full latent vector's size (with stacked layers: all of them); z_1, which the
        # decoder reads, has the first ``bottom_dim`` entries; the prior is over the top layer
        self.latent_dim = stack.total if stack is not None else latent_dim
        self.bottom_dim = stack.sizes[0] if stack is not None else latent_dim
        top = stack.sizes[-1] if stack is not None else latent_dim
        self.prior = prior if prior is not None else StandardNormal(top)
        self.flow = flow
        self.center_inputs = bool(center_inputs)
        if self.center_inputs:
            self.register_buffer("input_shift", torch.zeros(data_dim))
            self.register_buffer("input_scale", torch.ones(()))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg, data_dim: int, image_shape=None) -> "VAE":
        """Build from an ``aevb.config.ModelConfig`` for data with ``data_dim`` values per
        datapoint; conv encoders / decoders also need the data's ``image_shape`` (C, H, W)."""
        image_shape = tuple(image_shape) if image_shape is not None else (1, 1, data_dim)
        unset = model_sizes(cfg, image_shape)  # sizes the user left to the data (aevb.sizing)
        if unset:
            cfg = dataclasses.replace(cfg, **unset)
        sizes = list(getattr(cfg, "latent_dims", None) or [cfg.latent_dim])
        bottom, top = sizes[0], sizes[-1]
        lik = get_likelihood(cfg.likelihood, sigma=cfg.sigma, mean_activation=cfg.mean_activation,
                             min_log_var=cfg.min_log_var, components=cfg.components)
        enc_kind = getattr(cfg, "encoder_network", "mlp")
        dec_kind = getattr(cfg, "decoder_network", "mlp")
        if "conv" in (enc_kind, dec_kind):
            conv = dict(kernel=cfg.kernel_size, act=cfg.activation, norm=cfg.conv_norm)
        if enc_kind == "conv":
            enc = ConvEncoder(image_shape, cfg.channels, bottom, **conv)
        else:
            enc = GaussianEncoder(data_dim, cfg.encoder_hidden, bottom, cfg.activation)
        if dec_kind == "conv":
            dec = ConvDecoder(bottom, cfg.channels, image_shape, lik.n_params, **conv)
        else:
            dec_hidden = cfg.decoder_hidden if cfg.decoder_hidden is not None else list(reversed(cfg.encoder_hidden))
            dec = MLPDecoder(bottom, dec_hidden, data_dim, lik.n_params, cfg.activation)
        stack = None
        if len(sizes) > 1:
            hidden = getattr(cfg, "latent_hidden", None) or stack_hidden(sizes)
            stack = LatentStack(sizes, hidden, cfg.activation, getattr(cfg, "inference", "bottom-up"))
        init_normal_(enc, cfg.init_std)
        init_normal_(dec, cfg.init_std)
        if stack is not None:
            init_normal_(stack, cfg.init_std)
        prior_name = getattr(cfg, "prior", "standard")
        count = getattr(cfg, "pseudo_inputs", None) if prior_name == "vamp" else getattr(cfg, "prior_components", None)
        prior = build_prior(prior_name, top, data_dim, count)
        flow_name = getattr(cfg, "flow", "none")
        flow = None
        if flow_name != "none":
            flow = Flow(flow_name, getattr(cfg, "flow_steps", None) or FLOW_STEPS[flow_name], bottom)
        model = cls(enc, dec, lik, data_dim, bottom, center_inputs=cfg.center_inputs, prior=prior, flow=flow,
                    stack=stack)
        model.output_bias_from_data = bool(cfg.output_bias_from_data)
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
            spread = float(var.double().mean().sqrt())
            self.input_scale.fill_(1.0 / spread if spread > 0 else 1.0)
        if getattr(self, "output_bias_from_data", False):
            bias = self.likelihood.output_bias(mean.float(), var.float())
            if bias is not None and hasattr(self.decoder, "set_output_bias"):
                self.decoder.set_output_bias(bias)
        self.prior.fit_to_data(mean, var)

    @property
    def closed_form_kl(self) -> bool:
        """Whether KL(q(z|x) || p(z)) has a closed form: a Gaussian posterior (no flow) and the
        N(0, I) prior. Otherwise the KL is taken by Monte Carlo and per-unit KL is undefined."""
        return self.flow is None and self.stack is None and self.prior.closed_form_kl

    def fixed_prior(self):
        """A context for passes that change no parameter (evaluation): a prior built from the
        model's own encoder (the VampPrior) computes its components once for all of it."""
        return self.prior.fixed(self.encode)

    # ------------------------------------------------------------------ the pieces
    def encode(self, x: Tensor):
        """x [B, D] -> (mu, log_var), each [B, J], in x's dtype (also when the networks run in
        bfloat16 under autocast, so the bound itself is always computed in full precision)."""
        mu, log_var = self.encoder((x - self.input_shift) * self.input_scale if self.center_inputs else x)
        return mu.to(x.dtype), log_var.to(x.dtype)

    def decode(self, z: Tensor) -> Tensor:
        """z [..., J] -> likelihood parameters [..., n_params * D], in z's dtype (with stacked
        layers the decoder reads z_1, the first ``bottom_dim`` entries)."""
        return self.decoder(z if self.stack is None else z[..., :self.bottom_dim]).to(z.dtype)

    def log_p_x_given_z(self, x: Tensor, z: Tensor) -> Tensor:
        """x [B, D], z [S, B, J] -> [S, B]."""
        return self.likelihood.log_prob(x, self.decode(z))

    def log_p_z(self, z: Tensor) -> Tensor:
        """The prior log p(z): z [..., J] -> [...] (with stacked layers p(z_L) times every
        p(z_l | z_{l+1}))."""
        if self.stack is None:
            return self.prior.log_prob(z, self.encode)
        return self.log_p_z_layers(z).sum(-1)

    def log_p_z_layers(self, z: Tensor) -> Tensor:
        """log p per stochastic layer, [..., L]: p(z_l | z_{l+1}) for l < L and the prior p(z_L)
        (one layer: [..., 1], the prior)."""
        if self.stack is None:
            return self.log_p_z(z).unsqueeze(-1)
        top = self.prior.log_prob(z[..., -self.stack.sizes[-1]:], self.encode)
        return torch.cat([self.stack.log_p_lower(z), top.unsqueeze(-1)], -1)

    @staticmethod
    def log_q_z_given_x(z: Tensor, mu: Tensor, log_var: Tensor) -> Tensor:
        """The Gaussian posterior (before any flow): z [S, B, J], mu/log_var [B, J] -> [S, B]."""
        return log_normal(z, mu, log_var)

    def sample_posterior(self, eps: Tensor, mu: Tensor, log_var: Tensor):
        """(z, log q(z|x)) for noise eps [..., J] (J = ``latent_dim``, every layer's noise) and
        the encoder's (mu, log_var) broadcast against it: z = mu + sigma * eps, then the flow,
        or with stacked layers every layer's draw (aevb.stacked)."""
        if self.stack is not None:
            z, log_q, _ = self.stack.sample(eps, mu, log_var)
            return z, log_q
        return self.posterior(mu + torch.exp(0.5 * log_var) * eps, mu, log_var)

    def latent_terms(self, eps: Tensor, mu: Tensor, log_var: Tensor):
        """(z, log p(z), log q(z|x), KL terms per layer) for noise eps [..., J]: the latent side of
        an importance weight. The last is log q(z_l | .) - log p(z_l | .) per stochastic layer
        [..., L] with stacked layers (their sum is log q - log p), else None."""
        if self.stack is None:
            z, log_q = self.sample_posterior(eps, mu, log_var)
            return z, self.log_p_z(z), log_q, None
        z, log_q, log_q_layers = self.stack.sample(eps, mu, log_var)
        log_p_layers = self.log_p_z_layers(z)
        return z, log_p_layers.sum(-1), log_q, log_q_layers - log_p_layers

    def posterior(self, z0: Tensor, mu: Tensor, log_var: Tensor):
        """(z, log q(z|x)) for base draws z0 = mu + sigma * eps [..., J] (mu and log_var broadcast
        against z0): z = z0 and the Gaussian density without a flow; with one, z = f(z0) and
        log q_0(z0|x) - log |det df/dz0|."""
        log_q = log_normal(z0, mu, log_var)
        if self.flow is None:
            return z0, log_q
        z, log_det = self.flow(z0, torch.cat([mu, log_var], -1))
        return z, log_q - log_det

    def codes(self, mu: Tensor, log_var: Tensor) -> Tensor:
        """The code of a datapoint, for figures and reconstructions: the posterior mean mu, or
        with a flow the flow applied to it (z at eps = 0), [..., J]."""
        if self.stack is not None:
            return self.stack.means(mu, log_var)[0]
        return mu if self.flow is None else self.flow(mu, torch.cat([mu, log_var], -1))[0]

    def posterior_params(self, mu: Tensor, log_var: Tensor):
        """(means, log-variances) [..., J] of q(z|x) for the encoder's (mu, log_var): those
        themselves, or with stacked layers every layer's along the mean path (the Gaussian before
        a flow)."""
        return (mu, log_var) if self.stack is None else self.stack.means(mu, log_var)

    def draw_prior(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` draws z ~ p(z), [n, J] float32 on the CPU, the noise from the CPU ``generator``
        (for N(0, I): ``torch.randn(n, J, generator=generator)``)."""
        with torch.no_grad():
            top = self.prior.sample(n, generator, self.encode)
            if self.stack is None:
                return top
            p = next(self.parameters())
            return self.stack.sample_down(top.to(p.device, p.dtype), generator).float().cpu()

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
            raise ValueError("the KL has no closed form with a flow posterior or a learned prior: use kl='mc'")
        mu, log_var = self.encode(x)
        eps = self._noise(n_samples, mu)
        if self.flow is None and self.stack is None:  # one Gaussian layer (the autograd graph is
            z = mu + torch.exp(0.5 * log_var) * eps    # built in this order, so gradients add up
            log_px_z = self.log_p_x_given_z(x, z).mean(0)  # in the same order as they always did)
            kl_per_dim = kl_normal_standard(mu, log_var) if self.closed_form_kl else None
            if kl == "analytic":
                kl_term = kl_per_dim.sum(-1)
            else:
                kl_term = (self.log_q_z_given_x(z, mu, log_var) - self.log_p_z(z)).mean(0)
        else:
            z, log_q = self.sample_posterior(eps, mu, log_var)
            log_px_z = self.log_p_x_given_z(x, z).mean(0)
            kl_per_dim, kl_term = None, (log_q - self.log_p_z(z)).mean(0)
        return BoundTerms(log_px_z - kl_term, log_px_z, kl_term, kl_per_dim)

    def _log_weights(self, x: Tensor, eps: Tensor, mu: Tensor, log_var: Tensor):
        """(log p(x|z), log w = log p(x,z) - log q(z|x)) for noise eps [S, B, J]: each [S, B]."""
        if self.flow is None and self.stack is None:
            z = mu + torch.exp(0.5 * log_var) * eps
            log_px_z = self.log_p_x_given_z(x, z)
            return log_px_z, log_px_z + self.log_p_z(z) - self.log_q_z_given_x(z, mu, log_var)
        z, log_q = self.sample_posterior(eps, mu, log_var)
        log_px_z = self.log_p_x_given_z(x, z)
        return log_px_z, log_px_z + self.log_p_z(z) - log_q

    def log_importance_weights(self, x: Tensor, k: int, mu: Optional[Tensor] = None,
                               log_var: Optional[Tensor] = None) -> Tensor:
        """log w = log p(x, z) - log q(z|x) for k samples z ~ q(z|x): x [B, D] -> [k, B]."""
        if mu is None:
            mu, log_var = self.encode(x)
        return self._log_weights(x, self._noise(k, mu), mu, log_var)[1]

    def _noise(self, n: int, mu: Tensor) -> Tensor:
        """eps ~ N(0, I) [n, B, J] from torch's global stream, J = ``latent_dim``."""
        return torch.randn((n,) + tuple(mu.shape[:-1]) + (self.latent_dim,), dtype=mu.dtype, device=mu.device)

    def iwae(self, x: Tensor, k: int) -> BoundTerms:
        """The IWAE objective per datapoint: L_k from k samples, with the reconstruction term
        averaged over the same samples and the KL (closed form where it exists, else the Monte
        Carlo average of log q - log p over the samples), both for logging only."""
        mu, log_var = self.encode(x)
        log_px_z, log_w = self._log_weights(x, self._noise(k, mu), mu, log_var)
        bound = torch.logsumexp(log_w, 0) - math.log(k)
        if self.closed_form_kl:
            kl_per_dim = kl_normal_standard(mu, log_var)
            return BoundTerms(bound, log_px_z.mean(0), kl_per_dim.sum(-1), kl_per_dim)
        return BoundTerms(bound, log_px_z.mean(0), (log_px_z - log_w).mean(0).detach(), None)

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
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
        return torch.cat([b.lk for b in batch_bounds(self, x, k, len(x), chunk_size or k, SeededNoise(seed))])

    # ------------------------------------------------------------------ pictures
    def reconstruct(self, x: Tensor) -> Tensor:
        """The mean of p(x|z) at z = E_q[z|x] (the posterior mean): [B, D] on x's device
        (aevb.sampling.reconstructions)."""
        return reconstructions(self, x).to(x.device)

    def sample(self, n: int, generator: Optional[torch.Generator] = None, mean: bool = True) -> Tensor:
        """n draws from the model: z ~ p(z), then the mean of p(x|z) (or a draw when mean=False),
        [n, D] on the model's device (aevb.sampling.prior_samples, seeded from ``generator``, or
        from torch's global stream when None)."""
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
        return prior_samples(self, n, seed, draw=not mean)[1].to(next(self.parameters()).device)
