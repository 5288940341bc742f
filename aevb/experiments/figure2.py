"""Figure 2 of the AEVB paper: the lower bound (train and test) against the number of training
samples evaluated, AEVB against wake-sleep, for several latent sizes, on MNIST (500 hidden units)
and Frey Face (200 hidden units). The wake-sleep bound is the ELBO with its recognition model."""
from __future__ import annotations

from .. import metrics as M
from ..figures.draw import new_panels, save_figure
from .runner import (Context, SubRun, budget_settings, elbo_of, log_points, plot_train_test, run_subrun, subset,
                     write_csv)

NAME = "figure2"
TITLE = "lower bound vs training samples evaluated, AEVB vs wake-sleep (MNIST, Frey Face)"
BUDGETS = {
    # tests: digits in place of both data sets, tiny networks
    "tiny": {"mnist": [2], "frey": [2], "hidden": {"mnist": 16, "frey": 16}, "start": 100, "stop": 300,
             "points": 2, "eval_n": 100},
    "quick": {"mnist": [3, 20], "frey": [2, 10], "hidden": {"mnist": 500, "frey": 200}, "start": 1000,
              "stop": 100000, "points": 5, "eval_n": 1000},
    "paper": {"mnist": [3, 5, 10, 20, 200], "frey": [2, 5, 10, 20], "hidden": {"mnist": 500, "frey": 200},
              "start": 100000, "stop": 100000000, "points": 16, "eval_n": None},
}
METHODS = ("aevb", "wake-sleep")


def run(ctx: Context) -> dict:
    b = budget_settings(NAME, BUDGETS, ctx.budget)
    rows = []
    for which in ("mnist", "frey"):
        data = ctx.data(which)
        x_tr = subset(data.train, b["eval_n"], seed=ctx.seed + 1).to(ctx.device)
        x_te = subset(data.test, b["eval_n"], seed=ctx.seed + 2).to(ctx.device)

        def evaluate(model, algo, x_tr=x_tr, x_te=x_te):
            return {M.TRAIN_BOUND: elbo_of(model, x_tr), M.TEST_BOUND: elbo_of(model, x_te)}

        stop = b["stop"][which] if isinstance(b["stop"], dict) else b["stop"]
        eval_at = log_points(b["start"], stop, b["points"])
        for latent in b[which]:
            for method in METHODS:
                spec = SubRun(f"{which}-z{latent}-{method}", method, which, latent, b["hidden"][which],
                              eval_at, evaluate, info={"panel": which})
                rows += run_subrun(ctx, spec).rows
    csv_path = write_csv(ctx.out / f"{NAME}.csv", rows)
    png = plot(rows, ctx.out / f"{NAME}.png", b)
    return {"csv": csv_path, "png": png, "rows": rows}


def plot(rows, path, b):
    ncols = max(len(b["mnist"]), len(b["frey"]))
    fig, axes = new_panels(2, ncols)
    for ax in axes.flat:
        ax.set_visible(False)
    for r_i, which in enumerate(("mnist", "frey")):
        for c_i, z in enumerate(b[which]):
            ax = axes[r_i][c_i]
            ax.set_visible(True)
            sel = plot_train_test(ax, [r for r in rows if r["panel"] == which and int(r["latent"]) == z],
                                  METHODS, M.TRAIN_BOUND, M.TEST_BOUND)
            name = sel[0]["dataset"] if sel else which
            ax.set_title(f"{'MNIST' if name == 'mnist' else 'Frey Face' if name == 'frey-face' else name}, "
                         f"$N_z$ = {z}", fontsize=9)
            ax.set_xlabel("# training samples evaluated", fontsize=8)
            if c_i == 0:
                ax.set_ylabel(r"$\mathcal{L}$ (nats)", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=6, loc="lower right")
    return save_figure(fig, path, dpi=80, tight_layout=True)
