"""The latent explorer in a real browser: headless Chromium driven by Playwright, every network
request refused (see tests/test_report_browser.py; `bash .ci/browser-setup.sh` installs both,
without them these tests skip saying why).

The canvas must show PyTorch's decoder mean for the z set through the sliders (grey Bernoulli
digits, RGB real-valued data with a Gaussian decoder, and convolutional decoders: grey 28x20
Bernoulli and RGB 18x26 discretized-logistic mixture with GroupNorm, both centre-cropped),
within one level of 255.
"""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from aevb.explorer import decoder_program, write_explorer
from aevb.explorer import page as explorer_page
from aevb.figures.compute import latent_means
from aevb.figures.runfigures import FigureContext
from aevb.training import Trainer

from conftest import tiny_config
from helpers import CHROMIUM, LAUNCH_ARGS, playwright as _playwright
from aevb import metrics as M

pytestmark = pytest.mark.browser
DECODER_JS = Path(__file__).resolve().parents[1] / "aevb" / "explorer" / "static" / "decoder.js"
VIEWPORT = {"width": 1366, "height": 768}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    sync_playwright = _playwright()
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")), executable_path=str(CHROMIUM), headless=True,
            args=LAUNCH_ARGS, viewport=VIEWPORT)
        yield ctx
        ctx.close()


class Page:
    """A page opened from disk, with console errors and network requests recorded."""

    def __init__(self, browser, path: Path):
        self.errors, self.requests = [], []
        self.page = page = browser.new_page()
        page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

        def refuse_network(route):
            url = route.request.url
            if url.startswith(("file:", "data:")):
                route.continue_()
            else:
                self.requests.append(url)
                route.abort()

        page.route("**/*", refuse_network)
        page.goto(path.resolve().as_uri(), wait_until="load")
        page.wait_for_function("window.aevbExplorer !== undefined")

    def pixels(self, selector="#image") -> np.ndarray:
        data = self.page.evaluate(f"""() => {{ const c = document.querySelector('{selector}');
            return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }}""")
        return np.array(data, dtype=np.int64)

    def set_sliders(self, z):
        for j, v in enumerate(z):
            self.page.locator(f"#z{j}").fill(repr(float(v)))

    def sliders(self):
        return self.page.evaluate("Array.from({length: aevbExplorer.z.length}, (_, j) => "
                                  "parseFloat(document.getElementById('z' + j).value))")


def _expected_rgba(ctx: FigureContext, z: torch.Tensor) -> np.ndarray:
    """PyTorch's decoder mean for one z, as the page must draw it: display values in [0, 1],
    quantised to 0..255, laid out as RGBA pixels of the C x H x W image."""
    with torch.no_grad():
        mean = ctx.model.likelihood.mean(ctx.model.decoder_params(z.reshape(1, -1).float()))[0]
    c, h, w = ctx.image_shape
    levels = torch.round(ctx.display(mean).clamp(0, 1) * 255).reshape(c, h * w).numpy().astype(np.int64)
    rgb = levels[[0, 0, 0]] if c == 1 else levels[:3]
    return np.concatenate([rgb, np.full((1, h * w), 255)]).T.reshape(-1)


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory, browser):
    out = tmp_path_factory.mktemp("grey") / "run"
    Trainer.new(tiny_config(), out).fit()  # digits 8x8, Bernoulli, 3 latents
    write_explorer(out)
    return out


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory, browser):
    # RGB 3x6x5 images with values in [-1, 1] (real-valued: a Gaussian decoder with an identity
    # mean, shown through the training data's range); H != W catches a transposed layout
    folder = tmp_path_factory.mktemp("rgb")
    g = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.linspace(-1, 1, 6), np.linspace(-1, 1, 5), indexing="ij")
    a, b = g.uniform(-1, 1, (2, 240, 1, 1))
    x = np.stack([np.tanh(a * xx + b * yy), np.tanh(a * yy), np.tanh(b * xx)], 1)
    np.savez(folder / "rgb.npz", x_train=x[:200].astype(np.float32), x_test=x[200:].astype(np.float32))
    out = folder / "run"
    Trainer.new(tiny_config(data={"dataset": f"array:{folder / 'rgb.npz'}"}, model={"likelihood": None}), out).fit()
    write_explorer(out)
    return out


