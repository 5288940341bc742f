"""Figures of what a VAE learned: reconstructions, prior samples, the 2-D data manifold, the
latent space (and how it moved during training), interpolations, traversals, training curves and
the KL of every latent unit.

Two layers, so that tests (and users) can check content, not pictures:

* functions that compute and return tensors: :func:`latent_means`, :func:`kl_per_dimension`,
  :func:`reconstructions`, :func:`prior_samples`, :func:`grid_coordinates`,
  :func:`manifold_grid`, :func:`traversal`, :func:`interpolate`, :func:`embed_2d`;
* functions that draw them and return a ``matplotlib.figure.Figure`` (``*_figure``), rendered
  with the Agg canvas (no pyplot, no display needed) and written by :func:`save_figure`
  atomically as PNG.

:func:`draw_figures` ties both to a run (``FigureContext.from_run``) or to a trainer at the end of
training (``FigureContext.from_trainer``) and writes ``RUN/figures/<name>.png``.

Images keep the data's own shape ``(C, H, W)``: grey (C=1) or colour (C=3), square or not
(Frey Face is 28x20).
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .images import grid as image_grid
from .io import atomic_path
from .bounds import kl_per_dimension as mean_kl_per_dimension, posterior_means
from .errors import PlotError, RunError  # noqa: F401 (PlotError: raised for a run's figures)

# What `aevb plot RUN KIND` draws; `all` draws every one that applies.
KINDS = ("reconstructions", "samples", "manifold", "latent", "latent-series", "interpolation",
         "traversal", "curves", "kl")
METHODS = ("pca", "tsne")
FIGURES_DIR = "figures"
LATENTS_DIR = "latents"
# A latent unit whose average KL(q(z_j|x) || p(z_j)) is below this (nats) is called inactive: the
# posterior of that unit has collapsed to the prior and the decoder ignores it.
ACTIVE_KL_THRESHOLD = 0.01
PAD = 1  # pixels between tiles of an image grid (aevb.images.grid's default)
MAX_GRID_INCHES = 13.0  # an image grid is drawn at most this wide or high (100 dpi)

# Figure files each kind writes, in the order a report shows them.
FIGURE_FILES = {
    "curves": ["curves.png"],
    "kl": ["kl.png"],
    "reconstructions": ["reconstructions.png"],
    "samples": ["samples.png"],
    "manifold": ["manifold.png", "manifold_uniform.png"],
    "latent": ["latent.png"],
    "latent-series": ["latent_series.png"],
    "interpolation": ["interpolation.png"],
    "traversal": ["traversal.png"],
}




# ============================================================================ computations
@contextlib.contextmanager
def _eval_mode(model):
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


def latent_means(model, x: Tensor, batch_size: int = 1000) -> Tensor:
    """Posterior means E_q[z|x] of the rows of ``x``: [N, D] -> [N, J] (on the CPU)."""
    if len(x) == 0:
        return torch.zeros(0, model.latent_dim, dtype=_dtype(model))
    with _eval_mode(model):
        return posterior_means(model, x, batch_size).to(_dtype(model))


def kl_per_dimension(model, x: Tensor, batch_size: int = 1000) -> Tensor:
    """Closed-form KL(q(z_j|x) || N(0, 1)) per latent dimension averaged over the rows of ``x``,
    [J] nats. Units far below ``ACTIVE_KL_THRESHOLD`` are inactive (posterior = prior)."""
    if len(x) == 0:
        return torch.zeros(model.latent_dim, dtype=_dtype(model))
    with _eval_mode(model):
        return mean_kl_per_dimension(model, x, batch_size).to(_dtype(model))


def decode_mean(model, z: Tensor, batch_size: int = 1000) -> Tensor:
    """The mean of p(x|z) for each row of ``z``: [N, J] -> [N, D] (on the CPU)."""
    dev, dt = _device(model), _dtype(model)
    out = []
    with _eval_mode(model):
        for i in range(0, len(z), batch_size):
            out.append(model.likelihood.mean(model.decode(z[i:i + batch_size].to(dev, dt))).cpu())
    return torch.cat(out) if out else torch.zeros(0, getattr(model, "data_dim", 0), dtype=dt)


def reconstructions(model, x: Tensor) -> Tensor:
    """The decoder mean at z = the posterior mean (no sampling), [N, D]."""
    return decode_mean(model, latent_means(model, x))


def prior_samples(model, n: int, seed: int = 0, draw: bool = False) -> Tuple[Tensor, Tensor]:
    """(z, x): ``n`` draws z ~ N(0, I) (from a generator seeded with ``seed``) and the mean of
    p(x|z), or with ``draw=True`` one draw x ~ p(x|z) for each z."""
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(n, model.latent_dim, generator=gen, dtype=_dtype(model))
    if not draw:
        return z, decode_mean(model, z)
    with _eval_mode(model):
        params = model.decode(z.to(_device(model))).cpu()
    return z, model.likelihood.sample(params, gen)


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
    J = model.latent_dim
    dims = [int(d) for d in dims][:2] if J > 1 else [0]
    if len(set(dims)) != len(dims) or any(not 0 <= d < J for d in dims):
        raise ValueError(f"dims must be distinct latent dimensions in [0, {J - 1}], got {list(dims)}")
    c = torch.as_tensor(grid_coordinates(n, kind, limit), dtype=_dtype(model))
    m = n * n if len(dims) == 2 else n
    z = torch.zeros(m, J, dtype=_dtype(model)) if base is None else base.reshape(1, J).to(_dtype(model)).repeat(m, 1).cpu()
    if len(dims) == 2:
        rows = torch.arange(n).repeat_interleave(n)
        cols = torch.arange(n).repeat(n)
        z[:, dims[0]] = c[cols]
        z[:, dims[1]] = c[n - 1 - rows]
    else:
        z[:, dims[0]] = c
    return z, decode_mean(model, z)


def dims_by_kl(kl: Tensor) -> List[int]:
    """Latent dimensions ordered by decreasing KL (most informative first)."""
    return [int(i) for i in torch.argsort(torch.as_tensor(kl), descending=True, stable=True)]


def traversal(model, x0: Tensor, dim: int, values: Union[Sequence[float], Tensor]) -> Tuple[Tensor, Tensor]:
    """Vary one latent dimension from the posterior mean of ``x0`` ([D] or [1, D]): every z equals
    E_q[z|x0] except z[dim], which takes ``values``. Returns (z [V, J], decoder means [V, D])."""
    if not 0 <= int(dim) < model.latent_dim:
        raise ValueError(f"dim must be in [0, {model.latent_dim - 1}], got {dim}")
    mu0 = latent_means(model, x0.reshape(1, -1))[0]
    values = torch.as_tensor(values, dtype=mu0.dtype).reshape(-1)
    z = mu0.repeat(len(values), 1)
    z[:, int(dim)] = values
    return z, decode_mean(model, z)


def interpolate(model, x_a: Tensor, x_b: Tensor, steps: int = 10) -> Tuple[Tensor, Tensor]:
    """Linear interpolation in latent space between the posterior means of ``x_a`` and ``x_b``:
    z_t = (1 - t) mu_a + t mu_b for ``steps`` evenly spaced t in [0, 1] (z_0 = mu_a and
    z_1 = mu_b exactly). Returns (z [steps, J], decoder means [steps, D])."""
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    mu = latent_means(model, torch.stack([x_a.reshape(-1), x_b.reshape(-1)]))
    t = torch.linspace(0, 1, steps, dtype=mu.dtype).unsqueeze(1)
    z = (1 - t) * mu[0] + t * mu[1]
    return z, decode_mean(model, z)


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


# ============================================================================ drawing
def new_figure(width: float, height: float):
    """A matplotlib Figure on an Agg canvas (no pyplot state, works without a display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(1.0, width), max(1.0, height)), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: Union[str, Path], dpi: int = 100) -> Path:
    """Render ``fig`` as PNG to ``path`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.1,
                        facecolor="white")
    return path


def _tile_scale(image_shape, ncol: int, nrow: int, target: int = 56, max_px: int = 1300) -> int:
    """An integer enlargement so tiles are about ``target`` pixels without exceeding ``max_px``."""
    _, h, w = (int(s) for s in image_shape)
    scale = max(1, int(round(target / max(h, w))))
    gw, gh = ncol * (w + PAD) + PAD, nrow * (h + PAD) + PAD
    while scale > 1 and max(gw, gh) * scale > max_px:
        scale -= 1
    return scale


def show_grid(ax, x: Tensor, image_shape, ncol: int, interpolation: str = "nearest"):
    """Draw the rows of ``x`` (values in [0, 1]) as a tiled image on ``ax``; returns the
    AxesImage (its array is the uint8 grid: [rows*(H+1)+1, ncol*(W+1)+1] or [..., 3]).
    ``interpolation``: 'nearest' keeps pixels sharp when enlarging; 'antialiased' when a large
    grid is shown smaller than its size."""
    g = image_grid(x, image_shape, ncol, pad=PAD)
    if g.shape[-1] == 1:
        im = ax.imshow(g[..., 0], cmap="gray", vmin=0, vmax=255, interpolation=interpolation)
    else:
        im = ax.imshow(g, interpolation=interpolation)
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    return im


def _grid_figure(n_images: int, image_shape, ncol: int, extra_w: float = 0.0, extra_h: float = 0.7,
                 panels: int = 1):
    ncol = max(1, min(ncol, n_images))
    nrow = (n_images + ncol - 1) // ncol
    _, h, w = (int(s) for s in image_shape)
    scale = _tile_scale(image_shape, ncol, nrow)
    gw, gh = (ncol * (w + PAD) + PAD) * scale / 100, (nrow * (h + PAD) + PAD) * scale / 100
    shrink = min(1.0, MAX_GRID_INCHES / max(gw * panels, gh))  # big images: show the grid smaller
    gw, gh = gw * shrink, gh * shrink
    fig = new_figure(panels * (gw + extra_w) + 0.3 * (panels - 1), gh + extra_h)
    interpolation = "nearest" if shrink >= 1.0 else "antialiased"
    axes = fig.subplots(1, panels, squeeze=False)[0]
    return fig, list(axes), ncol, nrow, interpolation


def _tile_centres(count: int, size: int) -> np.ndarray:
    return PAD + np.arange(count) * (size + PAD) + (size - 1) / 2.0


def reconstructions_figure(x: Tensor, rec: Tensor, image_shape, ncol: int = 8, title: Optional[str] = None):
    """Data images over their reconstructions: row pairs (data, reconstruction) of ``ncol``."""
    if len(x) == 0:
        raise PlotError("no images to reconstruct")
    ncol = max(1, min(int(ncol), len(x)))
    m = (len(x) // ncol) * ncol  # whole rows only, so every data row sits over its reconstructions
    rows = []
    for i in range(0, m, ncol):
        rows += [x[i:i + ncol], rec[i:i + ncol]]
    tiles = torch.cat(rows)
    fig, (ax,), ncol, nrow, interp = _grid_figure(len(tiles), image_shape, ncol, extra_w=1.0)
    show_grid(ax, tiles, image_shape, ncol, interp)
    _, h, _ = (int(s) for s in image_shape)
    ax.set_yticks(_tile_centres(nrow, h))
    ax.set_yticklabels(["data" if r % 2 == 0 else "recon." for r in range(nrow)], fontsize=8)
    ax.tick_params(length=0)
    ax.set_title(title or "Test images and their reconstructions\n(decoder mean at z = posterior mean)",
                 fontsize=10)
    return fig


def samples_figure(x: Tensor, image_shape, ncol: int = 8, x_draw: Optional[Tensor] = None,
                   title: Optional[str] = None):
    """Samples from the model: z ~ N(0, I) decoded to the likelihood's mean; with ``x_draw``, a
    second panel with one draw x ~ p(x|z) for the same z."""
    panels = 1 if x_draw is None else 2
    fig, axes, ncol, _, interp = _grid_figure(len(x), image_shape, ncol, panels=panels)
    show_grid(axes[0], x, image_shape, ncol, interp)
    axes[0].set_title("mean of p(x|z)", fontsize=9)
    if x_draw is not None:
        show_grid(axes[1], x_draw, image_shape, ncol, interp)
        axes[1].set_title("a draw x ~ p(x|z), same z", fontsize=9)
    fig.suptitle(title or f"{len(x)} samples from the model, z ~ N(0, I)", fontsize=10)
    return fig


def manifold_figure(x: Tensor, coords: np.ndarray, image_shape, kind: str = "quantile",
                    dims: Sequence[int] = (0, 1), latent_dim: int = 2, kl: Optional[Tensor] = None,
                    title: Optional[str] = None):
    """Tiles of a :func:`manifold_grid` (n x n, or one row of n), with the latent coordinates of
    the tile centres on the axes."""
    n = len(coords)
    two = len(x) == n * n and n > 1 or (n == 1 and len(dims) == 2)
    fig, (ax,), ncol, nrow, interp = _grid_figure(len(x), image_shape, n, extra_w=0.8, extra_h=1.2)
    show_grid(ax, x, image_shape, ncol, interp)
    _, h, w = (int(s) for s in image_shape)
    ticks = np.unique(np.round(np.linspace(0, n - 1, min(n, 9))).astype(int))
    ax.set_xticks(_tile_centres(n, w)[ticks])
    ax.set_xticklabels([f"{coords[i]:.2g}" for i in ticks], fontsize=7)
    ax.set_xlabel(f"$z_{{{dims[0] + 1}}}$")
    if two:
        ax.set_yticks(_tile_centres(n, h)[ticks])
        ax.set_yticklabels([f"{coords[n - 1 - i]:.2g}" for i in ticks], fontsize=7)
        ax.set_ylabel(f"$z_{{{dims[1] + 1}}}$")
    if title is None:
        names = " and ".join(f"z_{d + 1}" for d in dims[:2 if two else 1])
        if kind == "quantile":
            title = (f"Learned data manifold: decoder means on a {n}x{n if two else 1} grid of Gaussian "
                     f"quantiles of {names}\n(inverse CDF of evenly spaced values in (0, 1), as in AEVB Fig. 4)")
        else:
            lim = float(np.max(np.abs(coords))) if n > 1 else 0.0
            title = (f"Prior-predictive grid: decoder means with {names} evenly spaced in "
                     f"[-{lim:g}, {lim:g}]")
        if latent_dim > len(dims[:2 if two else 1]):
            which = "the 2 dimensions" if two else "the dimension"
            kl_txt = ""
            if kl is not None:
                kl_txt = " (KL " + ", ".join(f"{float(kl[d]):.2f}" for d in dims[:2 if two else 1]) + " nats)"
            title += (f"\n{latent_dim}-D latent space: {which} of highest KL{kl_txt}, "
                      f"the other {latent_dim - (2 if two else 1)} at 0")
    ax.set_title(title, fontsize=9)
    return fig


_PRIOR_RADII = (1.0, 2.0)


def _scatter(ax, pts: np.ndarray, labels: Optional[np.ndarray], size: float, legend: bool = True):
    if labels is not None:
        labels = np.asarray(labels)
        classes = np.unique(labels)
        cmap = "tab10" if len(classes) <= 10 else "viridis"
        vmin, vmax = (float(classes.min()), float(classes.min()) + 9) if len(classes) <= 10 else (None, None)
        sc = ax.scatter(pts[:, 0], pts[:, 1], c=labels, cmap=cmap, vmin=vmin, vmax=vmax, s=size,
                        alpha=0.8, linewidths=0)
        if legend and len(classes) <= 10:
            handles, names = sc.legend_elements()
            ax.legend(handles, [str(int(c)) for c in classes], title="label", fontsize=7,
                      title_fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        elif legend:
            ax.figure.colorbar(sc, ax=ax, label="label")
    else:
        sc = ax.scatter(pts[:, 0], pts[:, 1], s=size, alpha=0.7, linewidths=0, color="C0")
    return sc


def _prior_circles(ax):
    from matplotlib.patches import Circle

    for r in _PRIOR_RADII:
        ax.add_patch(Circle((0, 0), r, fill=False, ls="--", lw=0.8, color="0.5", zorder=0))


def latent_figure(mu: Union[Tensor, np.ndarray], labels=None, method: str = "pca", seed: int = 0,
                  title: Optional[str] = None):
    """Posterior means of data points coloured by label: directly for 2-D latents, through PCA or
    t-SNE (``method``) for larger ones. The axes' first PathCollection holds the plotted points
    (for 2-D latents: exactly ``mu``). Dashed circles: radius 1 and 2 of the prior N(0, I)."""
    pts, (xl, yl), what = embed_2d(mu, method, seed)
    fig = new_figure(6.4, 5.4)
    ax = fig.subplots()
    _scatter(ax, pts, None if labels is None else np.asarray(labels), size=9)
    if "t-SNE" not in what:
        _prior_circles(ax)
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    n = len(pts)
    ax.set_title(title or f"Latent space: {what} of {n} test points, q(z|x)\n"
                          "(dashed: radius 1 and 2 of the prior N(0, I))"
                 if "t-SNE" not in what else title or f"Latent space: {what} of {n} test points", fontsize=10)
    return fig


def latent_series_figure(snapshots: Sequence[Tuple[int, np.ndarray]], labels=None, method: str = "pca",
                         seed: int = 0, max_panels: int = 6, title: Optional[str] = None):
    """Posterior means saved at several epochs, side by side with shared axes, so one sees
    q(z|x) move away from the prior as training goes on. ``snapshots``: (epoch, mu [N, J])."""
    if not snapshots:
        raise PlotError("no latent snapshots to plot")
    snapshots = sorted(snapshots, key=lambda s: s[0])
    if len(snapshots) > max_panels:
        idx = np.unique(np.round(np.linspace(0, len(snapshots) - 1, max_panels)).astype(int))
        snapshots = [snapshots[i] for i in idx]
    embedded = [(e, embed_2d(m, method, seed)) for e, m in snapshots]
    k = len(embedded)
    fig = new_figure(2.9 * k + 1.0, 3.6)
    axes = fig.subplots(1, k, squeeze=False)[0]
    tsne = "t-SNE" in embedded[0][1][2]
    if not tsne:
        lim = max(3.0, max(float(np.abs(p).max()) if len(p) else 0.0 for _, (p, _, _) in embedded) * 1.05)
    for i, (ax, (epoch, (pts, (xl, yl), what))) in enumerate(zip(axes, embedded)):
        _scatter(ax, pts, None if labels is None else np.asarray(labels)[:len(pts)], size=4,
                 legend=(i == k - 1))
        if not tsne:
            _prior_circles(ax)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
        ax.set_title(f"epoch {epoch}", fontsize=9)
        ax.set_xlabel(xl, fontsize=8)
        if i == 0:
            ax.set_ylabel(yl, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title or f"Latent space during training: {embedded[0][1][2]} of "
                          f"{len(embedded[0][1][0])} test points (dashed: prior radius 1 and 2)"
                 if not tsne else title or f"Latent space during training: {embedded[0][1][2]}",
                 fontsize=10)
    fig.tight_layout()
    return fig


def interpolation_figure(rows: Sequence[Tuple[Tensor, Tensor, Tensor]], image_shape,
                         title: Optional[str] = None):
    """Rows (x_a, decoded interpolation [steps, D], x_b): the data images at both ends, the
    decoder means along the straight line between their posterior means in between."""
    steps = len(rows[0][1])
    tiles = torch.cat([torch.cat([a.reshape(1, -1), xs, b.reshape(1, -1)]) for a, xs, b in rows])
    fig, (ax,), ncol, _, interp = _grid_figure(len(tiles), image_shape, steps + 2)
    show_grid(ax, tiles, image_shape, ncol, interp)
    _, _, w = (int(s) for s in image_shape)
    ax.set_xticks(_tile_centres(ncol, w)[[0, 1, ncol - 2, ncol - 1]])
    ax.set_xticklabels(["$x_a$", "t=0", "t=1", "$x_b$"], fontsize=7)
    ax.tick_params(length=0)
    ax.set_title(title or "Interpolations between test images in latent space\n"
                          "(decoder means at z = (1-t) E[z|x_a] + t E[z|x_b]; data images at both ends)",
                 fontsize=9)
    return fig


def traversal_figure(x: Tensor, dims: Sequence[int], values: Sequence[float], image_shape,
                     kl: Optional[Tensor] = None, title: Optional[str] = None):
    """One row per latent dimension in ``dims`` (decoder means of :func:`traversal`, rows
    stacked): the dimension varies along the row, every other one stays at the posterior mean."""
    steps = len(values)
    fig, (ax,), ncol, nrow, interp = _grid_figure(len(x), image_shape, steps, extra_w=1.3, extra_h=1.0)
    show_grid(ax, x, image_shape, ncol, interp)
    _, h, w = (int(s) for s in image_shape)
    ax.set_yticks(_tile_centres(nrow, h))
    ax.set_yticklabels([f"$z_{{{d + 1}}}$" + (f" (KL {float(kl[d]):.2f})" if kl is not None else "")
                        for d in dims], fontsize=7)
    ax.set_xticks(_tile_centres(ncol, w))
    ax.set_xticklabels([f"{v:.2g}" for v in values], fontsize=7)
    ax.tick_params(length=0)
    ax.set_title(title or "Traversals of single latent dimensions, ordered by KL (highest first)\n"
                          "from the posterior mean of a test image; one dimension varies per row",
                 fontsize=9)
    return fig


def curves_figure(history: Sequence[dict], title: Optional[str] = None):
    """Training curves: the bound (ELBO) on train / test (/ valid) per epoch, its reconstruction
    term E_q[log p(x|z)] and its KL term, in nats per datapoint."""
    from matplotlib.ticker import MaxNLocator

    if not history:
        raise PlotError("the run has no metrics yet; train at least one epoch")
    epochs = [r["epoch"] for r in history]
    fig = new_figure(13, 3.8)
    axes = fig.subplots(1, 3)
    panels = [("bound", "ELBO (nats per datapoint)"),
              ("log_px_given_z", "reconstruction  E_q[log p(x|z)]"),
              ("kl", "KL(q(z|x) || p(z))")]
    styles = {"train": dict(color="C0"), "test": dict(color="C1"), "valid": dict(color="C2", ls="--")}
    marker = "o" if len(epochs) <= 30 else None
    for ax, (key, label) in zip(axes, panels):
        for split, st in styles.items():
            k = f"{split}_{key}"
            ys = [r.get(k) for r in history]
            if any(v is None for v in ys):
                continue
            ax.plot(epochs, ys, label=split, marker=marker, ms=3, **st)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    last = history[-1]
    fig.suptitle(title or f"Training curves (last epoch {last['epoch']}: test ELBO {last['test_bound']:.2f} "
                          f"nats per datapoint)", fontsize=11)
    fig.tight_layout()
    return fig


def kl_figure(kl: Tensor, threshold: float = ACTIVE_KL_THRESHOLD, title: Optional[str] = None):
    """KL(q(z_j|x) || p(z_j)) per latent dimension (average over the data) as bars on a log
    scale, active units (KL > ``threshold``) in colour, the threshold as a dashed line."""
    kl = np.asarray(torch.as_tensor(kl).detach().cpu().double().numpy())
    J = len(kl)
    active = kl > threshold
    fig = new_figure(max(5.0, 0.28 * J + 2.0), 3.8)
    ax = fig.subplots()
    floor = min(threshold / 10, float(kl[kl > 0].min()) / 2 if (kl > 0).any() else threshold / 10)
    heights = np.maximum(kl, floor)
    ax.bar(np.arange(1, J + 1), heights, color=np.where(active, "C0", "0.7"), bottom=0)
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor * 0.8)
    ax.axhline(threshold, color="C3", ls="--", lw=1, label=f"threshold {threshold:g} nats")
    ax.set_xlabel("latent dimension j")
    ax.set_ylabel("KL (nats)")
    if J <= 40:
        ax.set_xticks(np.arange(1, J + 1))
        ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=8)
    ax.set_title(title or f"KL per latent dimension, mean over test points: {int(active.sum())} of {J} "
                          f"units active (KL > {threshold:g}), total {kl.sum():.2f} nats", fontsize=10)
    return fig


# ============================================================================ latent snapshots
_SNAPSHOT = re.compile(r"^epoch(\d+)\.npy$")


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def save_latent_snapshot(run_dir: Union[str, Path], epoch: int, mu: Tensor,
                         labels: Optional[Tensor] = None) -> Path:
    """Write posterior means [N, J] to RUN/latents/epochNNN.npy (and labels.npy once)."""
    folder = Path(run_dir) / LATENTS_DIR
    path = folder / f"epoch{int(epoch):03d}.npy"
    _save_npy(path, np.asarray(mu.detach().cpu().float().numpy()))
    if labels is not None and not (folder / "labels.npy").is_file():
        _save_npy(folder / "labels.npy", np.asarray(labels.detach().cpu().numpy()))
    return path


def load_latent_snapshots(run_dir: Union[str, Path]) -> Tuple[List[Tuple[int, np.ndarray]], Optional[np.ndarray]]:
    """([(epoch, mu [N, J]), ...] sorted by epoch, labels [N] or None) from RUN/latents."""
    folder = Path(run_dir) / LATENTS_DIR
    snaps = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _SNAPSHOT.match(p.name)
            if m:
                try:
                    snaps.append((int(m.group(1)), np.load(p, allow_pickle=False)))
                except (OSError, ValueError):
                    continue  # a damaged file: skip it rather than lose the figure
    labels = None
    lp = folder / "labels.npy"
    if lp.is_file():
        try:
            labels = np.load(lp, allow_pickle=False)
        except (OSError, ValueError):
            labels = None
    return sorted(snaps, key=lambda s: s[0]), labels


# ============================================================================ a run's figures
@dataclass
class FigureContext:
    """What figures are drawn from: a model, its data set, the metrics history and the run folder.

    ``max_points`` bounds the number of test points in latent scatter plots.
    """

    model: object
    data: object = None
    image_shape: tuple = None
    history: List[dict] = field(default_factory=list)
    run_dir: Optional[Path] = None
    max_points: int = 2000
    data_error: Optional[str] = None  # why the data set could not be loaded (data is None)
    _kl: Optional[Tensor] = None
    _range: Optional[Tuple[float, float]] = None
    _x: Optional[Tensor] = None

    def __post_init__(self):
        if self.image_shape is None and self.data is not None:
            self.image_shape = tuple(int(s) for s in self.data.image_shape)
        if self.image_shape is not None:
            self.image_shape = tuple(int(s) for s in self.image_shape)

    @classmethod
    def from_run(cls, run, device: str = "auto", data=None, data_optional: bool = False) -> "FigureContext":
        """The model of the run's last checkpoint and its data set. With ``data_optional`` a data
        set that cannot be loaded (e.g. not on this machine) leaves ``data`` None: figures that
        need only the model (samples, manifold of a 2-D latent space, curves, latent-series)
        can still be drawn, the others raise PlotError saying why."""
        from .runs import Run, resolve_device

        run = run if isinstance(run, Run) else Run(run)
        model = run.load_model(resolve_device(device))
        error = None
        if data is None:
            try:
                data = run.load_data()
            except Exception as e:
                if not data_optional:
                    raise
                error = str(e)
        return cls(model=model, data=data, image_shape=tuple(run.checkpoint()["image_shape"]),
                   history=run.metrics(), run_dir=run.path, data_error=error)

    @classmethod
    def from_trainer(cls, trainer) -> "FigureContext":
        return cls(model=trainer.model, data=trainer.data, image_shape=tuple(trainer.data.image_shape),
                   history=list(trainer.history), run_dir=Path(trainer.run_dir))

    # ------------------------------------------------------------------ data
    def _need_data(self):
        if self.data is None:
            why = f": {self.data_error.splitlines()[0].rstrip(':')}" if self.data_error else ""
            raise PlotError(f"this figure needs the run's data set, which could not be loaded{why}")
        return self.data

    @property
    def x(self) -> Tensor:
        """The first test images, float [n, D]: ``max_points`` of them, fewer for large images
        (at most about 200 MB), read once from the test split."""
        if self._x is None:
            test = self._need_data().test
            n = min(self.max_points, max(64, 50_000_000 // max(1, test.dim)))
            self._x = test.rows(0, n)
        return self._x

    @property
    def y(self) -> Optional[Tensor]:
        y = self._need_data().test.y
        return None if y is None else y[:len(self.x)]

    @property
    def kl(self) -> Tensor:
        """Mean KL per latent dimension over the test points, [J] (cached)."""
        if self._kl is None:
            self._kl = kl_per_dimension(self.model, self.x[:self.max_points])
        return self._kl

    def display(self, x: Tensor) -> Tensor:
        """Values to show as pixels in [0, 1]: data on an unrestricted scale ('real') are mapped
        from the training data's range; others are shown as they are (clipped)."""
        data = self.data
        if data is None or getattr(data, "kind", "unit") != "real":
            return x
        if self._range is None:
            self._range = data.train.value_range()
        lo, hi = self._range
        return (x - lo) / max(hi - lo, 1e-12)


