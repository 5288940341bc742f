"""The VAE: q(z|x), p(z) = N(0, I), p(x|z); the SGVB bound and the importance-weighted bound.

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
from .distributions import (Likelihood, get_likelihood, kl_normal_standard, log_normal,
                            log_standard_normal, reparameterize)
from .networks import GaussianEncoder, MLPDecoder, init_normal_
from .sampling import prior_samples, reconstructions
from .sizing import model_sizes

# encoder / decoder networks VAE.from_config builds
NETWORKS = ("mlp", "conv")
# training bounds: the SGVB ELBO (VAE.elbo) or the importance-weighted bound (VAE.iwae)
OBJECTIVES = ("elbo", "iwae")
# how VAE.elbo takes the KL: in closed form (estimator B) or by Monte Carlo (estimator A)
KL_ESTIMATORS = ("analytic", "mc")


@dataclass
class BoundTerms:
    """Per-datapoint terms of a bound, each [B] in nats.

    ``bound``: the estimate of the evidence lower bound (ELBO, or L_k for the IWAE objective);
    ``log_px_given_z``: the reconstruction term E_q[log p(x|z)] (Monte Carlo average);
    ``kl``: the KL(q(z|x) || p(z)) term (closed form or its Monte Carlo estimate);
    ``kl_per_dim``: [B, J] closed-form KL per latent dimension (always computed; diagnostics).
    """

    bound: Tensor
    log_px_given_z: Tensor
    kl: Tensor
    kl_per_dim: Tensor


class VAE(nn.Module):
    """A variational autoencoder with a Gaussian inference network.

    ``encoder(x) -> (mu, log_var)`` each [B, J]; ``decoder(z) -> params`` [..., n_params * D];
    ``likelihood`` turns decoder parameters into log p(x|z).

    With ``center_inputs`` the encoder sees (x - m) * s, where m [D] is the training data's mean
    per value and s the inverse of their standard deviation over all values (buffers
    ``input_shift`` and ``input_scale``, set by :meth:`fit_to_data` and saved with the weights):
    inputs of mean 0.47 on [0, 1] move every first-layer unit coherently under Adam's first steps,
    centred ones do not (docs/stability.md). It changes q(z|x)'s network only, not the model.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Likelihood,
                 data_dim: int, latent_dim: int, center_inputs: bool = False):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.data_dim = data_dim
        self.latent_dim = latent_dim
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
        lik = get_likelihood(cfg.likelihood, sigma=cfg.sigma, mean_activation=cfg.mean_activation,
                             min_log_var=cfg.min_log_var, components=cfg.components)
        enc_kind = getattr(cfg, "encoder_network", "mlp")
        dec_kind = getattr(cfg, "decoder_network", "mlp")
        if "conv" in (enc_kind, dec_kind):
            conv = dict(kernel=cfg.kernel_size, act=cfg.activation, norm=cfg.conv_norm)
        if enc_kind == "conv":
            enc = ConvEncoder(image_shape, cfg.channels, cfg.latent_dim, **conv)
        else:
            enc = GaussianEncoder(data_dim, cfg.encoder_hidden, cfg.latent_dim, cfg.activation)
        if dec_kind == "conv":
            dec = ConvDecoder(cfg.latent_dim, cfg.channels, image_shape, lik.n_params, **conv)
        else:
            dec_hidden = cfg.decoder_hidden if cfg.decoder_hidden is not None else list(reversed(cfg.encoder_hidden))
            dec = MLPDecoder(cfg.latent_dim, dec_hidden, data_dim, lik.n_params, cfg.activation)
        model = cls(enc, dec, lik, data_dim, cfg.latent_dim, center_inputs=cfg.center_inputs)
        model.output_bias_from_data = bool(cfg.output_bias_from_data)
        init_normal_(model, cfg.init_std)
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

    # ------------------------------------------------------------------ the pieces
    def encode(self, x: Tensor):
        """x [B, D] -> (mu, log_var), each [B, J], in x's dtype (also when the networks run in
        bfloat16 under autocast, so the bound itself is always computed in full precision)."""
        mu, log_var = self.encoder((x - self.input_shift) * self.input_scale if self.center_inputs else x)
        return mu.to(x.dtype), log_var.to(x.dtype)

    def decode(self, z: Tensor) -> Tensor:
        """z [..., J] -> likelihood parameters [..., n_params * D], in z's dtype."""
        return self.decoder(z).to(z.dtype)

    def log_p_x_given_z(self, x: Tensor, z: Tensor) -> Tensor:
        """x [B, D], z [S, B, J] -> [S, B]."""
        return self.likelihood.log_prob(x, self.decode(z))

    @staticmethod
    def log_p_z(z: Tensor) -> Tensor:
        """The prior N(0, I): z [..., J] -> [...]."""
        return log_standard_normal(z)

    @staticmethod
    def log_q_z_given_x(z: Tensor, mu: Tensor, log_var: Tensor) -> Tensor:
        """z [S, B, J], mu/log_var [B, J] -> [S, B]."""
        return log_normal(z, mu, log_var)

    # ------------------------------------------------------------------ bounds
    def elbo(self, x: Tensor, n_samples: int = 1, kl: str = "analytic") -> BoundTerms:
        """The SGVB estimate of the ELBO per datapoint with L = ``n_samples`` samples.

        ``kl='analytic'``: estimator B of the paper, E_q[log p(x|z)] - KL in closed form.
        ``kl='mc'``: estimator A, the average of log p(x,z) - log q(z|x) over the samples.
        """
        mu, log_var = self.encode(x)
        z = reparameterize(mu, log_var, n_samples)
        log_px_z = self.log_p_x_given_z(x, z).mean(0)
        kl_per_dim = kl_normal_standard(mu, log_var)
        if kl == "analytic":
            kl_term = kl_per_dim.sum(-1)
        elif kl == "mc":
            kl_term = (self.log_q_z_given_x(z, mu, log_var) - self.log_p_z(z)).mean(0)
        else:
            raise ValueError(f"kl must be 'analytic' or 'mc', not {kl!r}")
        return BoundTerms(log_px_z - kl_term, log_px_z, kl_term, kl_per_dim)

    def _log_weights(self, x: Tensor, z: Tensor, mu: Tensor, log_var: Tensor):
        """(log p(x|z), log w = log p(x,z) - log q(z|x)) for samples z [S, B, J]: each [S, B]."""
        log_px_z = self.log_p_x_given_z(x, z)
        return log_px_z, log_px_z + self.log_p_z(z) - self.log_q_z_given_x(z, mu, log_var)

    def log_importance_weights(self, x: Tensor, k: int, mu: Optional[Tensor] = None,
                               log_var: Optional[Tensor] = None) -> Tensor:
        """log w = log p(x, z) - log q(z|x) for k samples z ~ q(z|x): x [B, D] -> [k, B]."""
        if mu is None:
            mu, log_var = self.encode(x)
        return self._log_weights(x, reparameterize(mu, log_var, k), mu, log_var)[1]

    def iwae(self, x: Tensor, k: int) -> BoundTerms:
        """The IWAE objective per datapoint: L_k from k samples, with the reconstruction term
        averaged over the same samples and the closed-form KL (both for logging only)."""
        mu, log_var = self.encode(x)
        log_px_z, log_w = self._log_weights(x, reparameterize(mu, log_var, k), mu, log_var)
        kl_per_dim = kl_normal_standard(mu, log_var)
        bound = torch.logsumexp(log_w, 0) - math.log(k)
        return BoundTerms(bound, log_px_z.mean(0), kl_per_dim.sum(-1), kl_per_dim)

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
