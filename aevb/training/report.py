"""The run report: one self-contained ``report.html`` in the run folder.

It holds the run's configuration (a table), the final numbers (train / valid / test bound and its
two terms, and the importance-weighted estimates of any ``evaluation*.json`` that ``aevb
evaluate`` wrote, read through the evaluation schema of :mod:`aevb.evaluate`), the training
curves and every figure of :mod:`aevb.figures`. Images are
embedded as base64 ``data:`` URIs and the style sheet is inline: the file needs no network and no
other file, so it can be mailed or archived on its own.

It is written at the end of training by ``ReportCallback`` (below; every run gets one unless
``train.report`` is false) and on demand by ``aevb report RUN`` / :func:`write_report`. The
callback also saves the test points' posterior means every few epochs
(``RUN/latents/epochNNN.npy``) for the figure that shows q(z|x) moving away from the prior
during training.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..bounds import ACTIVE_UNIT_THRESHOLD
from ..data.base import SPLITS
from ..errors import PlotError
from ..evaluate import headline, run_evaluations
from ..figures.compute import latent_means
from ..figures.draw import curves_figure, save_figure
from ..figures.runfigures import (FIGURE_FILES, FIGURES_DIR, KINDS, FigureContext, draw_figures,
                                 save_latent_snapshot)
from .. import metrics as M
from ..io import atomic_write_text
from ..runs import Run
from ..version import __version__
from .callbacks import Callback

REPORT_FILE = "report.html"

# (figure file, heading, caption) in the order the report shows them.
SECTIONS: List[Tuple[str, str, str]] = [
    ("curves.png", "Training curves",
     "The evidence lower bound (ELBO) per epoch on the training and test sets (and validation, when "
     "held out), with its two terms: the expected reconstruction log-likelihood E<sub>q</sub>[log p(x|z)] "
     "and KL(q(z|x) || p(z)). Nats per datapoint; a higher bound is better. The training numbers are "
     "averages over the epoch while the parameters changed."),
    ("kl.png", "Active latent units",
     "Top: the variance over test points of the posterior mean E<sub>q</sub>[z<sub>j</sub>|x] of every latent "
     f"unit. A unit is active when it is above the dashed line ({ACTIVE_UNIT_THRESHOLD:g}, the criterion of "
     "Burda et al.'s IWAE paper, as in <code>aevb evaluate</code>); an inactive unit's posterior mean hardly "
     "depends on x, so the decoder learns to ignore it. Bottom: the KL per unit, "
     "KL(q(z<sub>j</sub>|x) || p(z<sub>j</sub>)) averaged over the same test points, in the same colours."),
    ("reconstructions.png", "Reconstructions",
     "Test images (rows marked <i>data</i>) over their reconstructions: the decoder's mean at z equal to "
     "the posterior mean E<sub>q</sub>[z|x]."),
    ("samples.png", "Samples from the prior",
     "z ~ p(z), the model's prior (N(0, I) unless the run learned one), decoded to the mean of p(x|z); where shown, the right panel is one draw x ~ p(x|z) for "
     "the same z."),
    ("manifold.png", "Learned data manifold",
     "Decoder means on a grid of latent values that are Gaussian quantiles (the inverse CDF of evenly "
     "spaced values in (0, 1)), as in Figure 4 of the AEVB paper, so each tile covers equal prior mass. "
     "For more than two latent dimensions the grid spans the two of highest KL, the others at 0."),
    ("manifold_uniform.png", "Prior-predictive grid",
     "Decoder means with the latent coordinates evenly spaced in [-3, 3]."),
    ("latent.png", "Latent space",
     "Posterior means of test points, coloured by label when the data have labels; directly for a 2-D "
     "latent space, through PCA or t-SNE otherwise. Dashed circles: radius 1 and 2 of the prior."),
    ("latent_series.png", "Latent space during training",
     "The same posterior means at several epochs on shared axes: q(z|x) moves away from the prior as "
     "the encoder learns."),
    ("interpolation.png", "Interpolations",
     "Decoder means along straight lines between the posterior means of two test images (shown at both "
     "ends)."),
    ("traversal.png", "Latent traversals",
     "Starting from the posterior mean of a test image, one latent dimension at a time is varied over "
     "[-3, 3] while the others stay fixed; rows are ordered by KL, most informative first."),
]

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1d1d1f;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.6em;margin:0 0 4px}
h2{font-size:1.2em;margin:32px 0 8px;border-bottom:1px solid #d8dbe0;padding-bottom:4px}
h3{font-size:1em;margin:18px 0 6px}
.sub{color:#5f6368;margin:0 0 16px}
table{border-collapse:collapse;background:#fff;margin:6px 0 10px;font-size:0.92em}
th,td{border:1px solid #d8dbe0;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#eef0f3;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;font-family:ui-monospace,Menlo,Consolas,monospace}
td code,td.val{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:0.95em}
figure{margin:10px 0 24px;background:#fff;border:1px solid #d8dbe0;padding:12px;border-radius:4px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:#3c4043;font-size:0.9em;margin-top:8px}
.note{color:#8a5a00;background:#fff8e5;border:1px solid #f0dca0;padding:6px 10px;border-radius:4px;font-size:0.9em}
.grid2{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
nav a{margin-right:12px;color:#1a56b8;text-decoration:none;font-size:0.92em}
footer{color:#80868b;font-size:0.85em;margin-top:40px}
"""


