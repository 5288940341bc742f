"""The run report in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by
Playwright's sync API. Install both with `bash .ci/browser-setup.sh`; without them the test is
skipped with the reason. Run: `pytest -m browser tests/test_report_browser.py`.

The page is opened from disk with every network request refused, so a report that needed the
network would fail here.
"""
import os

import pytest

from helpers import CHROMIUM, LAUNCH_ARGS, playwright as _playwright

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from aevb.config import RunConfig
    from aevb.report import REPORT_FILE, ReportCallback
    from aevb.training import Trainer

    _playwright()  # skip before training when the browser is not there
    cfg = RunConfig()
    cfg.model.latent_dim = 2
    cfg.model.encoder_hidden = [32]
    cfg.train.epochs = 2
    cfg.train.progress = False
    cfg.train.tensorboard = False
    out = tmp_path_factory.mktemp("browser") / "run"
    Trainer.new(cfg, out, callbacks=[ReportCallback(latents_every=1)]).fit()
    path = out / REPORT_FILE
    assert path.is_file()
    return path


def test_report_renders_in_headless_chromium_without_errors(report, tmp_path):
    sync_playwright = _playwright()
    errors, requests = [], []
    with sync_playwright() as p:
        # a fresh user-data-dir (Playwright passes it as --user-data-dir)
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS,
            viewport={"width": 1280, "height": 900})
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))

            def refuse_network(route):
                url = route.request.url
                if url.startswith(("file:", "data:")):
                    route.continue_()
                else:
                    requests.append(url)
                    route.abort()

            page.route("**/*", refuse_network)
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url[:100]}"))
            page.goto(report.resolve().as_uri(), wait_until="load")
            page.wait_for_function("Array.from(document.images).every(i => i.complete)")
            images = page.evaluate(
                "Array.from(document.images).map(i => ({src: i.src.slice(0, 22), w: i.naturalWidth, "
                "h: i.naturalHeight, alt: i.alt}))")
            title = page.title()
            headings = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            shot = os.environ.get("AEVB_REPORT_SCREENSHOT")
            if shot:
                page.screenshot(path=shot, full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    assert not requests, f"the report asked for network resources: {requests}"
    assert len(images) >= 9
    for im in images:
        assert im["src"] == "data:image/png;base64,", im
        assert im["w"] > 0 and im["h"] > 0, im
    assert title.startswith("aevb report")
    assert {"Final numbers", "Training curves", "Learned data manifold", "Configuration"} <= set(headings)
    assert (tmp_path / "report.png").stat().st_size > 0
