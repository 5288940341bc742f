"""Figure 5 of the AEVB paper: random samples (decoder means at z ~ N(0, I)) from MNIST models
with 2, 5, 10 and 20 latent dimensions, trained with AEVB."""
from __future__ import annotations

from .. import metrics as M
from ..figures.draw import new_panels, save_figure
from ..sampling import prior_samples
from ..images import grid
from .runner import Context, SubRun, budget_settings, elbo_of, run_subrun, subset, write_csv

NAME = "figure5"
TITLE = "random samples from MNIST models with 2, 5, 10, 20 latent dimensions"
BUDGETS = {
    "tiny": {"latents": [2, 5], "hidden": 16, "samples": 300, "n": 4},
    "quick": {"latents": [2, 5, 10, 20], "hidden": 500, "samples": 100000, "n": 10},
    "paper": {"latents": [2, 5, 10, 20], "hidden": 500, "samples": 100000000, "n": 10},
}


def run(ctx: Context) -> dict:
    b = budget_settings(NAME, BUDGETS, ctx.budget)
    data = ctx.data("mnist")
    x_te = subset(data.test, 1000, seed=ctx.seed + 2).to(ctx.device)
    rows, panels = [], []
    for latent in b["latents"]:
        spec = SubRun(f"mnist-z{latent}", "aevb", "mnist", latent, b["hidden"], [b["samples"]],
                      lambda model, algo: {M.TEST_BOUND: elbo_of(model, x_te)})
        res = run_subrun(ctx, spec)
        rows += res.rows
        _, x = prior_samples(res.model, b["n"] * b["n"], seed=ctx.seed + 5)
        panels.append((latent, grid(x, data.image_shape, b["n"], pad=0)))
    csv_path = write_csv(ctx.out / f"{NAME}.csv", rows)
    fig, axes = new_panels(1, len(panels), size=(2.6, 2.8))
    for ax, (latent, img), letter in zip(axes[0], panels, "abcdefgh"):
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"({letter}) {latent}-D latent space", fontsize=9)
        ax.axis("off")
    png = save_figure(fig, ctx.out / f"{NAME}.png", dpi=72, tight_layout=True)
    return {"csv": csv_path, "png": png, "rows": rows}
