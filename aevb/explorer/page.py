"""``RUN/explorer.html``: the latent space of a run, explored in the browser.

One self-contained file (style, script, data and decoder weights inline; no server, no
network). It shows the posterior means of test points in 2-D (the two latent dimensions of
highest KL, or PCA of all of them), one slider per latent dimension ordered by KL (the units that
are not active, Var_x E_q[z_j|x] <= 0.01 as ``aevb.bounds`` defines it, greyed), the decoder's
mean image at the sliders' z (decoded in the page by ``decoder.js``), a test image beside its
reconstruction on hover, the interpolation between the last two points clicked, and samples from
the prior.

What is embedded: the decoder program (:mod:`aevb.explorer.program`), up to ``points`` test
points (posterior means as float32, images as 8-bit display values, labels) and the run's
facts. The page's size is planned against ``max_mb`` once the model and data are loaded, before
the test points are encoded or the weights copied, and measured again before it is written.

A decoder whose weights do not fit in ``max_mb`` (e.g. celeba-mlp's 135.8M) is not embedded:
the page then has no live decoding (no sliders to move, no sampling, no interpolation) and
holds, for fewer points, each point's reconstruction computed here by PyTorch (the decoder mean
at its posterior mean, 8-bit like the test images); the page and the command say why.
"""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from .. import metrics as M
from ..bounds import ACTIVE_UNIT_THRESHOLD
from ..evaluate import bits_per_dim, bpd_convention, headline, run_evaluations
from ..figures.compute import active_mask, kl_per_dimension, latent_means, pca_directions, unit_variances
from ..figures.runfigures import FigureContext
from ..sampling import decode_means
from ..io import atomic_write_text
from ..newdata.checks import check_seed
from ..runs import Run, RunError, check_output
from ..units import format_bytes
from ..version import __version__
from .program import ENCODINGS, base64_chars, decoder_program, decoder_size, encoded_chars, mean_error

EXPLORER_FILE = "explorer.html"
STATIC = Path(__file__).resolve().parent / "static"
# Default and largest page size. The page holds its weights several times while it loads (the
# HTML text, the JSON string, the bytes, a Float32Array: about 4x the file), V8 caps one string at
# 2^29 - 24 characters, and past a few tens of MB a page loads slowly. A celeba-mlp-size decoder
# (135.8M weights: 724 MB as base64 float32, 362 MB as float16) is left out of the page.
DEFAULT_MAX_MB = 64.0
HARD_MAX_MB = 200.0
# Test images (and, without live decoding, their reconstructions) are embedded up to this many
# bytes (8-bit values); fewer points beyond it.
IMAGE_BUDGET = 16_000_000
# The page's characters besides the static files, the layers, the weights and the points: facts,
# views, notes (an upper bound; the written page is measured before it is written).
PAYLOAD_FRAME = 5_000


class ExplorerError(RunError):
    """The explorer cannot be written for this run (the message says why and what to do)."""


@dataclass
class ExplorerResult:
    path: Path
    size_bytes: int
    n_weights: int
    encoding: str
    n_points: int
    max_mean_error: float  # largest |change| of the mean image from the weight encoding
    live: bool = True  # the decoder runs in the page; else reconstructions are precomputed
    why_not_live: str = ""  # why the decoder is not in the page (sizes and the limit)


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _z(j: int) -> str:
    """The name of latent dimension j (0-based) as the page shows it: z with a subscript, z₁ ..."""
    return "z" + str(j + 1).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


def _views(mu: np.ndarray, kl: np.ndarray, seed: int) -> List[dict]:
    """2-D views of the posterior means, each a linear map P [2, J]: point = P mu."""
    j = mu.shape[1]
    if j == 1:
        return [{"name": _z(0), "x": _z(0), "y": "", "P": [[1.0], [0.0]]}]
    order = [int(i) for i in np.argsort(-kl, kind="stable")]
    views = []
    if j > 2 and len(mu) >= 2:
        comps, share = pca_directions(mu, seed)
        views.append({"name": f"PCA of all {j} dimensions", "x": f"PC 1 ({share[0]:.0%} of variance)",
                      "y": f"PC 2 ({share[1]:.0%})", "P": comps.tolist()})
    a, b = (0, 1) if j == 2 else sorted(order[:2])
    P = np.zeros((2, j))
    P[0, a] = P[1, b] = 1.0
    name = f"{_z(0)}, {_z(1)}" if j == 2 else f"the two units of highest KL ({_z(a)}, {_z(b)})"
    views.append({"name": name, "x": _z(a), "y": _z(b), "P": P.tolist()})
    return views


