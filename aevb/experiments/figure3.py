"""Figure 3 of the AEVB paper: the marginal log-likelihood against the number of training samples
evaluated for AEVB, wake-sleep and Monte Carlo EM (HMC), with 3 latent dimensions and 100 hidden
units, trained on 1000 and on 50000 MNIST points. The marginal likelihood is estimated with the
Appendix-D estimator (HMC posterior samples, a Gaussian fitted to them, the harmonic-mean-style
estimate with fresh samples) on fixed subsets of the training and test sets; AEVB and wake-sleep
also get the importance-weighted estimate L_k with their own encoder (``*_iw`` columns)."""
from __future__ import annotations

from ..baselines.marginal_likelihood import iw_log_px, model_log_px
from ..figures.draw import new_panels, save_figure
from .runner import Context, SubRun, budget_settings, log_points, plot_train_test, run_subrun, subset, write_csv

NAME = "figure3"
TITLE = "marginal log-likelihood vs training samples, AEVB vs wake-sleep vs MCEM (MNIST, 3-D latent)"
BUDGETS = {
    "tiny": {"n_train": [100, 300], "hidden": 16, "start": 100, "stop": 300, "points": 2, "eval_n": 20,
             "hmc_burn_in": 10, "hmc_samples": 10, "iw_k": 10, "mcem": {"init_burn_in": 2}},
    "quick": {"n_train": [1000, 50000], "hidden": 100, "start": 1000, "stop": 100000, "points": 3,
              "eval_n": 100, "hmc_burn_in": 50, "hmc_samples": 50, "iw_k": 500, "mcem": {}},
    "paper": {"n_train": [1000, 50000], "hidden": 100, "start": 100000, "stop": 100000000, "points": 13,
              "eval_n": 1000, "hmc_burn_in": 300, "hmc_samples": 500, "iw_k": 5000, "mcem": {}},
}
LATENT = 3
METHODS = ("aevb", "wake-sleep", "mcem")


def run(ctx: Context) -> dict:
    b = budget_settings(NAME, BUDGETS, ctx.budget)
    data = ctx.data("mnist")
    eval_at = log_points(b["start"], b["stop"], b["points"])
    rows = []
    for n_train in b["n_train"]:
        # the evaluation points of the training set are drawn from the n_train points trained on
        x_train = subset(data.train, n_train, seed=ctx.seed)
        x_tr = subset(x_train, b["eval_n"], seed=ctx.seed + 1).to(ctx.device)
        x_te = subset(data.test, b["eval_n"], seed=ctx.seed + 2).to(ctx.device)
        for method in METHODS:
            def evaluate(model, algo, method=method, x_tr=x_tr, x_te=x_te):
                out = {}
                start = "prior" if method == "mcem" else "encoder"
                for split, x in (("train", x_tr), ("test", x_te)):
                    ml = model_log_px(model, x, n_samples=b["hmc_samples"], burn_in=b["hmc_burn_in"], start=start)
                    out[f"{split}_log_px"] = float(ml.log_px.mean())
                    out[f"{split}_hmc_accept"] = float(ml.accept.mean())
                    if method != "mcem":
                        out[f"{split}_log_px_iw"] = float(iw_log_px(model, x, k=b["iw_k"]).mean())
                if method == "mcem":
                    out["mcem_train_accept"] = float(algo.last_accept)
                return out

            spec = SubRun(f"n{n_train}-{method}", method, "mnist", LATENT, b["hidden"], eval_at, evaluate,
                          n_train=n_train, mcem=dict(b["mcem"]))
            rows += run_subrun(ctx, spec).rows
    csv_path = write_csv(ctx.out / f"{NAME}.csv", rows)
    png = plot(rows, ctx.out / f"{NAME}.png", b)
    return {"csv": csv_path, "png": png, "rows": rows}


def plot(rows, path, b):
    fig, axes = new_panels(1, len(b["n_train"]), size=(3.6, 2.8))
    for ax, n in zip(axes[0], b["n_train"]):
        plot_train_test(ax, [r for r in rows if int(r["n_train"]) == n], METHODS, "train_log_px", "test_log_px")
        ax.set_title(f"$N_{{train}}$ = {n}", fontsize=9)
        ax.set_xlabel("# training samples evaluated", fontsize=8)
        ax.set_ylabel("marginal log-likelihood (nats)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=6, loc="lower right")
    return save_figure(fig, path, dpi=80, tight_layout=True)
