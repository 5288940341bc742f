"""The objective of one training step: the bound of a batch and the loss minimised.

The SGVB ELBO (L samples, closed-form or Monte Carlo KL) or the IWAE bound L_k, a KL weight
``beta`` with its linear warm-up, bf16 autocast, and dynamic binarization of a batch.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

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


def kl_weight(obj, epoch_progress: float) -> float:
    """beta, ramped linearly from 0 over ``warmup_epochs`` (fractional epochs count)."""
    if obj.warmup_epochs and epoch_progress < obj.warmup_epochs:
        return obj.beta * epoch_progress / obj.warmup_epochs
    return obj.beta


def training_precision(device: torch.device, precision: str):
    """The autocast context of a training step: ``bf16`` runs the networks' matrix products and
    convolutions in bfloat16 (about 2x faster convolutions on CPUs with AMX / AVX512-BF16 and on
    recent GPUs); the VAE casts their outputs back, so the bound is summed in float32."""
    enabled = precision == "bf16" and device.type in ("cpu", "cuda")
    return torch.autocast(device_type=device.type if enabled else "cpu", dtype=torch.bfloat16, enabled=enabled)


def binarize_batch(x: Tensor, dynamic: bool) -> Tensor:
    """Dynamic binarization: a fresh x ~ Bernoulli(x) every time a batch is used."""
    return torch.bernoulli(x) if dynamic else x