def _facts(run: Run, model, image_shape, data=None) -> dict:
    """What the page's footer says of the run: data, likelihood, status, the last epoch's test
    ELBO (with bits/dim where aevb.evaluate's convention defines them for these data), and the
    headline of the run's test evaluation with the most samples (read through its schema)."""
    cfg = run.config
    try:
        status = run.status
    except (OSError, ValueError):
        status = "unknown"
    history = run.metrics()
    last = history[-1] if history else {}
    test = last.get(M.TEST_BOUND)
    return {"run": run.path.resolve().name, "dataset": str(cfg.data.dataset),
            "likelihood": str(cfg.model.likelihood), "latent_dim": int(model.latent_dim),
            "image_shape": [int(s) for s in image_shape], "status": status,
            "epoch": last.get(M.EPOCH), "test_elbo": test if isinstance(test, (int, float)) else None,
            "test_elbo_bits": _bits(test, cfg.model.likelihood, data, image_shape),
            "evaluation": _evaluation_headline(run), "aevb": __version__}


def _bits(test_bound, likelihood: str, data, image_shape) -> Optional[float]:
    """Bits per dimension of the test ELBO, or None where they are not defined (or the data,
    whose quantisation decides it, could not be loaded)."""
    if not isinstance(test_bound, (int, float)) or data is None:
        return None
    kind, levels = ("binary", 2) if data.dynamic_binarization else (data.kind, data.levels)  # as split_data
    offset, _ = bpd_convention(kind, levels, likelihood)
    return None if offset is None else float(bits_per_dim(test_bound, int(np.prod(image_shape)), offset))


def _evaluation_headline(run: Run) -> Optional[dict]:
    """{"file", "rows": [[label, value, unit]]} of the test evaluation with the largest k."""
    found = [(d["k"], path.name, d) for path, d, _ in run_evaluations(run.path) if d is not None and d["split"] == "test"]
    if not found:
        return None
    _, name, d = max(found, key=lambda t: (t[0], t[1]))
    shown = name + (" (networks in bfloat16)" if d.get("precision") == "bf16" else "")
    return {"file": shown, "rows": [[label, float(value), unit] for label, value, unit in headline(d)]}