def _blobs(n, h, w, channels, seed=0):
    """Smooth random images (a disc on a background), uint8 [N, H, W] or [N, H, W, 3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w, channels), np.uint8)
    for i in range(n):
        cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.15, 0.35) * min(h, w)
        inside = ((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2
        colour = rng.integers(0, 256, channels)
        out[i] = np.where(inside[..., None], colour, 255 - colour // 2)
    return out if channels == 3 else out[..., 0]


def _conv_run(folder, shape, model):
    c, h, w = shape
    x = _blobs(240, h, w, c)
    np.savez(folder / "data.npz", x_train=x[:200], x_test=x[200:])
    out = folder / "run"
    cfg = tiny_config(data={"dataset": f"array:{folder / 'data.npz'}"},
                      model={"encoder_network": "conv", "decoder_network": "conv", **model}, train={"threads": 1})
    Trainer.new(cfg, out).fit()
    write_explorer(out)
    return out


@pytest.fixture(scope="module")
def conv_grey_run(tmp_path_factory, browser):
    # 1x28x20 (Frey Face's size), 3 stages of kernel 3: 4x3 -> 32x24, centre-cropped at (2, 2)
    return _conv_run(tmp_path_factory.mktemp("conv-grey"), (1, 28, 20),
                     {"channels": [8, 16, 16], "kernel_size": 3, "likelihood": "bernoulli"})


@pytest.fixture(scope="module")
def conv_rgb_run(tmp_path_factory, browser):
    # 3x18x26, 2 stages of kernel 4 with GroupNorm: 5x7 -> 20x28, cropped at (1, 1); a
    # 2-component discretized logistic mixture (6 parameter maps per colour channel)
    return _conv_run(tmp_path_factory.mktemp("conv-rgb"), (3, 18, 26),
                     {"channels": [8, 16], "kernel_size": 4, "conv_norm": "group", "activation": "leaky-relu",
                      "likelihood": "discretized-logistic", "components": 2})


@pytest.mark.parametrize("which", ["grey_run", "rgb_run", "conv_grey_run", "conv_rgb_run"])
def test_canvas_shows_pytorchs_decoder_mean_for_z_set_by_sliders(which, request, browser):
    run_dir = request.getfixturevalue(which)
    ctx = FigureContext.from_run(run_dir, device="cpu")
    p = Page(browser, run_dir / "explorer.html")
    try:
        c, h, w = ctx.image_shape
        assert p.page.evaluate("[document.getElementById('image').width, document.getElementById('image').height]") == [w, h]
        for z in ([0.0, 0.0, 0.0], [1.25, -0.5, 2.0], [-1.7, 0.9, -0.3]):
            p.set_sliders(z)
            np.testing.assert_allclose(p.sliders(), z, rtol=0, atol=1e-9)
            got, want = p.pixels(), _expected_rgba(ctx, torch.tensor(z))
            assert np.abs(got - want).max() <= 1, (z, np.abs(got - want).max())
            assert len(np.unique(want)) > 4  # a picture, not a flat field
    finally:
        p.page.close()
    assert not p.errors, p.errors
    assert not p.requests, f"the explorer asked for network resources: {p.requests}"


def test_a_slider_changes_the_image_and_a_click_loads_a_points_posterior_mean(grey_run, browser):
    ctx = FigureContext.from_run(grey_run, device="cpu")
    mu = latent_means(ctx.model, ctx.x).numpy()
    p = Page(browser, grey_run / "explorer.html")
    try:
        before, decodes = p.pixels(), p.page.evaluate("aevbExplorer.decodes")
        top = p.page.evaluate("aevbExplorer.order[0]")
        p.page.locator(f"#z{top}").fill("2.5")
        assert p.page.evaluate("aevbExplorer.decodes") == decodes + 1
        assert np.abs(p.pixels() - before).sum() > 100

        # click the point farthest from its neighbours on screen, so the click is unambiguous
        pts = np.array([[q["x"], q["y"]] for q in p.page.evaluate(
            "Array.from({length: aevbExplorer.nPoints}, (_, i) => aevbExplorer.screenPoint(i))")])
        d = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(len(pts)) * 1e9
        i = int(np.argmax(d.min(1)))
        p.page.mouse.click(*pts[i])
        np.testing.assert_allclose(p.sliders(), mu[i], rtol=0, atol=1e-6)
        assert f"#{i}" in p.page.inner_text("#z-source")
        assert np.abs(p.pixels() - _expected_rgba(ctx, torch.from_numpy(mu[i]))).max() <= 1
        # a second point: the interpolation between the two (both data images and 10 decoded steps)
        k = int(np.argsort(d.min(1))[-2])
        p.page.mouse.click(*pts[k])
        np.testing.assert_allclose(p.sliders(), mu[k], rtol=0, atol=1e-6)
        assert p.page.locator("#interp figure").count() == 12
    finally:
        p.page.close()
    assert not p.errors, p.errors


def test_units_are_marked_inactive_from_the_pages_active_list(grey_run, browser, tmp_path, monkeypatch):
    """Activity is Var_x E_q[z_j|x] > 0.01, computed in Python: the page marks exactly the units
    its "active" list names, whatever their KL (every unit here carries KL > 0.01)."""
    monkeypatch.setattr(explorer_page, "unit_variances", lambda mu: torch.tensor([0.5, 0.005, 0.02], dtype=torch.float64))
    # every unit carries KL above the threshold (the trained run's own KLs depend on its training)
    monkeypatch.setattr(explorer_page, "kl_per_dimension", lambda model, x: torch.tensor([0.05, 0.3, 0.02], dtype=torch.float64))
    path = write_explorer(grey_run, out=tmp_path / "explorer.html").path
    p = Page(browser, path)
    try:
        kl = p.page.evaluate("JSON.parse(document.getElementById('payload').textContent).latent.kl")
        assert min(kl) > 0.01
        rows = p.page.evaluate("""() => Array.from(document.querySelectorAll('#sliders .slider')).map(r =>
            [parseInt(r.querySelector('input').dataset.dim), r.classList.contains('inactive'), r.title])""")
        assert [d for d, _, _ in rows] == sorted(range(3), key=lambda j: -kl[j])  # ordered by KL
        assert {d for d, inactive, _ in rows if inactive} == {1}
        title = dict((d, t) for d, _, t in rows)[1]
        assert "5.0e-3" in title and "inactive" in title
        assert "2 of 3 active" in p.page.inner_text("#slider-order")
        assert "2 of 3 latent units are active" in p.page.inner_text("#about")
    finally:
        p.page.close()
    assert not p.errors, p.errors


def test_layout_fits_a_laptop_screen_and_does_not_jump(grey_run, browser):
    p = Page(browser, grey_run / "explorer.html")
    boxes = """() => ['.scatter-card', '.decode-card', '.sliders-card', '.interp-card', '#image', '#scatter']
        .map(s => { const r = document.querySelector(s).getBoundingClientRect(); return [s, r.x, r.y, r.width, r.height]; })"""
    try:
        assert p.page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
        first = p.page.evaluate(boxes)
        for _, x, y, w, h in first:  # every panel starts on the first screen
            assert 0 <= x and x + w <= VIEWPORT["width"] and 0 <= y < VIEWPORT["height"]
        for s, x, y, w, h in first[-2:]:  # the image and the scatter are wholly in view
            assert y + h <= VIEWPORT["height"], s
        pt = p.page.evaluate("aevbExplorer.screenPoint(7)")
        p.page.mouse.move(pt["x"], pt["y"])
        p.page.mouse.click(pt["x"], pt["y"])
        p.page.click("#sample")
        p.page.click("#zero")
        assert p.page.evaluate(boxes) == first
        assert p.page.evaluate("aevbExplorer.z") == [0, 0, 0]
    finally:
        p.page.close()
    assert not p.errors, p.errors


def test_hover_shows_the_datapoint_and_its_reconstruction_and_sampling_draws_from_the_prior(grey_run, browser):
    ctx = FigureContext.from_run(grey_run, device="cpu")
    mu = latent_means(ctx.model, ctx.x)
    p = Page(browser, grey_run / "explorer.html")
    try:
        i = 11
        pt = p.page.evaluate(f"aevbExplorer.screenPoint({i})")
        p.page.mouse.move(pt["x"], pt["y"])
        hovered = int(p.page.inner_text("#hover-x-cap").split()[0].lstrip("#"))  # the nearest point
        data = torch.round(ctx.x[hovered] * 255).numpy().astype(np.int64)
        np.testing.assert_array_equal(p.pixels("#hover-x").reshape(-1, 4)[:, 0], data)
        assert np.abs(p.pixels("#hover-rec") - _expected_rgba(ctx, mu[hovered])).max() <= 1
        assert p.page.evaluate("aevbExplorer.z") != mu[hovered].tolist()  # hovering moves no slider

        zs = []
        for _ in range(20):
            p.page.click("#sample")
            z = p.page.evaluate("aevbExplorer.z")
            np.testing.assert_allclose(p.sliders(), z, rtol=0, atol=1e-9)
            zs.append(z)
        zs = np.array(zs)
        assert len(np.unique(zs[:, 0])) == 20 and np.abs(zs).max() < 6 and 0.4 < zs.std() < 1.8
        assert np.abs(p.pixels() - _expected_rgba(ctx, torch.tensor(zs[-1]))).max() <= 1
    finally:
        p.page.close()
    assert not p.errors, p.errors


def _page_matches_pytorch(page, model, z: torch.Tensor, encoding: str, what: str) -> np.ndarray:
    """Decode the rows of z [N, J] with decoder.js in ``page`` from the weights embedded in
    ``encoding`` and assert they equal PyTorch's decoder mean within 1e-5, where PyTorch's
    weights are rounded the same way (this changes ``model``). Returns PyTorch's means [N, D]."""
    prog = decoder_program(model)
    if encoding == "float16":
        with torch.no_grad():
            for q in model.decoder.parameters():
                q.copy_(q.half().float())
    with torch.no_grad():
        want = model.likelihood.mean(model.decoder_params(z)).numpy()
    got = page.evaluate(
        "([layers, w, enc, zs]) => { const d = new AevbDecoder.Decoder({layers, weights: w, encoding: enc});"
        " return zs.map(z => Array.from(d.decode(z))); }",
        [prog.layers, prog.encode(encoding), encoding, z.tolist()])
    np.testing.assert_allclose(np.array(got), want, atol=1e-5, rtol=0, err_msg=what)
    return want


