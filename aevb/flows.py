"""Normalising flows on top of the Gaussian posterior: z_0 = mu + sigma * eps, z_K = f_K(...f_1(z_0)),

    log q(z_K | x) = log N(z_0; mu, sigma^2) - sum_k log |det d f_k / d z_{k-1}|.

- ``planar`` (Rezende & Mohamed 2015): f(z) = z + u_hat tanh(w . z + b), with u_hat the
  invertible reparameterisation of u (their appendix A: w . u_hat >= -1).
- ``iaf`` (Kingma et al. 2016, inverse autoregressive flow): a masked autoregressive network
  (MADE) gives m and s from z, and z' = sigmoid(s) * z + (1 - sigmoid(s)) * m, the paper's
  numerically stable form; log det = sum log sigmoid(s). The order of the latents is reversed
  between steps.

Both are amortised: every step reads a context c(x) [..., C], here the base posterior's
parameters (mu, log_var) concatenated, so the flow can differ between datapoints. Planar steps
take (u, w, b) from a linear map of c; IAF steps add a linear map of c to the MADE's hidden layer.
Shapes: z [..., J] with any leading axes; the context broadcasts against them.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# each flow --flow names, with its steps when --flow-steps is not given
FLOW_STEPS = {"planar": 10, "iaf": 2}
# the --flow choices ("none": the Gaussian posterior of the AEVB paper)
FLOWS = ("none",) + tuple(FLOW_STEPS)


class PlanarStep(nn.Module):
    """One planar step with (u, w, b) = a linear map of the context."""

    def __init__(self, latent_dim: int, context_dim: int):
        super().__init__()
        self.J = int(latent_dim)
        self.params = nn.Linear(context_dim, 2 * self.J + 1)
        nn.init.normal_(self.params.weight, 0.0, 0.01)
        nn.init.zeros_(self.params.bias)

    def forward(self, z: Tensor, context: Tensor) -> Tuple[Tensor, Tensor]:
        p = self.params(context)
        u, w, b = p[..., :self.J], p[..., self.J:2 * self.J], p[..., 2 * self.J:]
        wu = (w * u).sum(-1, keepdim=True)
        u_hat = u + (F.softplus(wu) - 1.0 - wu) * w / (w * w).sum(-1, keepdim=True).clamp_min(1e-12)
        a = (w * z).sum(-1, keepdim=True) + b
        h = torch.tanh(a)
        psi = (1.0 - h * h) * w  # h'(a) w
        log_det = torch.log((1.0 + (psi * u_hat).sum(-1)).abs().clamp_min(1e-12))
        return z + u_hat * h, log_det


class MaskedLinear(nn.Linear):
    """A Linear layer whose weight is multiplied by a fixed 0/1 mask [out, in]."""

    def __init__(self, n_in: int, n_out: int, mask: Tensor):
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask.to(self.weight.dtype).clone())  # saved: weights-only loading builds on the meta device

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def made_masks(latent_dim: int, hidden: int) -> Tuple[Tensor, Tensor]:
    """Masks (input -> hidden [H, J], hidden -> output [J, H]) of a one-hidden-layer MADE:
    output j depends only on inputs before j. Input j has degree j + 1; a hidden unit of degree
    d sees inputs of degree <= d and feeds outputs of degree > d."""
    J = int(latent_dim)
    d_in = torch.arange(1, J + 1)
    d_hidden = torch.arange(int(hidden)) % max(J - 1, 1) + 1 if J > 1 else torch.zeros(int(hidden), dtype=torch.long)
    return (d_hidden[:, None] >= d_in[None, :]).float(), (d_in[:, None] > d_hidden[None, :]).float()


class IAFStep(nn.Module):
    """One IAF step: MADE(z, c) -> (m, s); z' = sigmoid(s) z + (1 - sigmoid(s)) m."""

    def __init__(self, latent_dim: int, context_dim: int, hidden: int, reverse: bool):
        super().__init__()
        J = int(latent_dim)
        m_in, m_out = made_masks(J, hidden)
        self.reverse = bool(reverse)
        self.inp = MaskedLinear(J, hidden, m_in)
        self.ctx = nn.Linear(context_dim, hidden)
        self.m = MaskedLinear(hidden, J, m_out)
        self.s = MaskedLinear(hidden, J, m_out)
        for layer in (self.m, self.s):
            nn.init.normal_(layer.weight, 0.0, 0.01)
        nn.init.zeros_(self.m.bias)
        nn.init.constant_(self.s.bias, 2.0)  # sigmoid(2) = 0.88: a step starts close to the identity

    def forward(self, z: Tensor, context: Tensor) -> Tuple[Tensor, Tensor]:
        zi = z.flip(-1) if self.reverse else z
        h = F.elu(self.inp(zi) + self.ctx(context))
        gate = torch.sigmoid(self.s(h))
        out = gate * zi + (1.0 - gate) * self.m(h)
        log_det = F.logsigmoid(self.s(h)).sum(-1)
        return (out.flip(-1) if self.reverse else out), log_det


class Flow(nn.Module):
    """K steps of one kind; ``forward(z0, context) -> (z_K, sum of log |det|)``, [..., J] and [...]."""

    def __init__(self, kind: str, steps: int, latent_dim: int, hidden: int = 0):
        super().__init__()
        if kind not in FLOWS or kind == "none":
            raise ValueError(f"unknown flow {kind!r}; choose one of {', '.join(FLOWS[1:])}")
        J = int(latent_dim)
        context = 2 * J
        hidden = int(hidden) or max(4 * J, 64)
        self.kind = kind
        if kind == "planar":
            layers: List[nn.Module] = [PlanarStep(J, context) for _ in range(int(steps))]
        else:
            layers = [IAFStep(J, context, hidden, reverse=bool(i % 2)) for i in range(int(steps))]
        self.steps = nn.ModuleList(layers)

    def forward(self, z: Tensor, context: Tensor) -> Tuple[Tensor, Tensor]:
        total = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for step in self.steps:
            z, log_det = step(z, context)
            total = total + log_det
        return z, total
