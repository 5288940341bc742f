"""The marginal-likelihood estimator of the AEVB paper's Appendix D (low-dimensional latents).

For each datapoint x:

1. draw L samples z ~ p(z|x) by Hybrid Monte Carlo (gradient of log p(z) + log p(x|z));
2. fit a density estimator q(z) to them (here: a full-covariance Gaussian per datapoint, all
   datapoints at once);
3. draw L fresh posterior samples and plug them into the harmonic-mean-style estimator

       p(x) ~= ( (1/L) sum_l q(z_l) / (p(z_l) p(x|z_l)) )^{-1},

   computed in log space:  log p(x) ~= log L - logsumexp_l [log q(z_l) - log p(x, z_l)].

The estimator is consistent for any q whose tails are lighter than the posterior's; a Gaussian
fitted to the samples may have slightly too heavy tails for non-Gaussian posteriors, so
``cov_scale < 1`` (shrinking q) is offered as a safeguard. All work is vectorised over the
datapoints (one HMC chain per datapoint).

:func:`iw_log_px` gives the importance-weighted estimate L_k of a VAE (``model.iw_bound``) for
comparison.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from .hmc import hmc_sample, posterior_log_prob


@dataclass
class MarginalLikelihood:
    """``log_px`` [B]: the Appendix-D estimate per datapoint (nats); ``accept`` [B] HMC acceptance;
    ``q_mean`` [B, J], ``q_cov`` [B, J, J]: the fitted Gaussian; ``log_ratio_sd`` [B]: spread of the
    log terms (a diagnostic: large values mean an unreliable estimate)."""

    log_px: Tensor
    accept: Tensor
    q_mean: Tensor
    q_cov: Tensor
    log_ratio_sd: Tensor


def fit_gaussian(samples: Tensor, ridge: float = 1e-6):
    """Per-chain Gaussian fit: samples [S, B, J] -> mean [B, J], covariance [B, J, J]."""
    s = samples.shape[0]
    mean = samples.mean(0)
    d = samples - mean
    cov = torch.einsum("sbi,sbj->bij", d, d) / max(1, s - 1)
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    scale = cov.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)[:, None, None]
    return mean, cov + ridge * scale * eye


def appendix_d_estimate(log_joint: Callable[[Tensor], Tensor], z0: Tensor, n_samples: int = 200,
                        burn_in: int = 200, n_leapfrog: int = 10, step_size: float = 0.1,
                        target_accept: float = 0.9, cov_scale: float = 1.0, thin: int = 1,
                        generator: Optional[torch.Generator] = None) -> MarginalLikelihood:
    """Appendix-D estimate of log p(x) for a batch of datapoints.

    ``log_joint(z)``: log p(z) + log p(x|z) for z [B, J] (one chain per datapoint) -> [B].
    ``z0`` [B, J]: chain starts (e.g. the encoder's mean, or zeros). ``n_samples`` = L is used
    twice: L samples to fit q, then L fresh samples for the estimator.
    """
    fit = hmc_sample(log_joint, z0, n_samples, burn_in=burn_in, n_leapfrog=n_leapfrog,
                     step_size=step_size, target_accept=target_accept, thin=thin, generator=generator)
    mean, cov = fit_gaussian(fit.samples)
    cov = cov * cov_scale
    fresh = hmc_sample(log_joint, None, n_samples, burn_in=0, n_leapfrog=n_leapfrog,
                       target_accept=target_accept, thin=thin, generator=generator, state=fit.state)
    z = fresh.samples  # [L, B, J]
    q = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    log_q = q.log_prob(z)  # [L, B]
    with torch.no_grad():
        lj = torch.stack([log_joint(z[i]) for i in range(z.shape[0])])  # [L, B]
    log_r = log_q - lj
    log_px = math.log(z.shape[0]) - torch.logsumexp(log_r, 0)
    accept = 0.5 * (fit.accept + fresh.accept)
    return MarginalLikelihood(log_px.detach(), accept, mean, cov, log_r.std(0))


@torch.no_grad()
def model_log_px(model, x: Tensor, n_samples: int = 200, burn_in: int = 200, batch_size: int = 500,
                 start: str = "encoder", **kw) -> MarginalLikelihood:
    """Appendix-D estimate of log p(x) under a VAE's generative model for every row of x,
    in batches of ``batch_size`` chains. ``start``: 'encoder' (chains start at q's mean) or
    'prior' (at zeros; for models without a trained encoder, e.g. Monte Carlo EM)."""
    parts = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        if start == "encoder":
            z0 = model.encoder_params(xb)[0]
        else:
            z0 = torch.zeros(len(xb), model.latent_dim, dtype=xb.dtype, device=xb.device)
        parts.append(appendix_d_estimate(posterior_log_prob(model, xb), z0, n_samples, burn_in, **kw))
    return MarginalLikelihood(*(torch.cat([getattr(p, f) for p in parts])
                                for f in ("log_px", "accept", "q_mean", "q_cov", "log_ratio_sd")))


@torch.no_grad()
def iw_log_px(model, x: Tensor, k: int = 1000, batch_size: int = 500, chunk_size: int = 250) -> Tensor:
    """The importance-weighted estimate L_k (a stochastic lower bound on log p(x)) per row of x,
    with the model's own encoder as proposal: ``model.iw_bound``."""
    return torch.cat([model.iw_bound(x[i:i + batch_size], k, chunk_size=chunk_size)
                      for i in range(0, len(x), batch_size)])


def linear_gaussian_log_px(x: Tensor, W: Tensor, b: Tensor, s: float) -> Tensor:
    """Exact log p(x) for x = W z + b + N(0, s^2 I), z ~ N(0, I): log N(x; b, W W^T + s^2 I)."""
    cov = W @ W.T + (s ** 2) * torch.eye(W.shape[0], dtype=W.dtype)
    return torch.distributions.MultivariateNormal(b, covariance_matrix=cov).log_prob(x)
