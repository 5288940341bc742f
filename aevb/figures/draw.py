"""Drawing: matplotlib figures of what :mod:`aevb.figures.compute` and
:mod:`aevb.sampling` return, and the one figure toolkit of aevb (the run figures, the
report and the paper experiments): :func:`new_figure` / :func:`new_panels` make a Figure on the
Agg canvas (no pyplot state, no display needed) and :func:`save_figure` writes it atomically as
PNG. Every ``*_figure`` function returns a ``matplotlib.figure.Figure``.

Images keep the data's own shape ``(C, H, W)``: grey (C=1) or colour (C=3), square or not
(Frey Face is 28x20); pixel values are in [0, 1].
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .. import metrics as M
from ..bounds import ACTIVE_UNIT_THRESHOLD
from ..errors import PlotError
from ..images import grid as image_grid
from ..io import atomic_path
from .compute import active_mask, embed_2d
from ..sampling import paired_rows

PAD = 1  # pixels between tiles of an image grid (aevb.images.grid's default)
MAX_GRID_INCHES = 13.0  # an image grid is drawn at most this wide or high (100 dpi)


# ============================================================================ the toolkit
def new_figure(width: float, height: float, dpi: int = 100):
    """A matplotlib Figure of ``width`` x ``height`` inches (at least 1 x 1) on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(1.0, width), max(1.0, height)), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def new_panels(nrows: int, ncols: int, size: Tuple[float, float] = (3.0, 2.4), dpi: int = 100):
    """(figure, axes [nrows][ncols]): a grid of panels of ``size`` inches each."""
    fig = new_figure(size[0] * ncols, size[1] * nrows, dpi=dpi)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def save_figure(fig, path: Union[str, Path], dpi: int = 100, tight_layout: bool = False) -> Path:
    """Render ``fig`` as PNG to ``path`` atomically (a temporary file renamed into place),
    cropped to its content on white; ``tight_layout`` first packs the panels."""
    path = Path(path)
    if tight_layout:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.1, facecolor="white")
    return path


# ============================================================================ image grids
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
    """Data images over their reconstructions: row pairs (data, reconstruction) of ``ncol``
    (:func:`aevb.sampling.paired_rows`)."""
    if len(x) == 0:
        raise PlotError("no images to reconstruct")
    ncol = max(1, min(int(ncol), len(x)))
    tiles = paired_rows(x, rec, ncol)
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
                   title: Optional[str] = None, prior: str = "N(0, I)"):
    """Samples from the model: z ~ ``prior`` decoded to the likelihood's mean; with ``x_draw``, a
    second panel with one draw x ~ p(x|z) for the same z."""
    panels = 1 if x_draw is None else 2
    fig, axes, ncol, _, interp = _grid_figure(len(x), image_shape, ncol, panels=panels)
    show_grid(axes[0], x, image_shape, ncol, interp)
    axes[0].set_title("mean of p(x|z)", fontsize=9)
    if x_draw is not None:
        show_grid(axes[1], x_draw, image_shape, ncol, interp)
        axes[1].set_title("a draw x ~ p(x|z), same z", fontsize=9)
    fig.suptitle(title or f"{len(x)} samples from the model, z ~ {prior}", fontsize=10)
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
            ranked = "KL" if kl is not None else "variance of the posterior mean"
            title += (f"\n{latent_dim}-D latent space: {which} of highest {ranked}{kl_txt}, "
                      f"the other {latent_dim - (2 if two else 1)} at 0")
    ax.set_title(title, fontsize=9)
    return fig


# ============================================================================ latent space
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


# ============================================================================ paths, curves, units
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
    ranked = "KL" if kl is not None else "variance of the posterior mean"
    ax.set_title(title or f"Traversals of single latent dimensions, ordered by {ranked} (highest first)\n"
                          "from the posterior mean of a test image; one dimension varies per row",
                 fontsize=9)
    return fig


