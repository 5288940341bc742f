"""Hybrid (Hamiltonian) Monte Carlo, vectorised over a batch of independent chains.

Every chain has its own position z [B, J] and its own step size; one call of :func:`hmc_step`
advances all chains by one HMC transition (``n_leapfrog`` leapfrog steps followed by a
Metropolis accept/reject), with no Python loop over chains. The step sizes are tuned towards a
target acceptance probability (the AEVB paper: 10 leapfrog steps, acceptance about 90%) by a
per-chain dual averaging during burn-in (Hoffman & Gelman 2014,
the NUTS paper, Algorithm 5), after which the step size is frozen so that the collected samples
come from a valid Markov chain. For chains whose target keeps changing (Monte Carlo EM), a
Robbins-Monro update of the log step size can stay on::

    log eps <- log eps + gain * (alpha - target)

where ``alpha`` = min(1, exp(-dH)) is the chain's acceptance probability of the transition.

``log_prob(z)`` maps z [B, J] to the unnormalised log density of each chain [B] (e.g.
log p(z) + log p(x|z) for the posterior of datapoint x); its gradient is taken with autograd
with respect to z only, so no parameter gradients accumulate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

LogProb = Callable[[Tensor], Tensor]


def _value_and_grad(log_prob: LogProb, z: Tensor):
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        lp = log_prob(z)
        (g,) = torch.autograd.grad(lp.sum(), z)
    return lp.detach(), g.detach()


@dataclass
class HMCState:
    """Positions z [B, J], log step sizes [B], and the cached log density and gradient at z."""

    z: Tensor
    log_step: Tensor
    lp: Optional[Tensor] = None
    grad: Optional[Tensor] = None

    @classmethod
    def init(cls, z0: Tensor, step_size: float = 0.1) -> "HMCState":
        return cls(z0.detach().clone(), torch.full(z0.shape[:1], math.log(step_size), dtype=z0.dtype,
                                                   device=z0.device))


def hmc_step(log_prob: LogProb, state: HMCState, n_leapfrog: int = 10, target_accept: float = 0.9,
             adapt_gain: float = 0.0, generator: Optional[torch.Generator] = None,
             refresh: bool = False, jitter: float = 0.3) -> Tensor:
    """One HMC transition for every chain, in place on ``state``; returns the acceptance
    probabilities [B]. ``adapt_gain > 0`` moves each log step size towards ``target_accept``.
    ``refresh``: recompute the cached log density (needed when ``log_prob`` changed, e.g. after a
    parameter update in Monte Carlo EM). ``jitter``: each transition uses the step size times a
    uniform factor in [1 - jitter, 1 + jitter] (Neal 2011), so that a trajectory cannot be
    locked onto a period of the target in some direction."""
    z = state.z
    if refresh or state.lp is None:
        state.lp, state.grad = _value_and_grad(log_prob, z)
    lp0, g = state.lp, state.grad
    eps = torch.exp(state.log_step).unsqueeze(-1)  # [B, 1]
    if jitter > 0:  # random step size around eps: avoids periodic (non-mixing) trajectories
        u = torch.rand(eps.shape, dtype=eps.dtype, device=eps.device, generator=generator)
        eps = eps * (1.0 + jitter * (2.0 * u - 1.0))
    p0 = torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=generator)
    # leapfrog
    p = p0 + 0.5 * eps * g
    q = z
    for i in range(n_leapfrog):
        q = q + eps * p
        lp, g_new = _value_and_grad(log_prob, q)
        if i < n_leapfrog - 1:
            p = p + eps * g_new
    p = p + 0.5 * eps * g_new
    h0 = -lp0 + 0.5 * p0.pow(2).sum(-1)
    h1 = -lp + 0.5 * p.pow(2).sum(-1)
    log_alpha = (h0 - h1).clamp(max=0.0)
    log_alpha = torch.where(torch.isfinite(log_alpha), log_alpha, torch.full_like(log_alpha, -math.inf))
    alpha = torch.exp(log_alpha)
    u = torch.rand(alpha.shape, dtype=alpha.dtype, device=alpha.device, generator=generator)
    accept = u < alpha
    a = accept.unsqueeze(-1)
    state.z = torch.where(a, q, z).detach()
    state.lp = torch.where(accept, lp, lp0)
    state.grad = torch.where(a, g_new, g)
    if adapt_gain > 0:
        state.log_step = (state.log_step + adapt_gain * (alpha - target_accept)).clamp(-12.0, 2.0)
    return alpha


def dual_averaging_burn_in(log_prob: LogProb, st: HMCState, n_steps: int, n_leapfrog: int = 10,
                           target_accept: float = 0.9, generator: Optional[torch.Generator] = None,
                           gamma: float = 0.05, t0: float = 10.0, kappa: float = 0.75) -> Tensor:
    """``n_steps`` HMC transitions with per-chain dual-averaging step-size adaptation; the final
    (averaged) step size is left in ``st.log_step``. Returns the mean acceptance [B]."""
    mu = st.log_step + math.log(10.0)
    h_bar = torch.zeros_like(st.log_step)
    log_bar = torch.zeros_like(st.log_step)
    acc = torch.zeros_like(st.log_step)
    for t in range(1, n_steps + 1):
        alpha = hmc_step(log_prob, st, n_leapfrog, target_accept, adapt_gain=0.0, generator=generator)
        acc += alpha
        w = 1.0 / (t + t0)
        h_bar = (1 - w) * h_bar + w * (target_accept - alpha)
        st.log_step = (mu - math.sqrt(t) / gamma * h_bar).clamp(-12.0, 2.0)
        eta = t ** (-kappa)
        log_bar = eta * st.log_step + (1 - eta) * log_bar
    st.log_step = log_bar
    return acc / max(1, n_steps)


@dataclass
class HMCResult:
    """``samples`` [S, B, J]; ``accept`` [B] mean acceptance probability after burn-in;
    ``step_size`` [B] final step sizes; ``state`` to continue the chains."""

    samples: Tensor
    accept: Tensor
    step_size: Tensor
    state: HMCState


def hmc_sample(log_prob: LogProb, z0: Tensor, n_samples: int, burn_in: int = 100,
               n_leapfrog: int = 10, step_size: float = 0.1, target_accept: float = 0.9,
               adapt_during_sampling: bool = False, thin: int = 1,
               generator: Optional[torch.Generator] = None,
               state: Optional[HMCState] = None) -> HMCResult:
    """Run ``burn_in`` transitions with dual-averaging step-size adaptation, then collect
    ``n_samples`` states (every ``thin``-th transition) with the step size frozen (a valid
    Markov chain) unless ``adapt_during_sampling``. Chains start at ``z0`` [B, J] (or continue
    ``state``)."""
    st = state if state is not None else HMCState.init(z0, step_size)
    if burn_in > 0:
        dual_averaging_burn_in(log_prob, st, burn_in, n_leapfrog, target_accept, generator)
    samples, acc = [], torch.zeros(st.z.shape[0], dtype=st.z.dtype, device=st.z.device)
    n_steps = n_samples * thin
    for t in range(n_steps):
        gain = 0.05 if adapt_during_sampling else 0.0
        acc += hmc_step(log_prob, st, n_leapfrog, target_accept, adapt_gain=gain, generator=generator)
        if (t + 1) % thin == 0:
            samples.append(st.z.clone())
    out = torch.stack(samples) if samples else st.z.new_zeros((0,) + tuple(st.z.shape))
    return HMCResult(out, acc / max(1, n_steps), torch.exp(st.log_step), st)


def posterior_log_prob(model, x: Tensor) -> LogProb:
    """The unnormalised log posterior log p(z) + log p(x|z) of a VAE's generative model for each
    datapoint of x [B, D], as a function of z [B, J] (or [S, B, J])."""
    def f(z: Tensor) -> Tensor:
        return model.log_p_z(z) + model.likelihood.log_prob(x, model.decoder_params(z))
    return f