# ---------------------------------------------------------------------------- reading a run
def flatten(d: dict, prefix: str = "", depth: int = 3) -> List[Tuple[str, object]]:
    """Nested dict -> [(dotted key, scalar or short text)]."""
    rows: List[Tuple[str, object]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth > 1:
            rows += flatten(v, key + ".", depth - 1)
        elif isinstance(v, (list, tuple)):
            if len(v) <= 8 and all(isinstance(a, (int, float, str, bool)) or a is None for a in v):
                rows.append((key, ", ".join(_fmt(a) for a in v)))
            else:
                rows.append((key, f"[{len(v)} values]"))
        elif isinstance(v, dict):
            rows.append((key, json.dumps(v)[:200]))
        else:
            rows.append((key, v))
    return rows


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4f}" if abs(v) < 1e6 else f"{v:.6g}"
    return str(v)


def _fmt_config(v) -> str:
    """A config value as the user would type it (0.001, not 0.0010)."""
    if v is None or isinstance(v, bool):
        return _fmt(v)
    return repr(v) if isinstance(v, float) else str(v)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ---------------------------------------------------------------------------- writing
def write_report(run: Union[str, Path, Run], ctx: Optional[FigureContext] = None, figures: bool = True,
                 out: Union[str, Path, None] = None, n: Optional[int] = None, method: str = "pca",
                 seed: int = 0, draw: bool = True, device: str = "auto", status: Optional[str] = None,
                 checkpoint: str = "last") -> Path:
    """Draw the run's figures (unless ``figures=False``: then embed those already in
    RUN/figures) and write the self-contained report (default RUN/report.html) atomically.

    ``ctx`` gives the model and data (e.g. from a trainer); otherwise they are loaded from the
    run's ``last`` (or ``best``) checkpoint; the report says which, and its epoch. A figure that cannot be drawn is listed in the report with the reason.
    ``status`` overrides the run status shown (default: the one in run.json).
    """
    run = run if isinstance(run, Run) else Run(run)
    fig_dir = run.path / FIGURES_DIR
    notes: List[str] = []
    available: Dict[str, Path] = {}
    if figures:
        if ctx is None:
            try:
                ctx = FigureContext.from_run(run, device=device, data_optional=True, checkpoint=checkpoint)
            except Exception as e:  # e.g. a damaged checkpoint
                notes.append(f"The model could not be loaded ({_first_line(e)}); only the training curves are drawn.")
            else:
                if ctx.data_error:
                    notes.append(f"The data set could not be loaded ({_first_line(ctx.data_error)}); "
                                 "figures that need it are left out.")
        if ctx is not None:
            for kind in KINDS:
                try:
                    written, _ = draw_figures(ctx, kind, fig_dir, n=n, method=method, seed=seed, draw=draw,
                                              strict=True)
                    available.update(written)
                except PlotError as e:
                    notes.append(f"{kind}: not drawn ({_first_line(e)}).")
                except Exception as e:
                    notes.append(f"{kind}: could not be drawn ({type(e).__name__}: {_first_line(e)}).")
        else:
            history = run.metrics()
            if history:
                fig = curves_figure(history)
                available["curves.png"] = save_figure(fig, fig_dir / "curves.png")
                fig.clear()
    else:
        for names in FIGURE_FILES.values():
            for name in names:
                if (fig_dir / name).is_file():
                    available[name] = fig_dir / name
        if not available:
            notes.append(f"No figures in {fig_dir}; run `aevb plot {run.path} all` or `aevb report {run.path}` "
                         "without --no-figures.")
    path = Path(out) if out else run.path / REPORT_FILE
    explorer = run.path / "explorer.html"
    href = os.path.relpath(explorer, path.parent) if explorer.is_file() else None
    text = render_report(run, available, notes, ctx=ctx, status=status, explorer=href)
    atomic_write_text(path, text)
    return path


