"""Mean-field (per-datapoint) variational inference against amortized inference.

For a fixed, trained decoder, every datapoint gets its own free Gaussian q_i(z) = N(mu_i,
diag exp(log_var_i)); all of them are optimised at once with Adam on the SGVB ELBO (closed-form
KL), batched over the datapoints. Compared with the encoder's q(z|x), the difference of the two
ELBOs is the *amortization gap* (Cremer, Li & Duvenaud, 2018): what a single recognition network
loses against the best Gaussian per datapoint.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from torch import Tensor

from ..distributions import kl_normal_standard


def elbo_given_q(model, x: Tensor, mu: Tensor, log_var: Tensor, n_samples: int = 1) -> Tensor:
    """The SGVB ELBO per datapoint [B] for given Gaussian parameters (closed-form KL)."""
    eps = torch.randn((n_samples,) + tuple(mu.shape), dtype=mu.dtype, device=mu.device)
    z = mu + torch.exp(0.5 * log_var) * eps
    return model.log_p_x_given_z(x, z).mean(0) - kl_normal_standard(mu, log_var).sum(-1)


@torch.no_grad()
def evaluate_elbo(model, x: Tensor, mu: Tensor, log_var: Tensor, n_samples: int = 100, seed: int = 0) -> Tensor:
    """A low-variance ELBO per datapoint (``n_samples`` samples, seeded), for comparisons."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return elbo_given_q(model, x, mu, log_var, n_samples)


@dataclass
class MeanFieldResult:
    mu: Tensor
    log_var: Tensor
    seconds: float  # wall time of the optimisation (all datapoints together)
    history: List[dict] = field(default_factory=list)  # {"step", "elbo"} (mean over datapoints)


def fit_mean_field(model, x: Tensor, steps: int = 1000, lr: float = 0.05, n_samples: int = 1,
                   init: str = "prior", record_every: int = 50, eval_samples: int = 100,
                   mu0: Optional[Tensor] = None, log_var0: Optional[Tensor] = None) -> MeanFieldResult:
    """Optimise free (mu_i, log_var_i) for every row of x with Adam (the decoder is fixed).

    ``init``: 'prior' (mu = 0, log_var = 0, the classical mean-field start) or 'encoder' (start at
    the encoder's output, so the result can only improve on amortized inference).
    """
    if mu0 is None:
        if init == "encoder":
            with torch.no_grad():
                mu0, log_var0 = model.encoder_params(x)
        elif init == "prior":
            mu0 = torch.zeros(len(x), model.latent_dim, dtype=x.dtype, device=x.device)
            log_var0 = torch.zeros_like(mu0)
        else:
            raise ValueError(f"init must be 'prior' or 'encoder', not {init!r}")
    mu = mu0.detach().clone().requires_grad_(True)
    log_var = log_var0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([mu, log_var], lr=lr)
    req = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    history, seconds = [], 0.0
    try:
        for step in range(steps + 1):
            if record_every and (step % record_every == 0 or step == steps):
                e = evaluate_elbo(model, x, mu.detach(), log_var.detach(), eval_samples)
                history.append({"step": step, "elbo": float(e.mean())})
            if step == steps:
                break
            t0 = time.perf_counter()
            loss = -elbo_given_q(model, x, mu, log_var, n_samples).sum()  # sum: independent per datapoint
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seconds += time.perf_counter() - t0
    finally:
        for p, r in zip(model.parameters(), req):
            p.requires_grad_(r)
    return MeanFieldResult(mu.detach(), log_var.detach(), seconds, history)


@torch.no_grad()
def amortized_q(model, x: Tensor):
    """The encoder's (mu, log_var) and the wall time of computing them."""
    t0 = time.perf_counter()
    mu, log_var = model.encoder_params(x)
    return mu, log_var, time.perf_counter() - t0


def amortization_gap(model, x: Tensor, steps: int = 1000, lr: float = 0.05, init: str = "prior",
                     eval_samples: int = 100, record_every: int = 50) -> dict:
    """Mean-field against amortized inference on the rows of x: ELBOs (nats, mean per datapoint),
    their difference (the amortization gap, >= 0 when mean-field converged) and seconds per
    datapoint for each."""
    mu_a, lv_a, t_a = amortized_q(model, x)
    elbo_a = evaluate_elbo(model, x, mu_a, lv_a, eval_samples)
    mf = fit_mean_field(model, x, steps=steps, lr=lr, init=init, record_every=record_every,
                        eval_samples=eval_samples)
    elbo_m = evaluate_elbo(model, x, mf.mu, mf.log_var, eval_samples)
    return {"n": len(x), "amortized_elbo": float(elbo_a.mean()), "mean_field_elbo": float(elbo_m.mean()),
            "gap": float((elbo_m - elbo_a).mean()), "amortized_s_per_point": t_a / len(x),
            "mean_field_s_per_point": mf.seconds / len(x), "steps": steps, "init": init,
            "history": mf.history, "per_point_gap": (elbo_m - elbo_a)}
