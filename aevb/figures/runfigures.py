"""A run's figure set: :class:`FigureContext` (a model, its data set, the metrics and the run
folder; ``from_run`` or ``from_trainer``), :func:`make_figures` / :func:`draw_figures` for the
figure kinds of ``aevb plot`` (``RUN/figures/<name>.png``), and the latent snapshots that the
report callback saves during training (``RUN/latents/epochNNN.npy``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..devices import resolve_device
from ..errors import PlotError
from ..io import atomic_path
from ..runs import Run
from .compute import (METHODS, active_mask, dims_by_kl, grid_coordinates, interpolate, kl_per_dimension,
                      latent_means, manifold_grid, traversal, unit_variances)
from .draw import (curves_figure, interpolation_figure, kl_figure, latent_figure, latent_series_figure,
                   manifold_figure, reconstructions_figure, samples_figure, save_figure, traversal_figure)
from ..sampling import decode_means, prior_samples, reconstructions

# What `aevb plot RUN KIND` draws; `all` draws every one that applies.
KINDS = ("reconstructions", "samples", "manifold", "latent", "latent-series", "interpolation",
         "traversal", "curves", "kl")
FIGURES_DIR = "figures"
LATENTS_DIR = "latents"

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
    checkpoint: Optional[str] = None  # the run's checkpoint the model came from: "last" or "best"
    epoch: Optional[int] = None  # the epoch that model holds
    _kl: Optional[Tensor] = None
    _unit_variances: Optional[Tensor] = None
    _range: Optional[Tuple[float, float]] = None
    _x: Optional[Tensor] = None

    def __post_init__(self):
        if self.image_shape is None and self.data is not None:
            self.image_shape = tuple(int(s) for s in self.data.image_shape)
        if self.image_shape is not None:
            self.image_shape = tuple(int(s) for s in self.image_shape)

    @classmethod
    def from_run(cls, run, device: str = "auto", data=None, data_optional: bool = False,
                 checkpoint: str = "last") -> "FigureContext":
        """The model of the run's ``last`` (or ``best``) checkpoint and its data set. With ``data_optional`` a data
        set that cannot be loaded (e.g. not on this machine) leaves ``data`` None: figures that
        need only the model (samples, manifold of a 2-D latent space, curves, latent-series)
        can still be drawn, the others raise PlotError saying why."""
        run = run if isinstance(run, Run) else Run(run)
        loaded = run.open_model(resolve_device(device), checkpoint)
        error = None
        if data is None:
            try:
                data = run.load_data()
            except Exception as e:
                if not data_optional:
                    raise
                error = str(e)
        return cls(model=loaded.model, data=data, image_shape=loaded.image_shape, history=run.metrics(),
                   run_dir=run.path, data_error=error, checkpoint=checkpoint, epoch=loaded.epoch)

    @classmethod
    def from_trainer(cls, trainer) -> "FigureContext":
        """The trainer's model and data set, its metrics history and run folder."""
        return cls(model=trainer.model, data=trainer.data, image_shape=tuple(trainer.data.image_shape),
                   history=list(trainer.history), run_dir=Path(trainer.run_dir), checkpoint="last",
                   epoch=trainer.epoch)

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
    def kl(self) -> Optional[Tensor]:
        """KL per latent unit, the mean over the test points, [J] (cached); None without a
        closed-form KL."""
        if self._kl is None and self.model.closed_form_kl:
            self._kl = kl_per_dimension(self.model, self.x[:self.max_points])
        return self._kl

    @property
    def ranking(self) -> Tensor:
        """What orders the units the decoder reads from most to least informative: the KL per
        unit, or without a closed-form KL the variance of the posterior mean; with stacked layers
        the units of z_1 only (the layers above reach the data through z_1)."""
        r = self.kl if self.kl is not None else self.unit_variances
        return r[:self.model.bottom_dim]

    @property
    def unit_variances(self) -> Tensor:
        """Var over the test points of the posterior mean E_q[z_j|x], [J] float64 (cached)."""
        if self._unit_variances is None:
            self._unit_variances = unit_variances(latent_means(self.model, self.x[:self.max_points]))
        return self._unit_variances

    @property
    def active(self) -> Tensor:
        """Which latent units are active over the test points, bool [J] (Var_x E_q[z_j|x] > 0.01)."""
        return active_mask(self.unit_variances)

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
    if draw:
        z, x_draw = prior_samples(ctx.model, side * side, seed=seed, draw=True)
        x = decode_means(ctx.model, z)
    else:
        (_, x), x_draw = prior_samples(ctx.model, side * side, seed=seed), None
    return {"samples.png": samples_figure(ctx.display(x), ctx.image_shape, side,
                                          None if x_draw is None else ctx.display(x_draw),
                                          prior=prior_name(ctx.model))}


def prior_name(model) -> str:
    """How a figure names the model's prior: N(0, I), or the learned one (and the path down
    through stacked layers)."""
    names = {"StandardNormal": "N(0, I)", "MixturePrior": "the learned mixture prior",
             "VampPrior": "the VampPrior"}
    name = names.get(type(model.prior).__name__, "p(z)")
    if len(model.layer_sizes) > 1:
        return f"{name} (top layer), then p(z1|z2) down"
    return name


def manifold_dims(ctx: FigureContext) -> List[int]:
    """(0, 1) for a 2-D latent space, the two dimensions of highest KL otherwise ([0] if J = 1);
    with stacked layers, of z_1, the layer the decoder reads."""
    J = ctx.model.bottom_dim
    if J == 1:
        return [0]
    if J == 2:
        return [0, 1]
    return sorted(dims_by_kl(ctx.ranking)[:2])


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
    dims = dims_by_kl(ctx.ranking)[:10]
    values = np.linspace(-3, 3, steps) if steps > 1 else np.zeros(1)
    xs = torch.cat([traversal(ctx.model, ctx.x[0], d, values)[1] for d in dims])
    return {"traversal.png": traversal_figure(ctx.display(xs), dims, values, ctx.image_shape, kl)}


def _figure_curves(ctx: FigureContext, **_):
    return {"curves.png": curves_figure(ctx.history)}


def _figure_kl(ctx: FigureContext, **_):
    return {"kl.png": kl_figure(ctx.kl, ctx.unit_variances)}


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
            fig.clear()  # frees the figure's memory before the next one
    return written, skipped
