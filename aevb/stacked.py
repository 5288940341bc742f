"""Stacked stochastic layers z_1 (bottom, next to x) ... z_L (top), as in the two-layer models of
Burda, Grosse & Salakhutdinov (2016, IWAE, section 5) and the ladder VAE of Sønderby et al. (2016).

Generative model: p(z_L) (the model's prior) p(z_{L-1} | z_L) ... p(z_1 | z_2) p(x | z_1), each
conditional a diagonal Gaussian from an MLP. The full latent vector is z = [z_1, ..., z_L]
(concatenated, sum of the sizes); the decoder reads z_1 only.

Inference, two kinds:

- ``bottom-up`` (IWAE): q(z_1 | x) q(z_2 | z_1) ... q(z_L | z_{L-1}); each q an MLP of the layer
  below's sample.
- ``top-down`` (ladder): a deterministic bottom-up pass gives each layer's data term
  (mu_hat_l, s_hat_l); sampling runs from the top, and each lower layer combines its data term
  with the generative p(z_l | z_{l+1}) by precision weighting,
  1/s^2 = 1/s_hat^2 + 1/s_p^2, mu = (mu_hat / s_hat^2 + mu_p / s_p^2) s^2,
  so inference shares the generative path (Sønderby et al., eq. 17-19).

Noise for one sample is one vector eps [..., sum of sizes] (layer by layer, bottom first), so the
bound engine's seeded noise covers every layer. The encoder's (mu, log_var) are z_1's data term.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

from .distributions import log_normal
from .networks import mlp

# how stacked layers are inferred (--inference)
INFERENCE = ("bottom-up", "top-down")


class Gaussian(nn.Module):
    """An MLP n_in -> hidden -> (mu, log_var) of n_out latents."""

    def __init__(self, n_in: int, hidden: Sequence[int], n_out: int, act: str):
        super().__init__()
        self.net = mlp(n_in, hidden, 2 * n_out, act)

    def forward(self, h: Tensor) -> Tuple[Tensor, Tensor]:
        mu, log_var = self.net(h).chunk(2, dim=-1)
        return mu, log_var


def precision_weighted(mu_hat: Tensor, lv_hat: Tensor, mu_p: Tensor, lv_p: Tensor) -> Tuple[Tensor, Tensor]:
    """The ladder VAE's combination of a data term and a prior term (both diagonal Gaussians):
    the normalised product N(mu_hat, s_hat^2) N(mu_p, s_p^2), as (mu, log_var)."""
    p_hat, p_p = torch.exp(-lv_hat), torch.exp(-lv_p)
    log_var = -torch.logaddexp(-lv_hat, -lv_p)
    return (mu_hat * p_hat + mu_p * p_p) * torch.exp(log_var), log_var


class LatentStack(nn.Module):
    """The layers above z_1: for each l = 1..L-1 a generative p(z_l | z_{l+1}) and an inference
    network, q(z_{l+1} | z_l) (bottom-up) or the data term of z_{l+1} from z_l's (top-down).

    ``sizes``: [J_1, ..., J_L]; ``hidden``: the deterministic layers between two stochastic ones.
    """

    def __init__(self, sizes: Sequence[int], hidden: Sequence[int], act: str, inference: str):
        super().__init__()
        if inference not in INFERENCE:
            raise ValueError(f"unknown inference {inference!r}; choose one of {', '.join(INFERENCE)}")
        self.sizes = [int(s) for s in sizes]
        self.inference = inference
        pairs = list(zip(self.sizes[:-1], self.sizes[1:]))
        self.up = nn.ModuleList(Gaussian(lo, hidden, hi, act) for lo, hi in pairs)
        self.down = nn.ModuleList(Gaussian(hi, list(reversed(hidden)), lo, act) for lo, hi in pairs)

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def split(self, z: Tensor) -> List[Tensor]:
        """[z_1, ..., z_L] of a full latent vector [..., sum of sizes]."""
        return list(torch.split(z, self.sizes, dim=-1))

    def data_terms(self, mu1: Tensor, lv1: Tensor) -> List[Tuple[Tensor, Tensor]]:
        """Top-down inference's deterministic bottom-up pass: (mu_hat_l, log_var_hat_l) per layer."""
        terms = [(mu1, lv1)]
        for up in self.up:
            terms.append(up(terms[-1][0]))
        return terms

    def sample(self, eps: Tensor, mu1: Tensor, lv1: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(z [..., total], log q(z|x) [...], log q per layer [..., L]) for noise eps
        [..., total] and z_1's data term (mu1, lv1) (broadcast against eps)."""
        noise = self.split(eps)
        if self.inference == "bottom-up":
            z = [mu1 + torch.exp(0.5 * lv1) * noise[0]]
            log_q = [log_normal(z[0], mu1, lv1)]
            for l, up in enumerate(self.up):
                mu, lv = up(z[-1])
                z.append(mu + torch.exp(0.5 * lv) * noise[l + 1])
                log_q.append(log_normal(z[-1], mu, lv))
        else:
            terms = self.data_terms(mu1, lv1)
            mu, lv = terms[-1]
            top = mu + torch.exp(0.5 * lv) * noise[-1]
            z, log_q = [top], [log_normal(top, mu, lv)]
            for l in range(len(self.sizes) - 2, -1, -1):
                mu_p, lv_p = self.down[l](z[0])
                mu_hat, lv_hat = terms[l]
                mu, lv = precision_weighted(mu_hat, lv_hat, mu_p, lv_p)
                zl = mu + torch.exp(0.5 * lv) * noise[l]
                z.insert(0, zl)
                log_q.insert(0, log_normal(zl, mu, lv))
        per_layer = torch.stack(log_q, -1)
        return torch.cat(z, -1), per_layer.sum(-1), per_layer

    def means(self, mu1: Tensor, lv1: Tensor) -> Tuple[Tensor, Tensor]:
        """(means, log-variances) [..., total] of q along its mean path (every noise 0): the code
        of a datapoint."""
        z = self.sample(torch.zeros(*mu1.shape[:-1], self.total, dtype=mu1.dtype, device=mu1.device), mu1, lv1)[0]
        zs = self.split(z)
        if self.inference == "bottom-up":
            lvs = [lv1] + [up(zl)[1] for up, zl in zip(self.up, zs[:-1])]
        else:
            terms = self.data_terms(mu1, lv1)
            lvs = [None] * len(zs)
            lvs[-1] = terms[-1][1]
            for l in range(len(self.sizes) - 2, -1, -1):
                _, lv_p = self.down[l](zs[l + 1])
                lvs[l] = -torch.logaddexp(-terms[l][1], -lv_p)
        return z, torch.cat(lvs, -1)

    def log_p_lower(self, z: Tensor) -> Tensor:
        """log p(z_l | z_{l+1}) for every layer below the top, [..., L - 1]."""
        zs = self.split(z)
        return torch.stack([log_normal(zs[l], *self.down[l](zs[l + 1])) for l in range(len(self.down))], -1)

    def sample_down(self, top: Tensor, generator: torch.Generator) -> Tensor:
        """A full z [n, total] from top-layer draws ``top`` [n, J_L] (on the model's device), each
        lower layer drawn from p(z_l | z_{l+1}) with noise from the CPU ``generator``."""
        z = [top]
        for l in range(len(self.sizes) - 2, -1, -1):
            mu, lv = self.down[l](z[0])
            eps = torch.randn(mu.shape, generator=generator, dtype=torch.float32).to(mu)
            z.insert(0, mu + torch.exp(0.5 * lv) * eps)
        return torch.cat(z, -1)
