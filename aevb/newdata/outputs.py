"""What a trained model says about new data, item by item: posterior codes (encode), bounds per
item (score, through the bound engine), reconstructions and decoded codes (through
aevb.sampling), and the check of codes given to decode. How they are written and read back is
files.py.
"""

from __future__ import annotations

import sys
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..bits import bits_per_dim, bpd_convention
from ..bounds import Bounds, eval_rows, evaluate_bounds
from ..data.base import Split
from ..data.cache import physical_memory
from ..units import format_bytes
from ..errors import DataError
from ..sampling import decode_means, eval_mode, model_device, model_dtype, reconstructions
from .checks import argument
from .results import ID, Codes, Scores


# ------------------------------------------------------------------ what the model says
def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar with the time left on stderr (shown on a terminal when ``enabled``), or None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True, disable=None, file=sys.stderr, leave=False)


def check_draws_fit(n: int, samples: int, latent_dim: int, memory: Optional[int] = None,
                    python: bool = True) -> None:
    """Refuse (DataError, before any work) draws z [n, samples, latent_dim] in float64 that would
    take more than half of ``memory`` (default: the machine's RAM), where they are held until the
    output is written. ``python``: name the argument as Python's ``samples``, else ``--samples``."""
    memory = physical_memory() if memory is None else memory
    need = 8 * n * samples * latent_dim
    if samples and memory and need > memory // 2:
        raise DataError(f"{samples} draws for each of {n:,} items of {latent_dim} latent dimensions make "
                        f"{format_bytes(need)} of codes, more than half of this machine's memory "
                        f"({format_bytes(memory)}); ask for fewer draws ({argument('samples', python)}), or encode "
                        "the data in parts")


def encode(model, split: Split, samples: int = 0, seed: int = 0, batch_size: Optional[int] = None,
           progress: bool = False, python: bool = True) -> Dict[str, np.ndarray]:
    """{"mu", "log_var"} [N, J] float64 (the Gaussian q(z|x) of each row: with stacked layers
    every layer's along the mean path; with a flow the Gaussian before it) and, with ``samples``
    > 0, "z" [N, samples, J] float64: draws z ~ q(z|x) (z = mu + sigma * eps, through the flow or
    the upper layers where the model has them) with eps from a CPU generator seeded with ``seed``. The encoder sees ``batch_size`` rows at a time from ``split.batches``
    (default: aevb.bounds.eval_rows, sized in bytes)."""
    n, j = len(split), int(model.latent_dim)
    check_draws_fit(n, int(samples), j, python=python)
    batch_size = batch_size or eval_rows(model)
    mu, lv = np.empty((n, j)), np.empty((n, j))
    z = np.empty((n, int(samples), j)) if samples else None
    gen = torch.Generator().manual_seed(int(seed))
    bar = progress_bar(n, "encoding", progress)
    i = 0
    try:
        with eval_mode(model):
            for xb in split.batches(batch_size, model_device(model)):
                m1, v1 = model.encoder_params(xb.to(model_dtype(model)))
                m, v = (t.double().cpu() for t in model.posterior_params(m1, v1))
                b = len(m)
                mu[i:i + b], lv[i:i + b] = m.numpy(), v.numpy()
                if samples:
                    eps = torch.randn(b, int(samples), j, generator=gen, dtype=torch.float64)
                    if model.closed_form_kl:  # z = mu + sigma * eps, in float64
                        z[i:i + b] = (m.unsqueeze(1) + torch.exp(0.5 * v).unsqueeze(1) * eps).numpy()
                    else:
                        zs = model.latent_sample(eps.to(m1), m1.unsqueeze(1), v1.unsqueeze(1)).z
                        z[i:i + b] = zs.double().cpu().numpy()
                i += b
                if bar is not None:
                    bar.update(b)
    finally:
        if bar is not None:
            bar.close()
    out = {"mu": mu, "log_var": lv}
    if z is not None:
        out["z"] = z
    return out


def score(model, split: Split, k: int, seed: int = 0, progress: bool = False, budget=None) -> Bounds:
    """The bound engine's per-row results (ELBO, L_k and its standard error, ...) for ``split``
    with k importance samples, seeded noise: the numbers ``aevb evaluate`` gives for the same rows."""
    kw = {} if budget is None else {"budget": budget}
    return evaluate_bounds(model, split, k=int(k), seed=seed, progress=progress, desc=f"L_{k}", **kw)


def encode_items(model, items, samples: int = 0, seed: int = 0, progress: bool = False,
                 python: bool = True) -> Codes:
    """:func:`encode` of ``items`` (an :class:`aevb.newdata.Items`) as :class:`Codes`, with their ids."""
    return Codes({ID: np.asarray(items.ids), **encode(model, items.split, samples, seed, progress=progress,
                                                      python=python)})