def _figure_reconstructions(ctx: FigureContext, n: Optional[int], **_):
    ncol = n or 8
    x = ctx.x[:2 * ncol]
    if len(x) == 0:
        raise PlotError("the test split is empty")
    rec = reconstructions(ctx.model, x)
    return {"reconstructions.png": reconstructions_figure(ctx.display(x), ctx.display(rec), ctx.image_shape, ncol)}


def _figure_samples(ctx: FigureContext, n: Optional[int], seed: int = 0, draw: bool = False, **_):
    side = n or 8
    _, x = prior_samples(ctx.model, side * side, seed=seed)
    x_draw = prior_samples(ctx.model, side * side, seed=seed, draw=True)[1] if draw else None
    return {"samples.png": samples_figure(ctx.display(x), ctx.image_shape, side,
                                          None if x_draw is None else ctx.display(x_draw))}


def manifold_dims(ctx: FigureContext) -> List[int]:
    """(0, 1) for a 2-D latent space, the two dimensions of highest KL otherwise ([0] if J = 1)."""
    J = ctx.model.latent_dim
    if J == 1:
        return [0]
    if J == 2:
        return [0, 1]
    return sorted(dims_by_kl(ctx.kl)[:2])


def _figure_manifold(ctx: FigureContext, n: Optional[int], **_):
    side = n or (20 if max(ctx.image_shape[1:]) <= 64 else 10)
    dims = manifold_dims(ctx)
    kl = ctx.kl if ctx.model.latent_dim > 2 else None
    out = {}
    for kind, name in (("quantile", "manifold.png"), ("uniform", "manifold_uniform.png")):
        _, x = manifold_grid(ctx.model, side, kind, dims)
        out[name] = manifold_figure(ctx.display(x), grid_coordinates(side, kind), ctx.image_shape, kind,
                                    dims, ctx.model.latent_dim, kl)
    return out