def write_explorer(run: Union[str, Path, Run], out: Union[str, Path, None] = None, points: int = 1000,
                   encoding: str = "float32", max_mb: float = DEFAULT_MAX_MB, seed: int = 0,
                   device: str = "cpu", require_live: bool = False, checkpoint: str = "last") -> ExplorerResult:
    """Write the explorer of ``run`` (default ``RUN/explorer.html``) atomically.

    When the decoder's weights and the test images would exceed ``max_mb`` megabytes (10^6
    bytes), the page is written without the weights (no live decoding) and with precomputed
    reconstructions for as many points as fit; ``require_live`` refuses instead. Raises
    :class:`ExplorerError` (nothing written, an existing file kept) when the decoder cannot be
    run in the page, an option is wrong, or not even one point fits.
    """
    run = run if isinstance(run, Run) else Run(run)
    if encoding not in ENCODINGS:
        raise ExplorerError(f"unknown weight encoding {encoding!r}; choose {' or '.join(ENCODINGS)}")
    if not 0 < max_mb <= HARD_MAX_MB:
        raise ExplorerError(f"--max-size must be above 0 and at most {HARD_MAX_MB:g} MB, got {max_mb:g}: "
                            "browsers cannot load a larger page")
    if points < 0:
        raise ExplorerError(f"--points must be 0 or more, got {points}")
    seed = check_seed(seed)  # the PCA takes 0..2**32 - 1
    path = Path(out) if out else run.path / EXPLORER_FILE
    check_output(path, "--out")  # also refuses a run's checkpoints, config and metrics
    ctx = FigureContext.from_run(run, device=device, data_optional=True, checkpoint=checkpoint)
    if len(ctx.model.layer_sizes) > 1:
        raise ExplorerError(f"{run.path} has stacked latent layers ({' and '.join(map(str, ctx.model.layer_sizes))}): "
                            "the page runs one layer's decoder and cannot run the top-down path p(z1|z2); "
                            "use aevb sample and aevb plot for this run")
    image_shape = tuple(int(s) for s in ctx.image_shape)
    # raises UnsupportedDecoder for what the page cannot run, before any size is computed
    layers = decoder_program(ctx.model, with_weights=False).layers
    n_weights = decoder_size(ctx.model)
    live, points, why = _plan(run, ctx, layers, n_weights, points, encoding, max_mb, require_live)

    payload = {"facts": _facts(run, ctx.model, image_shape, ctx.data), "notes": []}
    payload["facts"].update({"checkpoint": ctx.checkpoint, "checkpoint_epoch": ctx.epoch})
    if ctx.data is None:
        payload["notes"].append("The run's data set could not be loaded here, so there is no scatter of test "
                                f"points: {ctx.data_error.splitlines()[0] if ctx.data_error else ''}")
    payload.update(_points(ctx, points, seed, reconstructions=not live))
    scale_offset = ctx.display(torch.tensor([0.0, 1.0]))  # display is affine: value * scale + offset
    scale, offset = float(scale_offset[1] - scale_offset[0]), float(scale_offset[0])
    z = payload.pop("_mu")
    payload.update({"image": {"shape": list(image_shape), "scale": scale, "offset": offset}, "seed": int(seed)})
    if not ctx.model.prior.closed_form_kl:  # a learned prior: the page's "sample" button picks one of these draws
        draws = ctx.model.draw_prior(256, torch.Generator().manual_seed(int(seed) + 1))
        payload["prior"] = {"name": str(getattr(run.config.model, "prior", "learned")),
                            "draws": [[round(float(v), 4) for v in row] for row in draws]}
    if live:
        program = decoder_program(ctx.model)
        if not len(z):
            z = ctx.model.draw_prior(64, torch.Generator().manual_seed(int(seed)))
        err = mean_error(ctx.model, z[:200], encoding) * abs(scale)
        payload["decoder"] = {"layers": program.layers, "encoding": encoding, "weights": program.encode(encoding),
                              "n_weights": program.n_weights, "live": True}
        payload["encoding_error"] = err
    else:
        err = 0.0
        payload["decoder"] = {"layers": layers, "encoding": None, "weights": None, "n_weights": n_weights,
                              "live": False, "why": why, "notice": _notice(why, run)}
        payload["encoding_error"] = None
    text = render(payload)
    size = len(text.encode("utf-8"))
    if size > max_mb * 1e6:
        if live:
            raise _too_large(run, n_weights, encoding, size, max_mb)
        raise ExplorerError(f"the page without the decoder's weights would be {format_bytes(size)}, above "
                            f"--max-size {max_mb:g} MB; nothing was written. Lower --points or raise --max-size")
    atomic_write_text(path, text)
    return ExplorerResult(path, size, n_weights, encoding, payload["points"]["n"], err, live, why)


