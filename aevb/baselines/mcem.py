"""Monte Carlo EM with Hybrid Monte Carlo, the AEVB paper's second baseline (Figure 3).

Each training datapoint owns a persistent HMC chain z_i (and its own step size). For a minibatch:

* E-step: ``hmc_steps`` HMC transitions (``n_leapfrog`` = 10 leapfrog steps) of the chains of
  the minibatch, on the posterior p(z|x) of the current decoder, all chains at once. One step
  size is shared by all chains and tuned towards ``target_accept`` = 0.9 after every transition
  by a Robbins-Monro update of its logarithm with the minibatch's mean acceptance probability
  (a per-chain step size would adapt far too slowly: a chain is visited once per epoch);
* M-step: ``m_steps`` = 5 optimizer updates of the decoder maximising log p(x|z) at the chains'
  current states (log p(z) has no parameters).

The encoder of the VAE is not used. The model has no recognition model, so it is evaluated by the
marginal likelihood (Appendix D, :mod:`aevb.baselines.marginal_likelihood`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..optimizers import build_optimizer
from .hmc import HMCState, hmc_step, posterior_log_prob


class MCEM:
    def __init__(self, model, n_train: int, decoder_opt: torch.optim.Optimizer, n_leapfrog: int = 10,
                 target_accept: float = 0.9, hmc_steps: int = 1, m_steps: int = 5, step_size: float = 0.05,
                 adapt_gain: float = 0.1, init_burn_in: int = 5):
        p = next(model.parameters())
        self.model, self.decoder_opt = model, decoder_opt
        self.n_leapfrog, self.target_accept = n_leapfrog, target_accept
        self.hmc_steps, self.m_steps, self.adapt_gain = hmc_steps, m_steps, adapt_gain
        self.init_burn_in = init_burn_in
        g = torch.Generator().manual_seed(12345)
        self.z = torch.randn(n_train, model.latent_dim, generator=g).to(dtype=p.dtype, device=p.device)
        self.log_step = torch.tensor(math.log(step_size), dtype=p.dtype, device=p.device)
        self.visits = torch.zeros(n_train, dtype=torch.long, device=p.device)
        self.last_accept = float("nan")

    @classmethod
    def from_config(cls, model, n_train: int, optim_cfg, **kw) -> "MCEM":
        return cls(model, n_train, build_optimizer(model.decoder.parameters(), optim_cfg), **kw)

    def e_step(self, x: Tensor, idx: Tensor) -> Tensor:
        """Advance the chains of datapoints ``idx`` (rows x); returns their states [B, J]."""
        st = HMCState(self.z[idx], self.log_step.expand(len(idx)).clone())
        lp = posterior_log_prob(self.model, x)
        # chains visited for the first time get a short burn-in from their prior draw
        n = self.hmc_steps + (self.init_burn_in if bool((self.visits[idx] == 0).any()) else 0)
        acc = []
        for _ in range(n):
            alpha = hmc_step(lp, st, self.n_leapfrog, self.target_accept)
            self.log_step = (self.log_step + self.adapt_gain * (alpha.mean() - self.target_accept)).clamp(-12.0, 2.0)
            st.log_step = self.log_step.expand(len(idx)).clone()
            acc.append(alpha)
        self.z[idx] = st.z
        self.visits[idx] += 1
        self.last_accept = float(torch.stack(acc).mean())
        return st.z

    def m_step(self, x: Tensor, z: Tensor) -> float:
        obj = None
        for _ in range(self.m_steps):
            obj = self.model.log_p_x_given_z(x, z.unsqueeze(0)).mean()
            self.decoder_opt.zero_grad(set_to_none=True)
            (-obj).backward()
            self.decoder_opt.step()
        return obj.item()

    def step(self, x: Tensor, idx: Tensor) -> dict:
        z = self.e_step(x, idx)
        return {"log_px_given_z": self.m_step(x, z), "accept": self.last_accept}

    def state_dict(self) -> dict:
        return {"decoder_opt": self.decoder_opt.state_dict(), "z": self.z, "log_step": self.log_step,
                "visits": self.visits}

    def load_state_dict(self, d: dict) -> None:
        self.decoder_opt.load_state_dict(d["decoder_opt"])
        self.z, self.log_step, self.visits = d["z"], d["log_step"], d["visits"]