def _figure_latent(ctx: FigureContext, method: str = "pca", seed: int = 0, **_):
    x = ctx.x[:ctx.max_points]
    y = ctx.y
    mu = latent_means(ctx.model, x)
    return {"latent.png": latent_figure(mu, None if y is None else y[:len(x)].numpy(), method, seed)}


def _figure_latent_series(ctx: FigureContext, method: str = "pca", seed: int = 0, **_):
    if ctx.run_dir is None:
        raise PlotError("latent snapshots live in a run folder; none was given")
    snaps, labels = load_latent_snapshots(ctx.run_dir)
    if not snaps:
        raise PlotError(f"{Path(ctx.run_dir) / LATENTS_DIR} holds no snapshots; they are saved during "
                        "training by aevb.report.ReportCallback (every CLI run uses it)")
    return {"latent_series.png": latent_series_figure(snaps, labels, method, seed)}


def _figure_interpolation(ctx: FigureContext, n: Optional[int], **_):
    steps = n or 10
    x = ctx.x
    pairs = min(6, len(x) // 2)
    if pairs < 1:
        raise PlotError("interpolations need at least 2 test images")
    rows = []
    y = ctx.y
    used = set()
    for i in range(pairs):
        a = i
        # pair each image with a later one of a different label when labels are known
        b = pairs + i
        if y is not None:
            for j in range(pairs, min(len(x), 200)):
                if j not in used and int(y[j]) != int(y[a]):
                    b = j
                    break
        used.add(b)
        _, xs = interpolate(ctx.model, x[a], x[b], steps)
        rows.append((ctx.display(x[a]), ctx.display(xs), ctx.display(x[b])))
    return {"interpolation.png": interpolation_figure(rows, ctx.image_shape)}


def _figure_traversal(ctx: FigureContext, n: Optional[int], **_):
    steps = n or 11
    if len(ctx.x) == 0:
        raise PlotError("the test split is empty")
    kl = ctx.kl
    dims = dims_by_kl(kl)[:10]
    values = np.linspace(-3, 3, steps) if steps > 1 else np.zeros(1)
    xs = torch.cat([traversal(ctx.model, ctx.x[0], d, values)[1] for d in dims])
    return {"traversal.png": traversal_figure(ctx.display(xs), dims, values, ctx.image_shape, kl)}


def _figure_curves(ctx: FigureContext, **_):
    return {"curves.png": curves_figure(ctx.history)}


def _figure_kl(ctx: FigureContext, **_):
    return {"kl.png": kl_figure(ctx.kl)}


_DRAWERS: Dict[str, Callable] = {
    "reconstructions": _figure_reconstructions, "samples": _figure_samples, "manifold": _figure_manifold,
    "latent": _figure_latent, "latent-series": _figure_latent_series, "interpolation": _figure_interpolation,
    "traversal": _figure_traversal, "curves": _figure_curves, "kl": _figure_kl,
}


def make_figures(ctx: FigureContext, kind: str, n: Optional[int] = None, method: str = "pca",
                 seed: int = 0, draw: bool = False) -> Dict[str, object]:
    """{file name: Figure} for one ``kind`` (see KINDS)."""
    if kind not in _DRAWERS:
        raise PlotError(f"unknown figure kind {kind!r}; choose from {', '.join(KINDS)} or all")
    if method not in METHODS:
        raise PlotError(f"unknown method {method!r}; choose {' or '.join(METHODS)}")
    if n is not None and n < 1:
        raise PlotError(f"the grid size must be at least 1, got {n}")
    return _DRAWERS[kind](ctx, n=n, method=method, seed=seed, draw=draw)


def draw_figures(ctx: FigureContext, kinds: Union[str, Sequence[str]] = "all", out_dir=None,
                 n: Optional[int] = None, method: str = "pca", seed: int = 0, draw: bool = False,
                 strict: Optional[bool] = None) -> Tuple[Dict[str, Path], Dict[str, str]]:
    """Draw figures and write them as PNG into ``out_dir`` (default RUN/figures).

    Returns ({file name: path written}, {kind: why it was skipped}). With ``kinds='all'`` a kind
    that does not apply (e.g. no latent snapshots) is skipped and reported; with a single kind
    (or ``strict=True``) the error is raised.
    """
    if kinds == "all":
        kinds, strict = list(KINDS), bool(strict)
    elif isinstance(kinds, str):
        kinds, strict = [kinds], True if strict is None else strict
    else:
        kinds, strict = list(kinds), True if strict is None else strict
    if out_dir is None:
        if ctx.run_dir is None:
            raise PlotError("give out_dir: the figures have no run folder to go to")
        out_dir = Path(ctx.run_dir) / FIGURES_DIR
    out_dir = Path(out_dir)
    written, skipped = {}, {}
    for kind in kinds:
        try:
            figs = make_figures(ctx, kind, n=n, method=method, seed=seed, draw=draw)
        except PlotError as e:
            if strict:
                raise
            skipped[kind] = str(e)
            continue
        for name, fig in figs.items():
            written[name] = save_figure(fig, out_dir / name)
            fig.clear()
    return written, skipped
