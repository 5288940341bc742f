"""Log-densities of the posterior, the prior and the likelihoods, in nats.

Conventions: every ``log_*`` function returns one value per datapoint (summed over the data or
latent dimensions, i.e. over the last axis). Leading axes are free, so the same code handles
[batch, D] and [samples, batch, D].

Likelihoods are chosen by name (``bernoulli``, ``gaussian``, ``gaussian-fixed``). A decoder emits
``n_params * D`` numbers per datapoint: the distribution's *parameters* (Bernoulli logits;
Gaussian mean and log-variance), never probabilities squashed for a loss. Normalising constants
are included, so bounds of different likelihoods are comparable densities.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------- Gaussian posterior and prior
def log_normal(x: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """log N(x; mean, diag(exp(log_var))), summed over the last axis. Shapes broadcast."""
    return -0.5 * (LOG_2PI + log_var + (x - mean).pow(2) * torch.exp(-log_var)).sum(-1)


def log_standard_normal(z: Tensor) -> Tensor:
    """log N(z; 0, I), summed over the last axis: the prior log p(z)."""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


def kl_normal_standard(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, diag exp(log_var)) || N(0, I)) per latent dimension, [..., J] (Appendix B).

    -KL = 1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).
    """
    return 0.5 * (mu.pow(2) + torch.exp(log_var) - 1.0 - log_var)


def reparameterize(mu: Tensor, log_var: Tensor, n_samples: int = 1,
                   generator: Optional[torch.Generator] = None) -> Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I). mu, log_var [B, J] -> z [n_samples, B, J]."""
    shape = (n_samples,) + tuple(mu.shape)
    eps = torch.randn(shape, dtype=mu.dtype, device=mu.device, generator=generator)
    return mu + torch.exp(0.5 * log_var) * eps


# ---------------------------------------------------------------- likelihoods p(x|z)
class Likelihood:
    """A factorised likelihood p(x|z) = prod_d p(x_d | params_d(z)).

    ``n_params``: how many numbers the decoder emits per data dimension.
    ``log_prob(x, params)``: x [..., D], params [..., n_params*D] -> [...] nats.
    ``mean(params)``: E[x|z] [..., D]; ``sample(params)``: a draw [..., D].
    ``data_kinds``: which data kinds (see aevb.data.base) the likelihood is a density for.
    """

    name = "likelihood"
    n_params = 1
    data_kinds = ("binary", "unit", "real")

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        raise NotImplementedError

    def sample(self, params: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        raise NotImplementedError

    def check_data(self, x: Tensor, what: str = "the data") -> None:
        """Raise ValueError with a fix when ``x`` holds values the likelihood cannot model."""
        if not torch.isfinite(x).all():
            raise ValueError(f"{what} contains NaN or infinite values; clean the data first")

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class Bernoulli(Likelihood):
    """p(x_d|z) = Bernoulli(sigmoid(logit_d)). log p = x*logit - softplus(logit) (stable).

    For grey levels in [0, 1] this is the negative binary cross-entropy (as in the PyTorch VAE
    example); it is a proper density only for binary data.
    """

    name = "bernoulli"
    n_params = 1
    data_kinds = ("binary", "unit")

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return (x * params - F.softplus(params)).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    def sample(self, params, generator=None):
        return torch.bernoulli(torch.sigmoid(params), generator=generator)

    def check_data(self, x: Tensor, what: str = "the data") -> None:
        super().check_data(x, what)
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{what} has values in [{lo:g}, {hi:g}], but the Bernoulli likelihood needs values in "
                "[0, 1]; scale the data to [0, 1] or choose --likelihood gaussian")


class Gaussian(Likelihood):
    """p(x_d|z) = N(mean_d, exp(log_var_d)), both emitted by the decoder.

    ``mean_activation='sigmoid'`` squashes the mean into (0, 1) (the AEVB paper's Frey Face
    decoder). ``min_log_var`` floors the log-variance (softly, via softplus) so that the density of
    data on a grid cannot diverge.
    """

    name = "gaussian"
    n_params = 2

    def __init__(self, mean_activation: str = "identity", min_log_var: Optional[float] = None):
        if mean_activation not in ("identity", "sigmoid"):
            raise ValueError(f"mean_activation must be 'identity' or 'sigmoid', not {mean_activation!r}")
        self.mean_activation = mean_activation
        self.min_log_var = min_log_var

    def split(self, params: Tensor):
        mean, log_var = params.chunk(2, dim=-1)
        if self.mean_activation == "sigmoid":
            mean = torch.sigmoid(mean)
        if self.min_log_var is not None:
            log_var = self.min_log_var + F.softplus(log_var - self.min_log_var)
        return mean, log_var

    def log_prob(self, x, params):
        mean, log_var = self.split(params)
        return log_normal(x, mean, log_var)

    def mean(self, params):
        return self.split(params)[0]

    def sample(self, params, generator=None):
        mean, log_var = self.split(params)
        eps = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device, generator=generator)
        return mean + torch.exp(0.5 * log_var) * eps

    def extra_repr(self):
        return f"mean_activation={self.mean_activation!r}, min_log_var={self.min_log_var}"


class GaussianFixed(Likelihood):
    """p(x_d|z) = N(mean_d, sigma^2) with a given sigma. With sigma = 1 the negative
    log-likelihood is half the squared error plus D/2 log(2 pi): the MSE tutorial's loss."""

    name = "gaussian-fixed"
    n_params = 1

    def __init__(self, sigma: float = 1.0, mean_activation: str = "identity"):
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        if mean_activation not in ("identity", "sigmoid"):
            raise ValueError(f"mean_activation must be 'identity' or 'sigmoid', not {mean_activation!r}")
        self.sigma = float(sigma)
        self.mean_activation = mean_activation
        self._log_var = 2.0 * math.log(self.sigma)

    def mean(self, params):
        return torch.sigmoid(params) if self.mean_activation == "sigmoid" else params

    def log_prob(self, x, params):
        d = x.shape[-1]
        sq = (x - self.mean(params)).pow(2).sum(-1)
        return -0.5 * (d * (LOG_2PI + self._log_var) + sq / self.sigma ** 2)

    def sample(self, params, generator=None):
        mean = self.mean(params)
        eps = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device, generator=generator)
        return mean + self.sigma * eps

    def extra_repr(self):
        return f"sigma={self.sigma}, mean_activation={self.mean_activation!r}"


LIKELIHOODS = {"bernoulli": Bernoulli, "gaussian": Gaussian, "gaussian-fixed": GaussianFixed}


def get_likelihood(name: str, sigma: float = 1.0, mean_activation: str = "identity",
                   min_log_var: Optional[float] = None) -> Likelihood:
    """Build a likelihood by name; unknown names raise ValueError listing the valid ones."""
    if name == "bernoulli":
        return Bernoulli()
    if name == "gaussian":
        return Gaussian(mean_activation=mean_activation, min_log_var=min_log_var)
    if name == "gaussian-fixed":
        return GaussianFixed(sigma=sigma, mean_activation=mean_activation)
    raise ValueError(f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}")
