"""The pieces of stacked stochastic layers z_1 (bottom, next to x) ... z_L (top), as in the
two-layer models of Burda, Grosse & Salakhutdinov (2016, IWAE, section 5) and the ladder VAE of
Sønderby et al. (2016); aevb.latent assembles them into latent cells.

Generative model: p(z_L) (the model's prior) p(z_{L-1} | z_L) ... p(z_1 | z_2) p(x | z_1), each
conditional a diagonal Gaussian from an MLP (:class:`ConditionalGaussian`). The full latent
vector is z = [z_1, ..., z_L] (concatenated, sum of the sizes); the decoder reads z_1 only.

Inference, two kinds:

- ``bottom-up`` (IWAE): q(z_1 | x) q(z_2 | z_1) ... q(z_L | z_{L-1}); each q an MLP of the layer
  below's sample.
- ``top-down`` (ladder): a deterministic bottom-up pass gives each layer's data term
  (mu_hat_l, s_hat_l); sampling runs from the top, and each lower layer combines its data term
  with the generative p(z_l | z_{l+1}) by precision weighting (:func:`precision_weighted`),
  1/s^2 = 1/s_hat^2 + 1/s_p^2, mu = (mu_hat / s_hat^2 + mu_p / s_p^2) s^2,
  so inference shares the generative path (Sønderby et al., eq. 17-19).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

from .networks import mlp

# how stacked layers are inferred (--inference)
INFERENCE = ("bottom-up", "top-down")


def stack_hidden(sizes) -> list:
    """Deterministic layers between two stochastic ones when --latent-hidden is not given: two
    of twice the upper layer's size (the IWAE paper's 100-100 between 100 and 50 latents)."""
    return [2 * int(sizes[-1])] * 2


class ConditionalGaussian(nn.Module):
    """An MLP n_in -> hidden -> (mu, log_var) of n_out latents: q(z_{l+1} | z_l) or p(z_l | z_{l+1})."""

    def __init__(self, n_in: int, hidden: Sequence[int], n_out: int, act: str):
        super().__init__()
        self.net = mlp(n_in, hidden, 2 * n_out, act)

    def forward(self, h: Tensor) -> Tuple[Tensor, Tensor]:
        mu, log_var = self.net(h).chunk(2, dim=-1)
        return mu, log_var


def stacked_networks(sizes: Sequence[int], hidden: Sequence[int], act: str) -> Tuple[List[nn.Module], List[nn.Module]]:
    """(q_nets, p_nets) between layers of ``sizes`` (bottom first): q_nets[l] maps z_{l+1}'s
    input below to its Gaussian, p_nets[l] gives p(z_{l+1} | z_{l+2}) (0-based: layer l from l+1).
    Every q_net is built before every p_net (the order their initial weights are drawn in)."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    q_nets = [ConditionalGaussian(lo, hidden, hi, act) for lo, hi in pairs]
    p_nets = [ConditionalGaussian(hi, list(reversed(hidden)), lo, act) for lo, hi in pairs]
    return q_nets, p_nets


def precision_weighted(mu_hat: Tensor, lv_hat: Tensor, mu_p: Tensor, lv_p: Tensor) -> Tuple[Tensor, Tensor]:
    """The ladder VAE's combination of a data term and a prior term (both diagonal Gaussians):
    the normalised product N(mu_hat, s_hat^2) N(mu_p, s_p^2), as (mu, log_var)."""
    p_hat, p_p = torch.exp(-lv_hat), torch.exp(-lv_p)
    log_var = -torch.logaddexp(-lv_hat, -lv_p)
    return (mu_hat * p_hat + mu_p * p_p) * torch.exp(log_var), log_var