def curves_figure(history: Sequence[dict], title: Optional[str] = None):
    """Training curves: the bound (ELBO) on train / test (/ valid) per epoch, its reconstruction
    term E_q[log p(x|z)] and its KL term, in nats per datapoint."""
    from matplotlib.ticker import MaxNLocator

    if not history:
        raise PlotError("the run has no metrics yet; train at least one epoch")
    epochs = [r[M.EPOCH] for r in history]
    fig = new_figure(13, 3.8)
    axes = fig.subplots(1, 3)
    panels = ["ELBO (nats per datapoint)", "reconstruction  E_q[log p(x|z)]", "KL(q(z|x) || p(z))"]
    styles = {"train": dict(color="C0"), "test": dict(color="C1"), "valid": dict(color="C2", ls="--")}
    marker = "o" if len(epochs) <= 30 else None
    for i, (ax, label) in enumerate(zip(axes, panels)):
        for split, st in styles.items():
            k = M.split_terms(split)[i]  # the bound, log p(x|z) or the KL of the split
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
    fig.suptitle(title or f"Training curves (last epoch {last[M.EPOCH]}: test ELBO {last[M.TEST_BOUND]:.2f} "
                          f"nats per datapoint)", fontsize=11)
    fig.tight_layout()
    return fig


def _unit_bars(ax, values: np.ndarray, colours, floor: float):
    """Bars of ``values`` per latent unit (1-based) on a log scale; values below ``floor`` are
    drawn at ``floor`` so that a zero still shows."""
    J = len(values)
    ax.bar(np.arange(1, J + 1), np.maximum(values, floor), color=colours, bottom=0)
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor * 0.8)
    if J <= 40:
        ax.set_xticks(np.arange(1, J + 1))
        ax.tick_params(axis="x", labelsize=7)


def _floor(values: np.ndarray, at_most: float) -> float:
    positive = values[values > 0]
    return min(at_most, float(positive.min()) / 2 if len(positive) else at_most)


def kl_figure(kl: Optional[Tensor], variances: Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD,
              title: Optional[str] = None):
    """The latent units, two panels of bars on log scales with the same colours (active units in
    colour, inactive in grey). Top: the variance over the data of the posterior mean
    E_q[z_j|x], which decides activity (above ``threshold``, the dashed line: the IWAE
    paper's criterion); bottom: the KL per unit, KL(q(z_j|x) || p(z_j)) averaged over the data.
    ``fig.axes[0].patches`` are the variance bars, ``fig.axes[1].patches`` the KL bars. With
    ``kl`` None (a flow posterior or a learned prior: the KL does not split into units) the
    figure has the top panel only."""
    var = np.asarray(torch.as_tensor(variances).detach().cpu().double().numpy())
    if kl is not None:
        kl = np.asarray(torch.as_tensor(kl).detach().cpu().double().numpy())
        if len(kl) != len(var):
            raise ValueError(f"{len(kl)} KL values but {len(var)} variances")
    J = len(var)
    active = active_mask(torch.from_numpy(var), threshold).numpy()
    colours = np.where(active, "C0", "0.7")
    fig = new_figure(max(5.0, 0.28 * J + 2.0), 6.0 if kl is not None else 3.4)
    ax_var, ax_kl = fig.subplots(2, 1, sharex=True) if kl is not None else (fig.subplots(1, 1), None)
    _unit_bars(ax_var, var, colours, _floor(var, threshold / 10))
    ax_var.axhline(threshold, color="C3", ls="--", lw=1)
    ax_var.set_ylabel("Var$_x$ E$_q$[$z_j$|x]")
    ax_var.set_title(f"activity: variance over test points of the posterior mean (active above the dashed "
                     f"line, {threshold:g})", fontsize=9)
    if ax_kl is None:
        ax_var.set_xlabel("latent unit j")
        total = "\nthe KL does not split into units with a flow posterior, a learned prior or stacked layers"
    else:
        _unit_bars(ax_kl, kl, colours, _floor(kl, 1e-3))
        ax_kl.set_ylabel("KL (nats)")
        ax_kl.set_xlabel("latent unit j")
        ax_kl.set_title("KL per unit, mean over test points", fontsize=9)
        total = f"total KL {kl.sum():.2f} nats"
    fig.suptitle(title or f"Latent units: {int(active.sum())} of {J} active (Var_x E_q[z_j|x] > {threshold:g}); "
                          f"{total}", fontsize=10)
    fig.tight_layout()
    return fig