def _first_line(e) -> str:
    lines = str(e).strip().splitlines()
    return lines[0].rstrip(":") if lines else type(e).__name__


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt, quote=True)}">'


def _table(header: Optional[Sequence[str]], rows: Sequence[Sequence[str]], numeric: Sequence[bool] = ()) -> str:
    """``rows`` cells are already-escaped HTML; ``header`` None: no header row."""
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>")
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            cls = ' class="num"' if i < len(numeric) and numeric[i] else ""
            cells.append(f"<td{cls}>{c}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _final_numbers(history: List[dict]) -> str:
    if not history:
        return '<p class="note">No epochs finished yet: no metrics.</p>'
    last = history[-1]
    rows = []
    for split in SPLITS:
        bound, log_px, kl = M.split_terms(split)
        if bound not in last:
            continue
        rows.append([split, _fmt(last[bound]), _fmt(-last[bound]), _fmt(last.get(log_px)), _fmt(last.get(kl))])
    parts = [f"<p>After epoch {last.get(M.EPOCH)} ({_fmt(last.get(M.STEP))} steps). Nats per datapoint; "
             "the loss is the negative bound.</p>",
             _table(["split", "ELBO", "loss (−ELBO)", "E<sub>q</sub>[log p(x|z)]", "KL(q(z|x) || p(z))"],
                    rows, [False, True, True, True, True])]
    extra = []
    limited = [r[M.LIMIT_BATCHES] for r in history if r.get(M.LIMIT_BATCHES)]
    if limited:
        extra.append(["quick debug run", f"{len(limited)} of {len(history)} epochs trained only their first "
                                         f"{max(limited)} batches (--limit-batches): not a full run"])
    tests = [(r[M.TEST_BOUND], r[M.EPOCH]) for r in history if _is_num(r.get(M.TEST_BOUND))]
    if tests:
        best, ep = max(tests)
        extra.append(["best test ELBO", f"{_fmt(best)} (epoch {ep})"])
    best_epoch = last.get(M.BEST_EPOCH)
    best_row = next((r for r in history if best_epoch is not None and r.get(M.EPOCH) == best_epoch), None)
    if best_row is not None and _is_num(best_row.get(M.VALID_BOUND)):
        extra.append(["best validation ELBO", f"{_fmt(best_row[M.VALID_BOUND])} (epoch {best_row[M.EPOCH]}; "
                                              "its model is checkpoints/best.pt)"])
    if last.get(M.STOPPED_EARLY) and best_row is not None:
        since = last[M.EPOCH] - best_row[M.EPOCH]
        extra.append(["early stop", f"after epoch {last[M.EPOCH]}: the validation bound had not improved for "
                                    f"{since} epoch{'s' if since != 1 else ''}"])
    times = [r.get(M.EPOCH_TIME_S) for r in history if _is_num(r.get(M.EPOCH_TIME_S))]
    if times:
        extra.append(["training time", f"{sum(times):.1f} s over {len(times)} epochs "
                                       f"({sum(times) / len(times):.2f} s per epoch)"])
    for k, label in ((M.BETA, "KL weight β (last epoch)"), (M.LR, "learning rate (last epoch)")):
        if _is_num(last.get(k)):
            extra.append([label, _fmt(last[k]) if k == M.BETA else f"{last[k]:.3g}"])
    if extra:
        parts.append(_table(None, [[f"<b>{html.escape(a)}</b>", html.escape(b)] for a, b in extra]))
    return "\n".join(parts)


def _evaluations(run_dir: Path) -> str:
    """Every RUN/evaluation*.json read through the evaluation schema (aevb.evaluate): its
    headline numbers, then all its values; a file that is not an evaluation is named with why."""
    evals = run_evaluations(run_dir)
    if not evals:
        return (f'<p class="sub">No evaluation yet: <code>aevb evaluate {html.escape(str(run_dir))} --k 5000</code> '
                "writes the importance-weighted estimate of log p(x) (evaluation*.json), shown here by the "
                "next <code>aevb report</code>.</p>")
    parts = []
    for path, d, err in evals:
        name = Path(path).name
        parts.append(f"<h3>{html.escape(name)}</h3>")
        if err:
            parts.append(f'<p class="note">Not shown: {html.escape(err)}</p>')
            continue
        what = (f"{html.escape(str(d['split']))} split, {_fmt(d.get('datapoints', d['n']))} datapoints, "
                f"k = {_fmt(d['k'])}" + (f", {html.escape(str(d['checkpoint']))} checkpoint" if "checkpoint" in d else "")
                + (f", epoch {_fmt(d['epoch'])}" if "epoch" in d else "")
                + (", networks in bfloat16" if d.get("precision") == "bf16" else ""))
        parts.append(f'<p class="sub">{what}; nats per datapoint.</p>')
        rows = [[f"<b>{html.escape(label)}</b>", html.escape(_fmt(value)), html.escape(unit)]
                for label, value, unit in headline(d)]
        parts.append(_table(None, rows, [False, True, False]))
        flat = [(k, v) for k, v in flatten(d) if k not in ("format", "version")]
        parts.append(_table(["key", "value"], [[f"<code>{html.escape(k)}</code>", html.escape(_fmt(v))]
                                               for k, v in flat], [False, True]))
    return "\n".join(parts)


def _config_table(cfg_dict: dict) -> str:
    rows = []
    for section, values in cfg_dict.items():
        if isinstance(values, dict):
            for k, v in values.items():
                val = ", ".join(_fmt_config(a) for a in v) if isinstance(v, list) else _fmt_config(v)
                if v is None:
                    val = "— (default / automatic)"
                rows.append([html.escape(section), f"<code>{html.escape(k)}</code>",
                             f'<span class="val">{html.escape(val)}</span>'])
        else:
            rows.append([html.escape(section), "", html.escape("— (none)" if values is None else _fmt_config(values))])
    return _table(["section", "option", "value"], rows)


def render_report(run: Run, figures: Dict[str, Path], notes: Sequence[str] = (),
                  ctx: Optional[FigureContext] = None, status: Optional[str] = None,
                  explorer: Optional[str] = None) -> str:
    """The report's HTML text; ``figures``: {file name: PNG path} to embed; ``explorer``: the
    link to the run's explorer.html (written by `aevb explore`), None when there is none."""
    cfg = run.config.to_dict()
    try:
        info = run.info
    except (OSError, ValueError):
        info = {}
    history = ctx.history if ctx is not None and ctx.history else run.metrics()
    name = run.path.resolve().name
    m = cfg.get("model", {})
    shape = ctx.image_shape if ctx is not None and ctx.image_shape else None
    facts = [f"data set <b>{html.escape(str(info.get('dataset') or cfg.get('data', {}).get('dataset')))}</b>"]
    if shape:
        facts.append("images " + "×".join(str(s) for s in shape) + " (C×H×W)")
    layers = m.get("latent_dims")
    facts.append(f"latent layers {'-'.join(map(str, layers))} ({html.escape(str(m.get('inference')))})" if layers
                 else f"{m.get('latent_dim')}-D latent space")
    if m.get("prior") not in (None, "standard"):
        count = m.get("pseudo_inputs") if m.get("prior") == "vamp" else m.get("prior_components")
        facts.append(f"prior {html.escape(str(m.get('prior')))}" + (f" ({count})" if count else ""))
    if m.get("flow") not in (None, "none"):
        facts.append(f"{html.escape(str(m.get('flow')))} flow posterior")
    facts.append(f"{html.escape(str(m.get('likelihood')))} likelihood")
    if m.get("encoder_network") == "custom":
        facts.append("your own encoder and decoder modules")
    elif m.get("encoder_network") == "conv":
        facts.append("conv encoder " + "-".join(str(c) for c in m.get("channels") or []) + " channels"
                     + f" ({html.escape(str(m.get('activation')))})")
    else:
        hidden = m.get("encoder_hidden") or []
        facts.append("encoder " + "-".join(str(h) for h in hidden) + f" ({html.escape(str(m.get('activation')))})")
    if not status:
        try:
            status = run.status
        except (OSError, ValueError):
            status = "unknown"
    facts.append(f"status <b>{html.escape(str(status))}</b>")
    if ctx is not None and ctx.checkpoint:
        facts.append(f"figures from the {html.escape(ctx.checkpoint)} checkpoint (epoch {_fmt(ctx.epoch)})")

    body = [f"<h1>aevb run report: {html.escape(name)}</h1>",
            f'<p class="sub">{" · ".join(facts)}<br>Generated {time.strftime("%Y-%m-%d %H:%M:%S")} by aevb '
            f"{html.escape(__version__)} from <code>{html.escape(str(run.path))}</code>.</p>"]
    shown = [(f, h, c) for f, h, c in SECTIONS if f in figures]
    nav = ['<a href="#numbers">Numbers</a>', '<a href="#evaluation">Evaluation</a>', '<a href="#explorer">Explorer</a>']
    nav += [f'<a href="#fig-{f[:-4]}">{html.escape(h)}</a>' for f, h, _ in shown]
    nav.append('<a href="#config">Configuration</a>')
    body.append("<nav>" + "".join(nav) + "</nav>")

    body.append('<h2 id="numbers">Final numbers</h2>')
    body.append(_final_numbers(history))
    body.append('<h2 id="evaluation">Evaluation (importance-weighted)</h2>')
    body.append(_evaluations(run.path))
    body.append('<h2 id="explorer">Latent explorer</h2>')
    if explorer:
        body.append(f'<p>Move through the latent space in <a href="{html.escape(explorer, quote=True)}">'
                    "explorer.html</a>: sliders per latent dimension, the test points&#39; posterior means, "
                    "interpolations and prior samples, decoded in the browser.</p>")
    else:
        body.append(f'<p class="sub">No explorer yet: <code>aevb explore {html.escape(str(run.path))}</code> writes '
                    "explorer.html, an interactive page of the latent space, linked here by the next "
                    "<code>aevb report</code>.</p>")

    for fname, heading, caption in shown:
        body.append(f'<h2 id="fig-{fname[:-4]}">{html.escape(heading)}</h2>')
        body.append(f"<figure>{_img(figures[fname], heading)}<figcaption>{caption}</figcaption></figure>")
    if notes:
        body.append("<h2>Figures not drawn</h2>")
        body.append("<ul>" + "".join(f'<li class="note">{html.escape(n)}</li>' for n in notes) + "</ul>")

    body.append('<h2 id="config">Configuration</h2>')
    body.append("<p class=\"sub\">The resolved configuration saved with the run (config.json).</p>")
    body.append(_config_table(cfg))
    body.append("<footer>A self-contained file: images are embedded, no network access is needed. "
                "Regenerate with <code>aevb report RUN</code>.</footer>")

    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>aevb report: {html.escape(name)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


class ReportCallback(Callback):
    """Saves latent snapshots during training and writes figures and ``report.html`` at the end.

    ``latents_every``: save the test posterior means every this many epochs (and after the first
    and last epoch); None picks about 10 snapshots per run. ``max_points``: how many test points
    a snapshot holds. ``figures``: draw RUN/figures/*.png and the report at the end of training.
    Failures are reported on stderr but never stop or fail the training run itself.
    """

    def __init__(self, latents_every: Optional[int] = None, max_points: int = 1000, figures: bool = True,
                 method: str = "pca", seed: int = 0, draw: bool = True, verbose: bool = True):
        self.latents_every = latents_every
        self.max_points = int(max_points)
        self.figures = figures
        self.method, self.seed, self.draw, self.verbose = method, seed, draw, verbose
        self._warned = False

    def snapshot_epochs(self, total: int) -> int:
        return int(self.latents_every) if self.latents_every else max(1, int(total or 1) // 10)

    def on_train_epoch_end(self, trainer, record: dict) -> None:
        epoch, total = trainer.epoch, trainer.cfg.train.epochs or trainer.epoch
        every = self.snapshot_epochs(total)
        if not (epoch == 1 or epoch % every == 0 or epoch >= total):
            return
        try:
            test = trainer.data.test
            x = test.head(self.max_points)  # read a batch at a time, not copied
            mu = latent_means(trainer.model, x)
            y = None if test.y is None else test.y[:len(x)]
            save_latent_snapshot(trainer.run_dir, epoch, mu, y)
        except Exception as e:  # a figure aid must never stop training
            if not self._warned:
                print(f"aevb: warning: latent snapshot of epoch {epoch} not saved: {e}", file=sys.stderr)
                self._warned = True

    def on_train_end(self, trainer) -> None:
        if not self.figures:
            return
        t0 = time.perf_counter()
        try:
            ctx = FigureContext.from_trainer(trainer)
            # the run's marker still says "running" here: training is complete, the trainer marks it next
            path = write_report(trainer.run_dir, ctx=ctx, method=self.method, seed=self.seed, draw=self.draw,
                                status="finished")
        except Exception as e:
            print(f"aevb: warning: the report could not be written ({type(e).__name__}: {e}); "
                  f"try `aevb report {trainer.run_dir}`", file=sys.stderr)
            return
        if self.verbose and getattr(trainer.cfg.train, "progress", False):
            print(f"report: {path}  (figures in {Path(trainer.run_dir) / FIGURES_DIR}, "
                  f"{time.perf_counter() - t0:.1f}s)", file=sys.stderr)