@pytest.mark.parametrize("encoding", ["float32", "float16"])
def test_decoder_js_runs_every_layer_kind_as_pytorch(encoding, browser):
    from aevb.config import ModelConfig
    from aevb.model import VAE

    cases = [("relu", "bernoulli", "identity"), ("tanh", "gaussian", "sigmoid"), ("elu", "gaussian", "identity"),
             ("softplus", "gaussian-fixed", "sigmoid"), ("leaky-relu", "gaussian-fixed", "identity"),
             ("gelu", "bernoulli", "identity"), ("silu", "bernoulli", "identity"), ("sigmoid", "gaussian", "sigmoid")]
    page = browser.new_page()
    try:
        page.set_content(f"<script>{DECODER_JS.read_text()}</script>")
        torch.manual_seed(0)
        for act, lik, mean_act in cases:
            cfg = ModelConfig(latent_dim=3, encoder_hidden=[9, 6], activation=act, likelihood=lik,
                              mean_activation=mean_act, init_std=0.8)
            model = VAE.from_config(cfg, 10).eval()
            want = _page_matches_pytorch(page, model, torch.randn(4, 3) * 1.5, encoding, f"{act}, {lik}, {mean_act}")
            assert want.std() > 1e-3
    finally:
        page.close()


CONV_CASES = [  # (image shape, channels, kernel, norm, activation, likelihood, components): the
    # crop offsets (top, left) are (2, 2), (0, 1), (1, 1) and (0, 0)
    ((1, 28, 20), [4, 6, 6], 3, "none", "relu", "bernoulli", 1),
    ((2, 11, 13), [3, 6], 3, "group", "silu", "gaussian-fixed", 1),
    ((3, 18, 26), [4, 8], 4, "group", "leaky-relu", "discretized-logistic", 3),
    ((3, 16, 16), [4, 6, 8], 5, "none", "elu", "gaussian", 1),
]