def _plan(run: Run, ctx, layers: List[dict], n_weights: int, points: int, encoding: str, max_mb: float,
          require_live: bool) -> Tuple[bool, int, str]:
    """(live, points, why): live decoding when the weights, the test images (of ``points`` at
    most) and the page around them fit in ``max_mb``; else no weights, as many points as fit
    with their reconstructions, and why. Raises :class:`ExplorerError` with ``require_live``,
    or when a page without live decoding would show no point."""
    latent_dim, data_dim = int(ctx.model.latent_dim), max(1, int(np.prod(ctx.image_shape)))
    available = 0 if ctx.data is None else len(ctx.x)
    frame, limit = _frame_chars(layers, latent_dim), max_mb * 1e6
    live_points = min(int(points), available, IMAGE_BUDGET // data_dim)
    images = live_points * _point_chars(data_dim, latent_dim, 1)
    live_size = frame + encoded_chars(n_weights, encoding) + images
    if live_size <= limit:
        return True, live_points, ""
    if require_live:
        raise _too_large(run, n_weights, encoding, live_size, max_mb)
    why = _why_not_live(n_weights, encoding, live_points, frame, images, limit, max_mb)
    if encoding == "float32" and frame + encoded_chars(n_weights, "float16") + images <= limit:
        why += "; --weights float16 would fit"
    if ctx.data is None:
        raise ExplorerError(f"{why}, and the run's data set could not be loaded here, so a page without live "
                            "decoding would show nothing; nothing was written. Load the data set (or raise "
                            f"--max-size), or look at this model with `aevb plot {run.path} all`")
    n = _points_without_decoder(run, min(int(points), available), data_dim, latent_dim, frame, limit, why)
    return False, n, why


def _frame_chars(layers: List[dict], latent_dim: int) -> int:
    """Characters of a page with no weights and no points: the static files, the decoder's
    layers, per-unit KL, variance and activity, slider ranges and views, and ``PAYLOAD_FRAME``
    for the rest (an upper bound)."""
    static = sum(len(_static(name).encode("utf-8")) for name in
                 ("explorer.html", "explorer.css", "decoder.js", "explorer.js"))
    return static + len(json.dumps(layers)) + 160 * int(latent_dim) + PAYLOAD_FRAME


def _point_chars(data_dim: int, latent_dim: int, images: int) -> int:
    """Characters one test point adds to the page: ``images`` 8-bit images of ``data_dim``
    values and a float32 posterior mean [J], as base64, and its label (at most 8 characters)."""
    return base64_chars(images * data_dim) + base64_chars(4 * latent_dim) + 8


def _points_without_decoder(run: Run, points: int, data_dim: int, latent_dim: int, frame: int, limit: float,
                            why: str) -> int:
    """How many points a page without live decoding holds: ``points``, at most what the image
    budget and the ``limit - frame`` characters left take with two images each (test image,
    reconstruction). Raises :class:`ExplorerError` when that is none."""
    per_point = _point_chars(data_dim, latent_dim, 2)
    fit = int(max(0.0, limit - frame) // per_point)
    n = min(int(points), IMAGE_BUDGET // (2 * max(1, data_dim)), fit)
    if n >= 1:
        return n
    if points == 0:
        raise ExplorerError(f"{why}, and --points 0 leaves a page without live decoding nothing to show; "
                            "nothing was written. Ask for some --points")
    raise ExplorerError(f"{why}, and even without the weights one test point (image and reconstruction) "
                        f"would make the page about {format_bytes(frame + per_point)}; nothing was written. "
                        f"Raise --max-size, or look at this model with `aevb plot {run.path} all`")


def _why_not_live(n_weights: int, encoding: str, n_points: int, frame: int, images: int, limit: float,
                  max_mb: float) -> str:
    """Why the decoder cannot run in the page, with the sizes: its weights (with the page's
    ``frame`` characters), or its weights and the ``images`` characters of the test images,
    exceed ``limit`` characters."""
    weights = encoded_chars(n_weights, encoding)
    other = f" ({format_bytes(encoded_chars(n_weights, 'float16'))} as float16)" if encoding == "float32" else ""
    text = f"the decoder's {n_weights:,} weights would take {format_bytes(weights)} as base64 {encoding}{other}"
    if weights > limit:
        return f"{text}, above --max-size {max_mb:g} MB"
    if weights + frame > limit:
        return f"{text}, with the page's {format_bytes(frame)} of script and data above --max-size {max_mb:g} MB"
    return (f"{text} and the {n_points:,} test images {format_bytes(images)}, above --max-size {max_mb:g} MB "
            "together (fewer --points would leave room for the weights)")


def _notice(why: str, run: Run) -> str:
    """The page's notice that live decoding is off: why, and what the page shows instead."""
    return (f"Live decoding is off: {why}. Hover shows reconstructions computed when the "
            f"page was written; run `aevb plot {run.path} all` for the figures.")


def _too_large(run: Run, n_weights: int, encoding: str, size: float, max_mb: float) -> ExplorerError:
    hint = "Try --weights float16 (half the size), or look" if encoding != "float16" else "Look"
    return ExplorerError(
        f"the decoder has {n_weights:,} weights: {format_bytes(encoded_chars(n_weights, encoding))} as base64 "
        f"{encoding}, so the page would be about {format_bytes(size)}, above the limit of {max_mb:g} MB "
        f"(--max-size, at most {HARD_MAX_MB:g}); a page that large loads slowly or not at all. Nothing was "
        f"written. {hint} at this model with `aevb plot {run.path} all`, or leave out --require-live for a "
        "page without live decoding")


def _levels(ctx, values: torch.Tensor) -> np.ndarray:
    """Images [N, D] as the page stores them: 8-bit display levels, uint8 [N, D]."""
    return torch.round(ctx.display(values).clamp(0, 1) * 255).to(torch.uint8).numpy()


def _points(ctx, points: int, seed: int, reconstructions: bool = False) -> dict:
    """The test points' part of the payload: posterior means, 8-bit display images (and with
    ``reconstructions`` the decoder mean at each posterior mean, 8-bit alike), labels, 2-D
    views, KL per latent unit, which units are active (``active``, from the variance over these
    points of each posterior mean, ``variance``) and slider ranges; ``_mu`` the means as a tensor
    [N, J]."""
    model, J = ctx.model, ctx.model.latent_dim
    x = ctx.x[:points] if points else torch.zeros(0, model.data_dim)
    y = ctx.y[:len(x)] if points and ctx.y is not None else None
    mu = latent_means(model, x).float() if len(x) else torch.zeros(0, J)
    kl = kl_per_dimension(model, x) if len(x) else torch.zeros(J)
    variance = unit_variances(mu)
    # without a closed-form KL (a flow or a learned prior) the units are ranked by the variance
    ranked_by = "KL" if kl is not None else "variance"
    kl = (kl if kl is not None else variance).double().numpy()
    active = active_mask(variance)
    mu_np = mu.numpy().astype("<f4")
    pixels = _levels(ctx, x)
    classes = None
    if y is not None:
        names = (getattr(ctx.data, "info", None) or {}).get("classes")
        n_cls = int(y.max()) + 1 if len(y) else 0
        classes = [str(names[i]) if names and i < len(names) else str(i) for i in range(n_cls)]
    # slider ranges: at least the prior's +-4 sigma, and every test point's mean
    lim = np.maximum(4.0, np.ceil(np.abs(mu_np).max(0) * 1.1)) if len(x) else np.full(J, 4.0)
    out = {
        "latent": {"dim": J, "kl": [float(v) for v in kl], "known_kl": bool(len(x)), "ranked_by": ranked_by,
                   "variance": [float(v) for v in variance], "active": [bool(a) for a in active],
                   "active_threshold": ACTIVE_UNIT_THRESHOLD, "range": [float(v) for v in lim]},
        "points": {"n": int(len(x)), "total": 0 if ctx.data is None else int(len(ctx.data.test)),
                   "mu": _b64(mu_np), "pixels": _b64(pixels),
                   "labels": None if y is None else [int(v) for v in y], "classes": classes,
                   "views": _views(mu_np.astype(np.float64), kl, seed) if len(x) else []},
        "_mu": mu,
    }
    if reconstructions:
        out["points"]["reconstructions"] = _b64(_levels(ctx, decode_means(model, mu)))
    return out


def _static(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def render(payload: dict) -> str:
    """The page's HTML: template + style + scripts + the payload as JSON (``<`` escaped)."""
    data = json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    title = f"aevb latent explorer: {payload['facts']['run']}"
    page = _static("explorer.html")
    for key, text in (("CSS", _static("explorer.css")), ("DECODER_JS", _static("decoder.js")),
                      ("EXPLORER_JS", _static("explorer.js")), ("TITLE", html.escape(title))):
        page = page.replace("{{%s}}" % key, text)
    return page.replace("{{PAYLOAD}}", data)  # last: the payload holds user text (labels)
