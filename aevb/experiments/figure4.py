"""Figure 4 of the AEVB paper: learned 2-D data manifolds of Frey Face (a) and MNIST (b). The
decoder's mean output is drawn on a grid of latent values z = (Phi^-1(u1), Phi^-1(u2)), with u
evenly spaced in (0, 1) (``scipy.stats.norm.ppf``), i.e. equal steps of prior probability mass."""
from __future__ import annotations

import torch

from .. import metrics as M
from ..figures.compute import manifold_grid
from ..figures.draw import new_panels, save_figure
from ..images import grid
from .runner import Context, SubRun, budget_settings, elbo_of, run_subrun, subset, write_csv

NAME = "figure4"
TITLE = "learned 2-D manifolds (Frey Face, MNIST)"
BUDGETS = {
    "tiny": {"samples": {"frey": 300, "mnist": 300}, "hidden": {"frey": 16, "mnist": 16}, "grid": 5},
    "quick": {"samples": {"frey": 1000000, "mnist": 1000000}, "hidden": {"frey": 200, "mnist": 500}, "grid": 12},
    "paper": {"samples": {"frey": 10000000, "mnist": 10000000}, "hidden": {"frey": 200, "mnist": 500}, "grid": 20},
}


@torch.no_grad()
def manifold(model, n: int) -> torch.Tensor:
    """Decoder means on the n x n grid of Gaussian quantiles (``aevb.figures.compute.manifold_grid``)."""
    return manifold_grid(model, n, kind="quantile")[1]


def run(ctx: Context) -> dict:
    b = budget_settings(NAME, BUDGETS, ctx.budget)
    rows, panels = [], []
    for which in ("frey", "mnist"):
        data = ctx.data(which)
        x_te = subset(data.test, 1000, seed=ctx.seed + 2).to(ctx.device)
        spec = SubRun(f"{which}-z2", "aevb", which, 2, b["hidden"][which], [b["samples"][which]],
                      lambda model, algo, x_te=x_te: {M.TEST_BOUND: elbo_of(model, x_te)})
        res = run_subrun(ctx, spec)
        rows += res.rows
        img = grid(manifold(res.model, b["grid"]), data.image_shape, b["grid"], pad=0)
        panels.append((which, data.name, img))
    csv_path = write_csv(ctx.out / f"{NAME}.csv", rows)
    fig, axes = new_panels(1, 2, size=(4.0, 4.2))
    for ax, (which, name, img), letter in zip(axes[0], panels, "ab"):
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(f"({letter}) Learned {'Frey Face' if name == 'frey-face' else 'MNIST' if name == 'mnist' else name} manifold",
                     fontsize=9)
        ax.axis("off")
    png = save_figure(fig, ctx.out / f"{NAME}.png", dpi=72, tight_layout=True)
    return {"csv": csv_path, "png": png, "rows": rows}