@pytest.mark.parametrize("encoding", ["float32", "float16"])
def test_decoder_js_runs_conv_decoders_as_pytorch(encoding, browser):
    """Every conv layer kind and the discretized logistic's mean, number for number (random
    weights of a size that saturates some logistic terms), including the crop of odd sizes."""
    from aevb.config import RunConfig, merge
    from aevb.model import VAE

    page = browser.new_page()
    try:
        page.set_content(f"<script>{DECODER_JS.read_text()}</script>")
        torch.manual_seed(0)
        for shape, channels, kernel, norm, act, lik, k in CONV_CASES:
            cfg = merge(RunConfig(), {"model": {"decoder_network": "conv", "channels": channels, "kernel_size": kernel,
                                                "conv_norm": norm, "activation": act, "latent_dim": 3,
                                                "likelihood": lik, "components": k}}).model
            model = VAE.from_config(cfg, math.prod(shape), shape).eval()
            with torch.no_grad():
                for q in model.decoder.parameters():
                    q.normal_(0, 0.4)
            want = _page_matches_pytorch(page, model, torch.randn(3, 3) * 1.5, encoding, f"{shape}, {lik}")
            assert want.std() > 0.05 and not np.array_equal(want[0], want[1])
    finally:
        page.close()


def test_a_conv_page_names_its_decoder_and_gives_bits_per_dim(conv_rgb_run, browser):
    from aevb.runs import Run

    bound = Run(conv_rgb_run).metrics()[-1][M.TEST_BOUND]
    p = Page(browser, conv_rgb_run / "explorer.html")
    try:
        about, facts = p.page.inner_text("#about"), p.page.inner_text("#facts")
    finally:
        p.page.close()
    assert ("Linear 3 \u2192 560, 2 transposed convolutions 4\u00d74 stride 2 through 16 \u2192 8 \u2192 18 channels "
            "to 20\u00d728 (6 parameters per value), GroupNorm, centre crop to 18\u00d726, leaky-relu") in about
    assert f"({-bound / (3 * 18 * 26 * math.log(2)):.3f} bits/dim)" in facts
    assert not p.errors, p.errors


