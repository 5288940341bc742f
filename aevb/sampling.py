"""The one way to draw from a model and to reconstruct data, for every picture aevb makes: the
trainer's per-epoch grids, ``aevb sample``, ``aevb reconstruct``, the figures and the explorer.

Prior draws come from a CPU generator seeded with ``seed`` (``model.draw_prior``), so the same
seed gives the same z, and the same pictures up to the decoder's arithmetic, on any device. A
draw x ~ p(x|z) (:func:`prior_samples` with ``draw=True``) continues that generator on the CPU,
so it is seeded too. Results are CPU tensors; the model's train/eval mode is restored.

Only torch and the bound engine's posterior means are used here (no matplotlib), so the model and
training can import it cheaply.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor

from .bounds import eval_rows, posterior_means
from .devices import precision_context


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """The model in eval mode without gradients; its former mode is restored afterwards."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def precision_for(model, precision: str):
    """The context of ``precision`` for ``model``'s passes on the model's device (see
    aevb.devices.precision_context)."""
    return precision_context(model_device(model), precision)


def model_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


def decode_means(model, z: Tensor, batch_size: Optional[int] = None) -> Tensor:
    """The mean of p(x|z) for each row of ``z``: [N, J] -> [N, D] on the CPU, in the model's
    dtype (z is cast to it), decoded ``batch_size`` rows at a time (default: as many as the
    evaluation budget allows, aevb.bounds.eval_rows)."""
    dev, dt = model_device(model), model_dtype(model)
    batch_size = batch_size or eval_rows(model)
    out = []
    with eval_mode(model):
        for i in range(0, len(z), batch_size):
            out.append(model.likelihood.mean(model.decoder_params(z[i:i + batch_size].to(dev, dt))).cpu())
    return torch.cat(out) if out else torch.zeros(0, int(getattr(model, "data_dim", 0)), dtype=dt)


def prior_samples(model, n: int, seed: int = 0, draw: bool = False,
                  batch_size: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """(z, x): z ~ p(z), the model's prior (for N(0, I): ``torch.randn(n, J, generator=torch.Generator().manual_seed(seed))``), and the
    mean of p(x|z) for each z, or with ``draw=True`` one draw x ~ p(x|z) per z from the same
    generator (continued after z, on the CPU), so a seed fixes the draws too. x is [n, D] on the
    CPU."""
    gen = torch.Generator().manual_seed(int(seed))
    with eval_mode(model):
        z = model.draw_prior(n, gen)
    if not draw:
        return z, decode_means(model, z, batch_size)
    dev, dt = model_device(model), model_dtype(model)
    batch_size = batch_size or eval_rows(model)
    out = []
    with eval_mode(model):
        for i in range(0, len(z), batch_size):
            params = model.decoder_params(z[i:i + batch_size].to(dev, dt)).cpu()
            out.append(model.likelihood.sample(params, gen))
    return z, (torch.cat(out) if out else torch.zeros(0, int(model.data_dim), dtype=dt))


def latent_means(model, x, batch_size: Optional[int] = None) -> Tensor:
    """Posterior means E_q[z|x] of the rows of ``x`` (a tensor [N, D] or a Split): [N, J] on the
    CPU, in the model's dtype (``aevb.bounds.posterior_means``)."""
    if len(x) == 0:
        return torch.zeros(0, model.latent_dim, dtype=model_dtype(model))
    return posterior_means(model, x, batch_size).to(model_dtype(model))


def reconstructions(model, x, batch_size: Optional[int] = None) -> Tensor:
    """The mean of p(x|z) at z = E_q[z|x], the posterior mean (nothing is sampled): [N, D] on the
    CPU for the rows of ``x`` (on any device)."""
    return decode_means(model, latent_means(model, x, batch_size), batch_size)


def paired_rows(x: Tensor, rec: Tensor, ncol: int) -> Tensor:
    """Tiles for a grid of ``ncol`` columns: a row of originals over the row of their
    reconstructions, row pair by row pair; blank (zero) tiles complete the last pair. Returns
    [2 * ceil(N / ncol) * ncol, D] on the device of ``x``."""
    if len(x) != len(rec):
        raise ValueError(f"{len(x)} images but {len(rec)} reconstructions")
    ncol = max(1, min(int(ncol), len(x)))
    rec = rec.to(x.device, x.dtype)
    pad = (-len(x)) % ncol
    if pad:
        blank = torch.zeros(pad, x.shape[1], dtype=x.dtype, device=x.device)
        x, rec = torch.cat([x, blank]), torch.cat([rec, blank])
    rows = []
    for i in range(0, len(x), ncol):
        rows += [x[i:i + ncol], rec[i:i + ncol]]
    return torch.cat(rows) if rows else x[:0]
