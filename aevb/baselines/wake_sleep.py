"""The wake-sleep algorithm (Hinton, Dayan, Frey & Neal, 1995) for a VAE's generative model
p(z) p(x|z) and recognition model q(z|x), the baseline of the AEVB paper's Figure 2 and 3.

* wake phase: z ~ q(z|x) for real data x (no gradient through the sample), then a gradient step
  on the *decoder* maximising log p(x, z) = log p(z) + log p(x|z);
* sleep phase: "dreams" z ~ p(z), x ~ p(x|z) from the current generative model, then a gradient
  step on the *encoder* maximising log q(z|x).

Wake-sleep optimises no single objective; as in the paper, its progress is measured by the ELBO
with its recognition model as q (``model.elbo``), or by the marginal likelihood.
The two phases have their own optimizers (the paper: Adagrad for every method).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..optimizers import build_optimizer


def wake_objective(model, x: Tensor, n_samples: int = 1) -> Tensor:
    """Mean over the batch of log p(x, z) with z ~ q(z|x) held fixed (gradient: decoder only)."""
    with torch.no_grad():
        mu, log_var = model.encoder_params(x)
        z = mu + torch.exp(0.5 * log_var) * torch.randn((n_samples,) + tuple(mu.shape), dtype=mu.dtype,
                                                        device=mu.device)
    return (model.log_p_z(z) + model.log_p_x_given_z(x, z)).mean()


def dream(model, n: int, dtype=None, device=None):
    """(z, x): n draws z ~ p(z), x ~ p(x|z) (a sample of the likelihood, not its mean)."""
    p = next(model.parameters())
    with torch.no_grad():
        z = torch.randn(n, model.latent_dim, dtype=dtype or p.dtype, device=device or p.device)
        x = model.likelihood.sample(model.decoder_params(z))
    return z, x


def sleep_objective(model, z: Tensor, x: Tensor) -> Tensor:
    """Mean of log q(z|x) on dreamed pairs (gradient: encoder only)."""
    mu, log_var = model.encoder_params(x)
    return model.log_q_z_given_x(z.unsqueeze(0), mu, log_var).mean()


class WakeSleep:
    """One wake step and one sleep step per call of :meth:`step`.

    ``decoder_opt`` / ``encoder_opt``: optimizers over ``model.decoder`` / ``model.encoder``
    parameters (built from an OptimConfig with :meth:`from_config`). The sleep phase dreams as
    many pairs as the wake minibatch has datapoints (``sleep_batch`` to change it).
    """

    def __init__(self, model, decoder_opt: torch.optim.Optimizer, encoder_opt: torch.optim.Optimizer,
                 sleep_batch: Optional[int] = None):
        self.model, self.decoder_opt, self.encoder_opt = model, decoder_opt, encoder_opt
        self.sleep_batch = sleep_batch

    @classmethod
    def from_config(cls, model, optim_cfg, sleep_batch: Optional[int] = None) -> "WakeSleep":
        return cls(model, build_optimizer(model.decoder.parameters(), optim_cfg),
                   build_optimizer(model.encoder.parameters(), optim_cfg), sleep_batch)

    def wake(self, x: Tensor) -> float:
        obj = wake_objective(self.model, x)
        self.decoder_opt.zero_grad(set_to_none=True)
        (-obj).backward()
        self.decoder_opt.step()
        return obj.item()

    def sleep(self, n: int) -> float:
        z, x = dream(self.model, n)
        obj = sleep_objective(self.model, z, x)
        self.encoder_opt.zero_grad(set_to_none=True)
        (-obj).backward()
        self.encoder_opt.step()
        return obj.item()

    def step(self, x: Tensor, idx: Optional[Tensor] = None) -> dict:
        """One wake and one sleep step on the minibatch ``x`` (``idx``, its rows' positions, is
        not needed: the training loop passes it to every method)."""
        w = self.wake(x)
        s = self.sleep(self.sleep_batch or len(x))
        return {"wake": w, "sleep": s}

    def state_dict(self) -> dict:
        return {"decoder_opt": self.decoder_opt.state_dict(), "encoder_opt": self.encoder_opt.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        self.decoder_opt.load_state_dict(d["decoder_opt"])
        self.encoder_opt.load_state_dict(d["encoder_opt"])
