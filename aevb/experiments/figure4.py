"""Figure 4 of the AEVB paper: learned 2-D data manifolds of Frey Face (a) and MNIST (b). The
decoder's mean output is drawn on a grid of latent values z = (Phi^-1(u1), Phi^-1(u2)), with u
evenly spaced in (0, 1) (``scipy.stats.norm.ppf``), i.e. equal steps of prior probability mass."""
from __future__ import annotations

import numpy as np
import torch

from ..images import grid
from .runner import Context, SubRun, budget_settings, elbo_of, new_figure, run_subrun, save_figure, subset, write_csv

NAME = "figure4"
TITLE = "learned 2-D manifolds (Frey Face, MNIST)"
BUDGETS = {
    "tiny": {"samples": {"frey": 300, "mnist": 300}, "hidden": {"frey": 16, "mnist": 16}, "grid": 5},
    "quick": {"samples": {"frey": 100000, "mnist": 200000}, "hidden": {"frey": 200, "mnist": 500}, "grid": 12},
    "paper": {"samples": {"frey": 10000000, "mnist": 10000000}, "hidden": {"frey": 200, "mnist": 500}, "grid": 20},
}


def quantile_grid(n: int) -> torch.Tensor:
    """[n*n, 2] latent points: rows vary z2 (top to bottom: high to low), columns z1; the values
    are norm.ppf of n evenly spaced probabilities in (0, 1)."""
    from scipy.stats import norm

    u = (np.arange(n) + 0.5) / n
    v = norm.ppf(u)
    z1, z2 = np.meshgrid(v, v[::-1])
    return torch.from_numpy(np.stack([z1.ravel(), z2.ravel()], 1).astype(np.float32))


@torch.no_grad()
def manifold(model, n: int) -> torch.Tensor:
    z = quantile_grid(n).to(next(model.parameters()).device)
    return model.likelihood.mean(model.decode(z))


def run(ctx: Context) -> dict:
    b = budget_settings(NAME, BUDGETS, ctx.budget)
    rows, panels = [], []
    for which in ("frey", "mnist"):
        data = ctx.data(which)
        x_te = subset(data.test.x, 1000, seed=ctx.seed + 2).to(ctx.device)
        spec = SubRun(f"{which}-z2", "aevb", which, 2, b["hidden"][which], [b["samples"][which]],
                      lambda model, algo, x_te=x_te: {"test_bound": elbo_of(model, x_te)})
        res = run_subrun(ctx, spec)
        rows += res.rows
        img = grid(manifold(res.model, b["grid"]), data.image_shape, b["grid"], pad=0)
        panels.append((which, data.name, img))
    csv_path = write_csv(ctx.out / f"{NAME}.csv", rows)
    fig, axes = new_figure(1, 2, size=(4.0, 4.2))
    for ax, (which, name, img), letter in zip(axes[0], panels, "ab"):
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(f"({letter}) Learned {'Frey Face' if name == 'frey-face' else 'MNIST' if name == 'mnist' else name} manifold",
                     fontsize=9)
        ax.axis("off")
    png = save_figure(fig, ctx.out / f"{NAME}.png", dpi=72)
    return {"csv": csv_path, "png": png, "rows": rows}
