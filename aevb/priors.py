"""Priors p(z) over the latents z [..., J]: the standard normal of the AEVB paper and two learned
ones (Tomczak & Welling 2018, "VAE with a VampPrior").

- ``standard``: N(0, I). The only prior with a closed-form KL against a Gaussian posterior.
- ``mog``: a mixture of K Gaussians with learned weights, means and diagonal variances, the
  simple baseline of the VampPrior paper.
- ``vamp``: the VampPrior, p(z) = (1/K) sum_k q(z | u_k), the mixture of the posteriors of K
  learned pseudo-inputs u_k (data-shaped parameters, [K, D]) through the model's own encoder.

Each prior gives ``log_prob(z, encode)`` [..., J] -> [...] nats (``encode`` is the model's
encoder, which only the VampPrior reads) and ``sample(n, generator, encode)`` [n, J]. Mixture
densities are computed as one matrix product per call (the quadratic form of every z against every
component, in float64), so memory is rows x K, not rows x K x J.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor, nn

from .distributions import LOG_2PI, log_standard_normal

# the priors --prior names (VAE.from_config builds them)
PRIORS = ("standard", "mog", "vamp")
# a learned prior's size when the config leaves it unset: mixture components (mog), pseudo-inputs (vamp)
MIXTURE_COMPONENTS = 10
PSEUDO_INPUTS = 500

Encode = Optional[Callable[[Tensor], Tuple[Tensor, Tensor]]]


def log_normal_mixture(z: Tensor, means: Tensor, log_vars: Tensor, log_weights: Tensor) -> Tensor:
    """log sum_k w_k N(z; m_k, diag exp(v_k)) for z [..., J], means / log_vars [K, J] and
    log_weights [K] -> [...] in z's dtype.

    Each component's weighted log density is c_k - 0.5 (z^2 . 1/s_k - 2 z . m_k/s_k), with
    c_k = log w_k - 0.5 (J log 2 pi + sum log s_k + sum m_k^2/s_k): one matrix product in float64
    of [z^2, z] [rows, 2J] against [1/s, -2 m/s] [K, 2J], added to c. Float64 keeps the expansion
    exact for posteriors with variances far below 1; memory is rows x K, not rows x K x J. The
    squared distance is never below 0, so no value exceeds the component's value at its mean."""
    lead, J = z.shape[:-1], z.shape[-1]
    zz = z.reshape(-1, J).double()
    lv = log_vars.double()
    inv = torch.exp(-lv)  # [K, J]
    m = means.double()
    peak = log_weights.double() - 0.5 * (J * LOG_2PI + lv.sum(-1))  # [K], each component at its mean
    c = peak - 0.5 * (m * m * inv).sum(-1)
    log_comp = torch.addmm(c, torch.cat([zz * zz, zz], 1), torch.cat([inv, -2.0 * m * inv], 1).T, alpha=-0.5)
    out = torch.logsumexp(torch.minimum(log_comp, peak), dim=-1)
    return out.reshape(lead).to(z.dtype)


def _pick(n: int, log_weights: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """n component indices drawn with probabilities softmax(log_weights), on the CPU."""
    probs = torch.softmax(log_weights.detach().double().cpu(), 0)
    return torch.multinomial(probs, int(n), replacement=True, generator=generator)


class Prior(nn.Module):
    """p(z) over J latents. ``closed_form_kl``: whether KL(N(mu, s^2) || p) has a closed form."""

    closed_form_kl = False

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = int(latent_dim)

    def log_prob(self, z: Tensor, encode: Encode = None) -> Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: Optional[torch.Generator] = None, encode: Encode = None) -> Tensor:
        """``n`` draws [n, J], float32 on the CPU; the noise comes from the CPU ``generator``."""
        raise NotImplementedError

    def fixed(self, encode: Encode = None):
        """A context in which the prior's parameters and the encoder do not change (evaluation
        without gradients), so a prior that derives its components from them may compute them
        once instead of at every call. Outside it, nothing is kept."""
        return contextlib.nullcontext()

    def fit_to_data(self, mean: Tensor, var: Tensor) -> None:
        """Start from the training data's per-value ``mean`` and ``var`` ([D] each), if the
        prior has anything data-shaped (the VampPrior's pseudo-inputs)."""


class StandardNormal(Prior):
    """p(z) = N(0, I), the prior of the AEVB paper."""

    closed_form_kl = True

    def log_prob(self, z: Tensor, encode: Encode = None) -> Tensor:
        return log_standard_normal(z)

    def sample(self, n: int, generator: Optional[torch.Generator] = None, encode: Encode = None) -> Tensor:
        return torch.randn(int(n), self.latent_dim, generator=generator, dtype=torch.float32)