@pytest.fixture(scope="module")
def off_page(grey_run, tmp_path_factory):
    """grey_run's page at a --max-size below its decoder's weights with the test images: no live
    decoding, reconstructions embedded."""
    res = write_explorer(grey_run, out=tmp_path_factory.mktemp("off") / "explorer.html", max_mb=0.06)
    assert not res.live and 20 < res.n_points < 180 and res.size_bytes <= 0.06e6
    return res


def test_a_page_without_live_decoding_says_so_and_hover_draws_the_stored_reconstruction(grey_run, off_page, browser):
    ctx = FigureContext.from_run(grey_run, device="cpu")
    mu = latent_means(ctx.model, ctx.x[:off_page.n_points])
    p = Page(browser, off_page.path)
    boxes = """() => ['.scatter-card', '.decode-card', '.sliders-card', '.interp-card', '#image', '#notice']
        .map(s => { const r = document.querySelector(s).getBoundingClientRect(); return [s, r.x, r.y, r.width, r.height]; })"""
    try:
        assert p.page.evaluate("aevbExplorer.live") is False and p.page.evaluate("aevbExplorer.decoder") is None
        notice = p.page.inner_text("#notice")
        assert p.page.is_visible("#notice") and notice.startswith("Live decoding is off: the decoder's 2,240 weights")
        assert "above --max-size 0.06 MB" in notice and f"aevb plot {grey_run} all" in notice
        assert p.page.inner_text("#decode-title") == "Reconstruction of the point"
        assert not p.page.is_visible("#sample") and not p.page.is_visible("#zero")
        assert p.page.evaluate("Array.from(document.querySelectorAll('#sliders input')).map(e => e.disabled)") == [True] * 3
        assert "needs live decoding" in p.page.inner_text("#interp")
        assert f"{off_page.n_points} of the {len(ctx.data.test)} test points" in p.page.inner_text("#about")
        first = p.page.evaluate(boxes)
        assert all(y + h <= VIEWPORT["height"] for s, x, y, w, h in first if s in ("#image", "#notice"))
        for i in (11, 37):
            pt = p.page.evaluate(f"aevbExplorer.screenPoint({i})")
            p.page.mouse.move(pt["x"], pt["y"])
            hovered = int(p.page.inner_text("#hover-x-cap").split()[0].lstrip("#"))  # the nearest point
            want = _expected_rgba(ctx, mu[hovered])  # PyTorch's mean at the posterior mean, now
            assert np.abs(p.pixels("#hover-rec") - want).max() <= 1
            assert np.abs(p.pixels("#image") - want).max() <= 1  # the large image: the same reconstruction
            data = torch.round(ctx.x[hovered] * 255).numpy().astype(np.int64)
            np.testing.assert_array_equal(p.pixels("#hover-x").reshape(-1, 4)[:, 0], data)
            np.testing.assert_allclose(p.sliders(), mu[hovered].numpy(), rtol=0, atol=1e-6)  # read-only: its z
            assert f"#{hovered}" in p.page.inner_text("#z-source")
        assert len(np.unique(want)) > 4
        p.page.mouse.click(pt["x"], pt["y"])  # a click decodes nothing and moves nothing
        assert p.page.evaluate(boxes) == first and p.page.evaluate("aevbExplorer.decodes") == 0
    finally:
        p.page.close()
    assert not p.errors, p.errors
    assert not p.requests, f"the explorer asked for network resources: {p.requests}"
