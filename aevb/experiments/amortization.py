"""Amortized against mean-field inference (not a figure of the AEVB paper; the question it leaves
open). An AEVB model is trained on MNIST; then, for the same decoder, free per-datapoint Gaussian
parameters are optimised with Adam (all test points at once) and their ELBO is compared with the
encoder's: the difference is the amortization gap. Time per datapoint is reported for both."""
from __future__ import annotations

from .. import metrics as M
from ..baselines.mean_field import amortization_gap
from ..figures.draw import new_panels, save_figure
from .runner import Context, SubRun, budget_settings, elbo_of, read_csv, run_subrun, subset, write_csv

NAME = "amortization"
TITLE = "amortized (encoder) vs mean-field (per-datapoint) inference: the amortization gap"
BUDGETS = {
    "tiny": {"latent": 2, "hidden": 16, "samples": 300, "eval_n": 20, "steps": 30, "record_every": 10},
    "quick": {"latent": 20, "hidden": 500, "samples": 100000, "eval_n": 200, "steps": 1000, "record_every": 50},
    "paper": {"latent": 20, "hidden": 500, "samples": 10000000, "eval_n": 1000, "steps": 5000, "record_every": 100},
}
INITS = ("prior", "encoder")


def run(ctx: Context) -> dict:
    b = budget_settings(NAME, BUDGETS, ctx.budget)
    data = ctx.data("mnist")
    x_te = subset(data.test, b["eval_n"], seed=ctx.seed + 2).to(ctx.device)
    spec = SubRun(f"mnist-z{b['latent']}", "aevb", "mnist", b["latent"], b["hidden"], [b["samples"]],
                  lambda model, algo: {M.TEST_BOUND: elbo_of(model, x_te)})
    res = run_subrun(ctx, spec)
    curve_path, summary_path = ctx.out / f"{NAME}_curves.csv", ctx.out / f"{NAME}.csv"
    if res.skipped and summary_path.is_file() and curve_path.is_file():
        ctx.log("mean-field results found, skipped")
        summary, curves = read_csv(summary_path), read_csv(curve_path)
    else:
        summary, curves = [], []
        for init in INITS:
            ctx.log(f"mean-field from the {init}: {b['steps']} Adam steps on {len(x_te)} test points")
            r = amortization_gap(res.model, x_te, steps=b["steps"], lr=0.05, init=init,
                                 record_every=b["record_every"])
            summary.append({k: v for k, v in r.items() if k not in ("history", "per_point_gap")} |
                           {"samples_trained": b["samples"], "latent": b["latent"],
                            "gap_points_negative": int((r["per_point_gap"] < 0).sum())})
            curves += [{"init": init, **h} for h in r["history"]]
            ctx.log(f"  amortized {r['amortized_elbo']:.2f}  mean-field {r['mean_field_elbo']:.2f}  "
                    f"gap {r['gap']:.2f} nats")
        write_csv(curve_path, curves)
        write_csv(summary_path, summary)
    fig, axes = new_panels(1, 2, size=(3.6, 2.8))
    ax = axes[0][0]
    for init, color in zip(INITS, ("tab:green", "tab:purple")):
        sel = [c for c in curves if c["init"] == init]
        ax.plot([int(c["step"]) for c in sel], [float(c["elbo"]) for c in sel], color=color,
                label=f"mean-field (start: {init})")
    ax.axhline(float(summary[0]["amortized_elbo"]), color="tab:red", ls="--", label="amortized (encoder)")
    lo = min(float(s["amortized_elbo"]) for s in summary)
    hi = max(float(s["mean_field_elbo"]) for s in summary)
    ax.set_ylim(lo - 3 * max(1.0, hi - lo), hi + 0.5 * max(1.0, hi - lo))
    ax.set_xlabel("Adam steps (all test points at once)", fontsize=8)
    ax.set_ylabel("test ELBO (nats)", fontsize=8)
    ax.set_title("ELBO of q: per-datapoint vs encoder", fontsize=9)
    ax.legend(fontsize=6, loc="lower right")
    ax.tick_params(labelsize=7)
    ax = axes[0][1]
    labels = ["amortized"] + [f"mean-field\n({s['init']})" for s in summary]
    times = [float(summary[0]["amortized_s_per_point"])] + [float(s["mean_field_s_per_point"]) for s in summary]
    ax.bar(range(len(times)), times, color=["tab:red", "tab:green", "tab:purple"])
    ax.set_yscale("log")
    ax.set_xticks(range(len(times)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("seconds per datapoint", fontsize=8)
    ax.set_title("inference time", fontsize=9)
    ax.tick_params(labelsize=7)
    png = save_figure(fig, ctx.out / f"{NAME}.png", dpi=80, tight_layout=True)
    return {"csv": summary_path, "png": png, "rows": summary, "curves": curve_path}
