"""What figures show, computed as tensors and arrays (no drawing), so tests and users can check
content rather than pictures: posterior means, the KL and the activity of every latent unit, the
manifold grid, traversals, interpolations and 2-D embeddings of latent spaces.

Decoding, prior samples and reconstructions are :mod:`aevb.sampling`'s; the statistics
over data are the bound engine's (:mod:`aevb.bounds`), including the one definition of an active
unit: Var_x E_q[z_j|x] > ``ACTIVE_UNIT_THRESHOLD`` (Burda et al. 2016).
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..bounds import ACTIVE_UNIT_THRESHOLD, active_mask, active_unit_variances, kl_per_dimension as mean_kl_per_dimension
from ..errors import PlotError
from ..sampling import decode_means, eval_mode, latent_means, model_dtype

__all__ = ["ACTIVE_UNIT_THRESHOLD", "METHODS", "latent_means", "kl_per_dimension", "unit_variances",
           "active_mask", "quantile_probabilities", "grid_coordinates", "manifold_grid", "dims_by_kl",
           "traversal", "interpolate", "pca_directions", "embed_2d"]

# How latent spaces of more than 2 dimensions are shown in 2-D.
METHODS = ("pca", "tsne")


# ---------------------------------------------------------------------------- latent units
def kl_per_dimension(model, x, batch_size: int = 1000) -> Optional[Tensor]:
    """Closed-form KL(q(z_j|x) || N(0, 1)) per latent unit averaged over the rows of ``x``, [J]
    nats in the model's dtype: how much each unit carries (not what makes it active). None for
    a model without a closed-form KL (a flow posterior or a learned prior)."""
    if not model.closed_form_kl:
        return None
    if len(x) == 0:
        return torch.zeros(model.latent_dim, dtype=model_dtype(model))
    with eval_mode(model):
        return mean_kl_per_dimension(model, x, batch_size).to(model_dtype(model))


def unit_variances(mu: Tensor) -> Tensor:
    """Var over the data of the posterior mean E_q[z_j|x] per latent unit, [J] float64, from
    posterior means [N, J] (``aevb.bounds.active_unit_variances``; zeros for fewer than 2 rows)."""
    return active_unit_variances(torch.as_tensor(mu))


# ---------------------------------------------------------------------------- grids
def quantile_probabilities(n: int) -> np.ndarray:
    """n evenly spaced values in (0, 1): the midpoints (i + 1/2) / n, i = 0..n-1."""
    if n < 1:
        raise ValueError(f"the grid needs at least one point per side, got {n}")
    return (np.arange(n) + 0.5) / n


def grid_coordinates(n: int, kind: str = "quantile", limit: float = 3.0) -> np.ndarray:
    """Latent coordinates along one side of a manifold grid (increasing).

    ``kind='quantile'``: the inverse CDF of the standard normal at n evenly spaced values in
    (0, 1) (:func:`quantile_probabilities`), so each tile covers equal prior mass (AEVB Fig. 4);
    ``kind='uniform'``: n values evenly spaced in [-limit, limit] (the prior-predictive grid).
    """
    if kind == "quantile":
        from scipy.stats import norm

        return norm.ppf(quantile_probabilities(n))
    if kind == "uniform":
        if n < 1:
            raise ValueError(f"the grid needs at least one point per side, got {n}")
        return np.linspace(-limit, limit, n) if n > 1 else np.zeros(1)
    raise ValueError(f"grid kind must be 'quantile' or 'uniform', not {kind!r}")


def manifold_grid(model, n: int = 20, kind: str = "quantile", dims: Sequence[int] = (0, 1),
                  limit: float = 3.0, base: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Decoder means on an n x n grid over latent dimensions ``dims`` (others at ``base``, by
    default 0, the prior mean): returns (z [n*n, J], x [n*n, D]).

    Tiles are in reading order: row r (top to bottom) has z[dims[1]] = c[n-1-r] (up is
    positive), column k has z[dims[0]] = c[k], where c = ``grid_coordinates(n, kind, limit)``.
    With one entry in ``dims`` (or a 1-D latent space) the grid is one row of n tiles.
    """
    J, dt = model.latent_dim, model_dtype(model)
    dims = [int(d) for d in dims][:2] if J > 1 else [0]
    if len(set(dims)) != len(dims) or any(not 0 <= d < J for d in dims):
        raise ValueError(f"dims must be distinct latent dimensions in [0, {J - 1}], got {list(dims)}")
    c = torch.as_tensor(grid_coordinates(n, kind, limit), dtype=dt)
    m = n * n if len(dims) == 2 else n
    z = torch.zeros(m, J, dtype=dt) if base is None else base.reshape(1, J).to(dt).repeat(m, 1).cpu()
    if len(dims) == 2:
        rows = torch.arange(n).repeat_interleave(n)
        cols = torch.arange(n).repeat(n)
        z[:, dims[0]] = c[cols]
        z[:, dims[1]] = c[n - 1 - rows]
    else:
        z[:, dims[0]] = c
    return z, decode_means(model, z)