def score_columns(model, items, k: int, likelihood: str, seed: int = 0, progress: bool = False) -> Scores:
    """Per item of ``items``: "id", "elbo", "lk", "lk_se" (nats) and, where the data are discrete
    (aevb.bits.bpd_convention for their kind, levels and ``likelihood``), "bpd_elbo" and "bpd_lk"."""
    b = score(model, items.split, k, seed, progress)
    cols = {ID: np.asarray(items.ids), "elbo": b.elbo.numpy(), "lk": b.lk.numpy(), "lk_se": b.lk_se.numpy()}
    offset, _ = bpd_convention(items.kind, items.levels, likelihood)
    if offset is not None:
        cols["bpd_elbo"] = bits_per_dim(cols["elbo"], items.dim, offset)
        cols["bpd_lk"] = bits_per_dim(cols["lk"], items.dim, offset)
    return Scores(cols)


def reconstruction_blocks(model, split: Split, batch_size: Optional[int] = None,
                          progress: bool = False) -> Iterator[Tuple[int, Tensor]]:
    """(first row, reconstructions [B, D] on the CPU) for ``batch_size`` rows at a time:
    :func:`aevb.sampling.reconstructions` block by block, so memory does not grow with N."""
    bar = progress_bar(len(split), "reconstructing", progress)
    batch_size = batch_size or eval_rows(model)
    try:
        for i in range(0, len(split), batch_size):
            x = split.rows(i, i + batch_size)
            yield i, reconstructions(model, x, batch_size)
            if bar is not None:
                bar.update(len(x))
    finally:
        if bar is not None:
            bar.close()


# the advice of a refusal of codes: where a trained model's codes lie
CODES_ADVICE = "a trained model's codes lie within a few units of 0, where its prior N(0, I) puts them"


def check_codes(z, latent_dim: int, name: str = "z") -> Tensor:
    """``z`` as a float [N, J] tensor, refusing (one line naming ``name`` and the shapes) another
    width, another number of dimensions, no rows, NaN / infinite values, or values beyond the
    float32 range (they would reach the decoder as infinities)."""
    try:
        a = np.asarray(z.detach().cpu().numpy() if isinstance(z, Tensor) else z)
    except (ValueError, TypeError) as e:  # rows of different lengths, objects that are not numbers
        raise DataError(f"{name} is not an [N, {latent_dim}] array of numbers ({_one_line(e)})") from None
    if a.ndim == 1 and a.size == latent_dim:
        a = a.reshape(1, -1)
    if a.ndim != 2 or a.shape[1] != latent_dim:
        raise DataError(f"{name} has shape {tuple(a.shape)} but the run's codes are [N, {latent_dim}] "
                        f"(its latent dimension is {latent_dim})")
    if len(a) == 0:
        raise DataError(f"{name} holds no codes")
    if a.dtype.kind not in "biuf":
        raise DataError(f"{name} holds {a.dtype} values; codes are real numbers")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        rows = np.flatnonzero(bad.any(1))
        raise DataError(f"{name} has {int(bad.sum())} NaN or infinite value(s) (first in row {int(rows[0])}); "
                        "codes must be finite")
    big = np.abs(a) > np.finfo(np.float32).max
    if big.any():
        r = int(np.flatnonzero(big.any(1))[0])
        raise DataError(f"{name} holds {a[r][big[r]][0]:.3g} in row {r}, beyond float32 (largest "
                        f"{np.finfo(np.float32).max:.3g}): the decoder cannot take it; {CODES_ADVICE}")
    return torch.from_numpy(a.astype(np.float32))


def decode(model, z, batch_size: Optional[int] = None, name: str = "z", first_row: int = 0) -> Tensor:
    """The mean of p(x|z) [N, D] on the CPU for codes ``z`` [N, J] (checked by :func:`check_codes`);
    codes so large that the decoder's output is not finite (it overflows) are refused in one line
    naming ``name`` and the row (counted from ``first_row``)."""
    codes = check_codes(z, int(model.latent_dim), name)
    x = decode_means(model, codes, batch_size)
    bad = ~torch.isfinite(x).all(1)
    if bad.any():
        r = int(torch.nonzero(bad)[0])
        raise DataError(f"{name}: the decoder overflows for {int(bad.sum())} code(s), its output not finite (first "
                        f"in row {first_row + r}, largest |value| {float(codes[r].abs().max()):.3g}); "
                        f"{CODES_ADVICE}")
    return x


def _one_line(e) -> str:
    return " ".join(str(e).split())


