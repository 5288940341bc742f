"""``RUN/explorer.html``: the latent space of a run, explored in the browser.

One self-contained file (style, script, data and decoder weights inline; no server, no
network). It shows the posterior means of test points in 2-D (the two latent dimensions of
highest KL, or PCA of all of them), one slider per latent dimension ordered by KL, the decoder's
mean image at the sliders' z (decoded in the page by ``decoder.js``), a test image beside its
reconstruction on hover, the interpolation between the last two points clicked, and samples from
the prior.

What is embedded: the decoder program (:mod:`aevb.explorer.program`), up to ``points`` test
points (posterior means as float32, images as 8-bit display values, labels) and the run's
facts. The page's size is checked against ``max_mb`` before anything is computed or written.
"""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Union

import numpy as np
import torch

from .. import __version__
from ..io import atomic_write_text
from ..runs import Run, RunError
from .program import ENCODINGS, base64_chars, decoder_program, decoder_size, encoded_chars, mean_error

EXPLORER_FILE = "explorer.html"
STATIC = Path(__file__).resolve().parent / "static"
# Default and largest page size. The page holds its weights several times while it loads (the
# HTML text, the JSON string, the bytes, a Float32Array: about 4x the file), V8 caps one string at
# 2^29 - 24 characters, and past a few tens of MB a page loads slowly. A celeba-mlp-size decoder
# (135.8M weights: 724 MB as base64 float32, 362 MB as float16) is refused.
DEFAULT_MAX_MB = 64.0
HARD_MAX_MB = 200.0
# Test images are embedded up to this many bytes (8-bit values); fewer points beyond it.
IMAGE_BUDGET = 16_000_000


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
        from ..plots import pca_directions

        comps, share = pca_directions(mu, seed)
        views.append({"name": f"PCA of all {j} dimensions", "x": f"PC 1 ({share[0]:.0%} of variance)",
                      "y": f"PC 2 ({share[1]:.0%})", "P": comps.tolist()})
    a, b = (0, 1) if j == 2 else sorted(order[:2])
    P = np.zeros((2, j))
    P[0, a] = P[1, b] = 1.0
    name = f"{_z(0)}, {_z(1)}" if j == 2 else f"the two units of highest KL ({_z(a)}, {_z(b)})"
    views.append({"name": name, "x": _z(a), "y": _z(b), "P": P.tolist()})
    return views


def _facts(run: Run, model, image_shape) -> dict:
    cfg = run.config
    try:
        status = run.status
    except (OSError, ValueError):
        status = "unknown"
    history = run.metrics()
    last = history[-1] if history else {}
    test = last.get("test_bound")
    return {"run": run.path.resolve().name, "dataset": str(cfg.data.dataset),
            "likelihood": str(cfg.model.likelihood), "latent_dim": int(model.latent_dim),
            "image_shape": [int(s) for s in image_shape], "status": status,
            "epoch": last.get("epoch"), "test_elbo": test if isinstance(test, (int, float)) else None,
            "aevb": __version__}


def check_output(path: Path) -> None:
    """Refuse an output path that cannot be written, before any work."""
    if path.is_dir():
        raise ExplorerError(f"--out {path} is a folder; give a file name such as {path / EXPLORER_FILE}")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ExplorerError(f"--out {path}: {parent} is a file, not a folder")
    import os

    if not os.access(parent, os.W_OK):
        raise ExplorerError(f"--out {path}: the folder {parent} is not writable; choose another --out")