def dims_by_kl(kl: Tensor) -> List[int]:
    """Latent dimensions ordered by decreasing KL (most informative first)."""
    return [int(i) for i in torch.argsort(torch.as_tensor(kl), descending=True, stable=True)]


# ---------------------------------------------------------------------------- paths in latent space
def traversal(model, x0: Tensor, dim: int, values: Union[Sequence[float], Tensor]) -> Tuple[Tensor, Tensor]:
    """Vary one latent dimension from the posterior mean of ``x0`` ([D] or [1, D]): every z equals
    E_q[z|x0] except z[dim], which takes ``values``. Returns (z [V, J], decoder means [V, D])."""
    if not 0 <= int(dim) < model.latent_dim:
        raise ValueError(f"dim must be in [0, {model.latent_dim - 1}], got {dim}")
    mu0 = latent_means(model, x0.reshape(1, -1))[0]
    values = torch.as_tensor(values, dtype=mu0.dtype).reshape(-1)
    z = mu0.repeat(len(values), 1)
    z[:, int(dim)] = values
    return z, decode_means(model, z)


def interpolate(model, x_a: Tensor, x_b: Tensor, steps: int = 10) -> Tuple[Tensor, Tensor]:
    """Linear interpolation in latent space between the posterior means of ``x_a`` and ``x_b``:
    z_t = (1 - t) mu_a + t mu_b for ``steps`` evenly spaced t in [0, 1] (z_0 = mu_a and
    z_1 = mu_b exactly). Returns (z [steps, J], decoder means [steps, D])."""
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    mu = latent_means(model, torch.stack([x_a.reshape(-1), x_b.reshape(-1)]))
    t = torch.linspace(0, 1, steps, dtype=mu.dtype).unsqueeze(1)
    z = (1 - t) * mu[0] + t * mu[1]
    return z, decode_means(model, z)


# ---------------------------------------------------------------------------- 2-D views
def pca_directions(mu: np.ndarray, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """The two leading principal directions of the rows of ``mu`` [N, J] (N >= 2): (components
    [2, J], orthonormal; their shares of the variance [2]). Points are projected as mu @ components.T
    (the mean is not removed, so the prior N(0, I) still projects to N(0, I))."""
    from sklearn.decomposition import PCA

    if len(mu) < 2:
        raise PlotError("PCA needs at least 2 points")
    pca = PCA(n_components=2, random_state=seed).fit(np.asarray(mu, dtype=np.float64))
    return pca.components_, pca.explained_variance_ratio_


def embed_2d(mu: Union[Tensor, np.ndarray], method: str = "pca", seed: int = 0):
    """Two coordinates per point for a scatter plot of posterior means [N, J].

    Returns (points [N, 2], (x label, y label), description). J = 2: the means themselves;
    J = 1: (z_1, 0); J > 2: ``method='pca'`` projects onto the two leading principal directions
    (without removing the mean, so the prior N(0, I) still projects to N(0, I)), ``'tsne'``
    embeds with scikit-learn's t-SNE.
    """
    a = np.asarray(mu.detach().cpu().numpy() if isinstance(mu, Tensor) else mu, dtype=np.float64)
    n, j = a.shape
    if j == 2:
        return a.copy(), ("$z_1$", "$z_2$"), "posterior means"
    if j == 1:
        return np.stack([a[:, 0], np.zeros(n)], 1), ("$z_1$", ""), "posterior means (1-D latent space)"
    if method == "pca":
        comps, share = pca_directions(a, seed)
        return (a @ comps.T, (f"PC 1 ({share[0]:.0%} of variance)", f"PC 2 ({share[1]:.0%})"),
                f"PCA projection of the {j}-D posterior means")
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        if n < 5:
            raise PlotError("t-SNE needs at least 5 points")
        perplexity = float(min(30.0, (n - 1) / 3.0))
        # OpenMP threads that spin-wait make t-SNE many times slower on a small or busy machine
        with threadpool_limits(max(1, min(4, (os.cpu_count() or 2) // 2))):
            pts = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(a)
        return pts, ("t-SNE 1", "t-SNE 2"), f"t-SNE embedding of the {j}-D posterior means"
    raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
