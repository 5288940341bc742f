"""The objective of one training step: the bound of a batch and the loss minimised.

The SGVB ELBO (L samples, closed-form or Monte Carlo KL) or the IWAE bound L_k, a KL weight
``beta`` with its linear warm-up, and the per-batch transform of the data (dynamic
binarization, a background model's perturbation).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ..linear import finite_certificate
from ..model import VAE, BoundTerms


def objective_terms(model: VAE, x: Tensor, obj) -> BoundTerms:
    """The training bound per datapoint: the SGVB ELBO (L samples, closed-form or MC KL) or
    the IWAE bound L_k, with its reconstruction and KL terms for logging."""
    if obj.objective == "iwae":
        return model.iwae(x, obj.k)
    return model.elbo(x, n_samples=obj.samples, kl=obj.kl)


def batch_loss(terms: BoundTerms, obj, beta: float, total: Optional[int] = None) -> Tensor:
    """The minimised loss: minus the mean bound (KL weighted by ``beta`` for the ELBO).

    ``total``: the global batch size when ``terms`` hold one process's shard of it; the loss is
    then minus the shard's sum over ``total``, so the gradients of all shards add up to the
    gradient of the global batch's mean (what data-parallel training sums over processes)."""
    if obj.objective == "iwae" or beta == 1.0:
        per_point = terms.bound
    else:
        per_point = terms.log_px_given_z - beta * terms.kl
    return -per_point.mean() if total is None else -per_point.sum() / total


def step_is_finite(params, loss: Tensor, clip: Optional[float] = None) -> bool:
    """Whether a step may be applied: the loss and every gradient of ``params`` (a list) are
    finite (one device synchronisation per step). The gradients' norm is clipped to ``clip``
    first when given. A non-finite step is left out, not applied: one overflowing batch would
    otherwise write NaN or infinity into every weight and Adam moment at once.

    A NaN or infinity anywhere makes the sum of sums so; a plain sum is the cheapest pass (no
    squares, so no overflow of its own). A wide layer's weight gradient that its backward pass
    proved finite from the batch alone (aevb.linear.finite_certificate) is not read again; where
    that proof fails, every gradient is summed after all."""
    if clip:
        total = torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], clip) + loss.detach()
        return bool(total.isfinite())
    grads = [p.grad for p in params if p.grad is not None]
    proofs = [finite_certificate(g) for g in grads]
    terms = [loss.detach()] + [g.sum() if c is None else c for g, c in zip(grads, proofs)]
    finite = bool(torch.stack(terms).sum().isfinite())
    if finite or all(c is None for c in proofs):
        return finite
    # a proof failed, which a finite gradient may do too: sum those gradients themselves
    terms[1:] = [g.sum() if c is not None else t for g, c, t in zip(grads, proofs, terms[1:])]
    return bool(torch.stack(terms).sum().isfinite())


def poison_if_nonfinite(params, loss: Tensor) -> None:
    """Make the gradients NaN when this process's ``loss`` is not finite (no synchronisation), so
    that after the sum over processes every process sees the same non-finite step and skips it."""
    for p in params:
        if p.grad is not None:
            p.grad.add_(torch.where(torch.isfinite(loss.detach()), 0.0, math.nan).to(p.grad.dtype))
            return


def kl_weight(obj, epoch_progress: float) -> float:
    """beta, ramped linearly from 0 over ``warmup_epochs`` (fractional epochs count)."""
    if obj.warmup_epochs and epoch_progress < obj.warmup_epochs:
        return obj.beta * epoch_progress / obj.warmup_epochs
    return obj.beta


def binarize_batch(x: Tensor, dynamic: bool, perturb: float = 0.0, levels: Optional[int] = None) -> Tensor:
    """The per-batch transform of training data: dynamic binarization (a fresh x ~ Bernoulli(x)
    every time a batch is used), then, with ``perturb`` > 0, the perturbation that trains a
    background model (Ren et al., "Likelihood ratios for out-of-distribution detection", NeurIPS
    2019): each value is replaced, with probability ``perturb``, by a value drawn uniformly from
    the data's ``levels`` (0, 1/(levels - 1), ..., 1; binary after dynamic binarization; uniform in
    [0, 1] when the levels are unknown). Both draw from the global generator, which checkpoints keep."""
    if dynamic:
        x = torch.bernoulli(x)
    if not perturb:
        return x
    levels = 2 if dynamic else levels
    noise = torch.rand_like(x)
    if levels:
        noise = torch.floor(noise * levels).clamp_(max=levels - 1) / (levels - 1)
    return torch.where(torch.rand_like(x) < perturb, noise, x)