def write_explorer(run: Union[str, Path, Run], out: Union[str, Path, None] = None, points: int = 1000,
                   encoding: str = "float32", max_mb: float = DEFAULT_MAX_MB, seed: int = 0,
                   device: str = "cpu") -> ExplorerResult:
    """Write the explorer of ``run`` (default ``RUN/explorer.html``) atomically.

    Raises :class:`ExplorerError` (nothing written, an existing file kept) when the decoder cannot
    be run in the page or the page would exceed ``max_mb`` megabytes (10^6 bytes).
    """
    from ..plots import FigureContext

    run = run if isinstance(run, Run) else Run(run)
    if encoding not in ENCODINGS:
        raise ExplorerError(f"unknown weight encoding {encoding!r}; choose {' or '.join(ENCODINGS)}")
    if not 0 < max_mb <= HARD_MAX_MB:
        raise ExplorerError(f"--max-size must be above 0 and at most {HARD_MAX_MB:g} MB, got {max_mb:g}: "
                            "browsers cannot load a larger page")
    if points < 0:
        raise ExplorerError(f"--points must be 0 or more, got {points}")
    path = Path(out) if out else run.path / EXPLORER_FILE
    check_output(path)
    model = run.load_model("cpu")
    image_shape = tuple(int(s) for s in run.checkpoint()["image_shape"])
    data_dim = int(np.prod(image_shape))
    points = min(int(points), IMAGE_BUDGET // max(1, data_dim))
    decoder_program(model, with_weights=False)  # raises UnsupportedDecoder for what the page cannot run
    # then the size: weights, test images (base64) and the page around them
    n_weights = decoder_size(model)
    estimate = encoded_chars(n_weights, encoding) + base64_chars(points * data_dim) + 300_000
    if estimate > max_mb * 1e6:
        raise _too_large(run, n_weights, encoding, estimate, max_mb)
    program = decoder_program(model)

    ctx = FigureContext.from_run(run, device=device, data_optional=True)
    payload = {"facts": _facts(run, ctx.model, image_shape), "notes": []}
    if ctx.data is None:
        payload["notes"].append("The run's data set could not be loaded here, so there is no scatter of test "
                                f"points: {ctx.data_error.splitlines()[0] if ctx.data_error else ''}")
    payload.update(_points(ctx, 0 if ctx.data is None else points, seed))
    scale_offset = ctx.display(torch.tensor([0.0, 1.0]))  # display is affine: value * scale + offset
    scale, offset = float(scale_offset[1] - scale_offset[0]), float(scale_offset[0])
    z = payload.pop("_mu")
    if not len(z):
        z = torch.randn(64, ctx.model.latent_dim, generator=torch.Generator().manual_seed(seed))
    err = mean_error(ctx.model, z[:200], encoding) * abs(scale)
    payload.update({
        "decoder": {"layers": program.layers, "encoding": encoding, "weights": program.encode(encoding),
                    "n_weights": program.n_weights},
        "image": {"shape": list(image_shape), "scale": scale, "offset": offset},
        "encoding_error": err,
        "seed": int(seed),
    })
    text = render(payload)
    size = len(text.encode("utf-8"))
    if size > max_mb * 1e6:
        raise _too_large(run, n_weights, encoding, size, max_mb)
    atomic_write_text(path, text)
    return ExplorerResult(path, size, program.n_weights, encoding, payload["points"]["n"], err)


def _too_large(run: Run, n_weights: int, encoding: str, size: float, max_mb: float) -> ExplorerError:
    hint = "Try --weights float16 (half the size), or look" if encoding != "float16" else "Look"
    return ExplorerError(
        f"the decoder has {n_weights:,} weights: {encoded_chars(n_weights, encoding) / 1e6:,.1f} MB as base64 "
        f"{encoding}, so the page would be about {size / 1e6:,.1f} MB, above the limit of {max_mb:g} MB "
        f"(--max-size, at most {HARD_MAX_MB:g}); a page that large loads slowly or not at all. Nothing was "
        f"written. {hint} at this model with `aevb plot {run.path} all`")


def _points(ctx, points: int, seed: int) -> dict:
    """The test points' part of the payload: posterior means, 8-bit display images, labels, 2-D
    views, KL per latent unit and slider ranges; ``_mu`` the means as a tensor [N, J]."""
    from ..plots import ACTIVE_KL_THRESHOLD, kl_per_dimension, latent_means

    model, J = ctx.model, ctx.model.latent_dim
    x = ctx.x[:points] if points else torch.zeros(0, model.data_dim)
    y = ctx.y[:len(x)] if points and ctx.y is not None else None
    mu = latent_means(model, x).float() if len(x) else torch.zeros(0, J)
    kl = kl_per_dimension(model, x).double().numpy() if len(x) else np.zeros(J)
    mu_np = mu.numpy().astype("<f4")
    pixels = torch.round(ctx.display(x).clamp(0, 1) * 255).to(torch.uint8).numpy()
    classes = None
    if y is not None:
        names = (getattr(ctx.data, "info", None) or {}).get("classes")
        n_cls = int(y.max()) + 1 if len(y) else 0
        classes = [str(names[i]) if names and i < len(names) else str(i) for i in range(n_cls)]
    # slider ranges: at least the prior's +-4 sigma, and every test point's mean
    lim = np.maximum(4.0, np.ceil(np.abs(mu_np).max(0) * 1.1)) if len(x) else np.full(J, 4.0)
    return {
        "latent": {"dim": J, "kl": [float(v) for v in kl], "known_kl": bool(len(x)),
                   "active_threshold": ACTIVE_KL_THRESHOLD, "range": [float(v) for v in lim]},
        "points": {"n": int(len(x)), "mu": _b64(mu_np), "pixels": _b64(pixels),
                   "labels": None if y is None else [int(v) for v in y], "classes": classes,
                   "views": _views(mu_np.astype(np.float64), kl, seed) if len(x) else []},
        "_mu": mu,
    }


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