class MixturePrior(Prior):
    """p(z) = sum_k pi_k N(z; m_k, diag s_k^2), with pi = softmax(logits), all learned.

    The means start as draws from N(0, I) and the variances at 1, so at step 0 the mixture is
    spread like the standard normal prior."""

    def __init__(self, latent_dim: int, components: int):
        super().__init__(latent_dim)
        self.means = nn.Parameter(torch.randn(int(components), self.latent_dim))
        self.log_vars = nn.Parameter(torch.zeros(int(components), self.latent_dim))
        self.logits = nn.Parameter(torch.zeros(int(components)))

    def log_prob(self, z: Tensor, encode: Encode = None) -> Tensor:
        return log_normal_mixture(z, self.means, self.log_vars, torch.log_softmax(self.logits, 0))

    def sample(self, n: int, generator: Optional[torch.Generator] = None, encode: Encode = None) -> Tensor:
        k = _pick(n, self.logits, generator)
        eps = torch.randn(int(n), self.latent_dim, generator=generator, dtype=torch.float32)
        m, lv = self.means.detach().float().cpu(), self.log_vars.detach().float().cpu()
        return m[k] + torch.exp(0.5 * lv[k]) * eps


class VampPrior(Prior):
    """p(z) = (1/K) sum_k q(z | u_k): the posteriors of K learned pseudo-inputs u_k [K, D].

    The pseudo-inputs start as noise spread like the training data (its mean plus its standard
    deviation times N(0, 1) per value; see :meth:`fit_to_data`), and are free parameters after
    that: nothing clamps them to the data's range, since the encoder reads any real input."""

    def __init__(self, latent_dim: int, pseudo_inputs: int, data_dim: int):
        super().__init__(latent_dim)
        self.pseudo_inputs = nn.Parameter(torch.rand(int(pseudo_inputs), int(data_dim)))
        self._fixed: Optional[Tuple[Tensor, Tensor]] = None  # the components inside fixed()

    @torch.no_grad()
    def fit_to_data(self, mean: Tensor, var: Tensor) -> None:
        u = self.pseudo_inputs
        noise = torch.randn(u.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
        u.copy_((mean.float().cpu() + var.float().cpu().clamp_min(0).sqrt() * noise).to(u))

    @contextlib.contextmanager
    def fixed(self, encode: Encode = None):
        """Encode the pseudo-inputs once for the whole context (an evaluation encodes them once,
        not once per chunk of samples); the cache is dropped on leaving it."""
        if self._fixed is not None:  # already inside one
            yield
            return
        self._fixed = self.components(encode)
        try:
            yield
        finally:
            self._fixed = None

    def components(self, encode: Encode) -> Tuple[Tensor, Tensor]:
        """(means, log_vars) [K, J] of q(z | u_k) for every pseudo-input."""
        if self._fixed is not None:
            return self._fixed
        if encode is None:
            raise ValueError("the VampPrior needs the model's encoder")
        return encode(self.pseudo_inputs)

    def log_prob(self, z: Tensor, encode: Encode = None) -> Tensor:
        mu, log_var = self.components(encode)
        K = mu.shape[0]
        return log_normal_mixture(z, mu, log_var, torch.full((K,), -math.log(K), dtype=torch.float64,
                                                             device=z.device))

    def sample(self, n: int, generator: Optional[torch.Generator] = None, encode: Encode = None) -> Tensor:
        K = self.pseudo_inputs.shape[0]
        k = torch.randint(0, K, (int(n),), generator=generator)
        eps = torch.randn(int(n), self.latent_dim, generator=generator, dtype=torch.float32)
        with torch.no_grad():
            mu, log_var = self.components(encode)
        return mu.float().cpu()[k] + torch.exp(0.5 * log_var.float().cpu()[k]) * eps


def build_prior(name: str, latent_dim: int, data_dim: int, components: Optional[int] = None) -> Prior:
    """The prior called ``name`` (one of PRIORS) over ``latent_dim`` latents; ``components`` is
    the number of mixture components (mog) or pseudo-inputs (vamp)."""
    if name == "standard":
        return StandardNormal(latent_dim)
    if name == "mog":
        return MixturePrior(latent_dim, components or MIXTURE_COMPONENTS)
    if name == "vamp":
        return VampPrior(latent_dim, components or PSEUDO_INPUTS, data_dim)
    raise ValueError(f"unknown prior {name!r}; choose one of {', '.join(PRIORS)}")
