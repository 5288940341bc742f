"""Figures and the run report: checked for content (what is decoded, what is plotted), not only
for existing files."""
import base64
import io
import json
import re

import numpy as np
import pytest
import torch
from scipy.stats import norm

from aevb.bounds import ACTIVE_UNIT_THRESHOLD, active_mask, active_unit_variances, posterior_means
from aevb.cli import main
from aevb.config import ModelConfig, RunConfig
from aevb.data import Dataset, Split, load_dataset
from aevb.distributions import kl_normal_standard
from aevb.errors import PlotError
from aevb.evaluate import read_evaluation
from aevb.figures import compute, draw, runfigures
from aevb.images import to_images
from aevb.model import VAE
from aevb.report import REPORT_FILE, ReportCallback, write_report
from aevb.runs import Run
from aevb.training import Trainer
from aevb import metrics as M


# ---------------------------------------------------------------------------- fixtures
def tiny_config(latent_dim=2, epochs=2):
    cfg = RunConfig()
    cfg.data.dataset = "digits"
    cfg.model.latent_dim = latent_dim
    cfg.model.encoder_hidden = [32]
    cfg.train.epochs = epochs
    cfg.train.batch_size = 100
    cfg.train.progress = False
    cfg.train.tensorboard = False
    cfg.train.seed = 0
    return cfg


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def run2d(tmp_path_factory, digits):
    """A tiny run on digits with a 2-D latent space, trained with the report callback."""
    out = tmp_path_factory.mktemp("runs") / "digits2d"
    Trainer.new(tiny_config(2, epochs=3), out, data=digits,
                callbacks=[ReportCallback(latents_every=1)]).fit()
    return Run(out)


@pytest.fixture(scope="module")
def ctx2d(run2d, digits):
    return runfigures.FigureContext.from_run(run2d, device="cpu", data=digits)


def small_vae(d, j=3, likelihood="bernoulli", seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(latent_dim=j, encoder_hidden=[16], likelihood=likelihood, activation="tanh", init_std=0.3)
    return VAE.from_config(cfg, d).eval()


def the_image(fig):
    """The array of the (first) AxesImage of a figure."""
    ims = [im for ax in fig.axes for im in ax.get_images()]
    assert ims, "the figure shows no image"
    return np.asarray(ims[0].get_array())


def tile(array, r, c, h, w, pad=1):
    y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
    return array[y0:y0 + h, x0:x0 + w]


def is_png(data: bytes):
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.width > 0 and img.height > 0
    return img


# ---------------------------------------------------------------------------- manifold
def test_quantile_coordinates_are_gaussian_inverse_cdf_of_evenly_spaced_values():
    for n in (1, 5, 20):
        p = (np.arange(n) + 0.5) / n
        assert np.allclose(np.diff(p), 1.0 / n) and p.min() > 0 and p.max() < 1
        np.testing.assert_allclose(compute.grid_coordinates(n, "quantile"), norm.ppf(p))
    np.testing.assert_allclose(compute.grid_coordinates(7, "uniform"), np.linspace(-3, 3, 7))
    with pytest.raises(ValueError):
        compute.grid_coordinates(5, "log")


def test_manifold_grid_has_n_by_n_distinct_tiles_on_the_quantile_grid(ctx2d):
    n = 7
    model = ctx2d.model
    z, x = compute.manifold_grid(model, n, "quantile")
    assert z.shape == (n * n, 2) and x.shape == (n * n, 64)
    c = norm.ppf((np.arange(n) + 0.5) / n)
    zz = z.numpy().reshape(n, n, 2)
    # columns run along z_1 (increasing), rows along z_2 (decreasing: up is positive)
    np.testing.assert_allclose(zz[0, :, 0], c, rtol=1e-6)
    np.testing.assert_allclose(zz[:, 0, 1], c[::-1], rtol=1e-6)
    # the decoded tiles are the decoder means at those z, and no two tiles are identical
    expected = model.likelihood.mean(model.decoder_params(z)).detach()
    torch.testing.assert_close(x, expected)
    dist = torch.cdist(x.double(), x.double())
    off_diagonal = dist[~torch.eye(n * n, dtype=torch.bool)]
    assert off_diagonal.min() > 0
    assert (x[0] - x[-1]).abs().max() > 0.05  # opposite corners look different

    uz, _ = compute.manifold_grid(model, n, "uniform")
    np.testing.assert_allclose(uz.numpy().reshape(n, n, 2)[0, :, 0], np.linspace(-3, 3, n), rtol=1e-6)

    # the figure shows exactly these n x n tiles, in order
    fig = draw.manifold_figure(x, c, (1, 8, 8), "quantile", (0, 1), 2)
    a = the_image(fig)
    assert a.shape == (n * 9 + 1, n * 9 + 1)
    imgs = to_images(x, (1, 8, 8))
    for i in (0, 3, n * n - 1):
        r, col = divmod(i, n)
        np.testing.assert_array_equal(tile(a, r, col, 8, 8), imgs[i, :, :, 0])


def test_manifold_of_a_larger_latent_space_spans_the_two_dims_of_highest_kl(digits):
    model = small_vae(64, j=5)
    ctx = runfigures.FigureContext(model=model, data=digits)
    ctx._kl = torch.tensor([0.1, 3.0, 0.0, 2.0, 0.5])
    assert runfigures.manifold_dims(ctx) == [1, 3]
    figs = runfigures.make_figures(ctx, "manifold", n=4)
    assert set(figs) == {"manifold.png", "manifold_uniform.png"}
    title = figs["manifold.png"].axes[0].get_title()
    assert "highest KL" in title and "5-D" in title
    z, _ = compute.manifold_grid(model, 4, "quantile", dims=[1, 3])
    assert torch.all(z[:, [0, 2, 4]] == 0)
    assert len(torch.unique(z[:, 1])) == 4 and len(torch.unique(z[:, 3])) == 4


# ---------------------------------------------------------------------------- latent space
def test_latent_scatter_plots_the_encoder_means(ctx2d):
    fig = runfigures.make_figures(ctx2d, "latent")["latent.png"]
    offsets = np.asarray(fig.axes[0].collections[0].get_offsets())
    with torch.no_grad():
        mu = ctx2d.model.encoder_params(ctx2d.x)[0].numpy()
    np.testing.assert_allclose(offsets, mu, rtol=1e-5, atol=1e-6)
    # coloured by label
    colours = fig.axes[0].collections[0].get_array()
    np.testing.assert_array_equal(np.asarray(colours), ctx2d.y.numpy())


def test_latent_scatter_projects_larger_latent_spaces_with_pca():
    from sklearn.decomposition import PCA

    model = small_vae(64, j=6)
    x = torch.rand(50, 64)
    mu = compute.latent_means(model, x)
    fig = draw.latent_figure(mu, labels=np.arange(50) % 3, method="pca")
    pts = np.asarray(fig.axes[0].collections[0].get_offsets())
    comps = PCA(2).fit(mu.numpy().astype(np.float64)).components_
    np.testing.assert_allclose(pts, mu.numpy() @ comps.T, rtol=1e-4, atol=1e-5)
    assert "PCA" in fig.axes[0].get_title()


def test_latent_series_uses_the_snapshots_saved_during_training(run2d, ctx2d):
    snaps, labels = runfigures.load_latent_snapshots(run2d.path)
    assert [e for e, _ in snaps] == [1, 2, 3]
    assert labels is not None and len(labels) == len(snaps[0][1])
    # the last snapshot is the final model's posterior means
    np.testing.assert_allclose(snaps[-1][1], compute.latent_means(ctx2d.model, ctx2d.x[:len(labels)]).numpy(),
                               rtol=1e-5, atol=1e-6)
    fig = runfigures.make_figures(ctx2d, "latent-series")["latent_series.png"]
    scatter_axes = [ax for ax in fig.axes if ax.collections]
    assert [ax.get_title() for ax in scatter_axes] == ["epoch 1", "epoch 2", "epoch 3"]
    for ax, (_, mu) in zip(scatter_axes, snaps):
        np.testing.assert_allclose(np.asarray(ax.collections[0].get_offsets()), mu, rtol=1e-6)


# ---------------------------------------------------------------------------- traversal, interpolation
def test_traversal_changes_only_the_chosen_dimension():
    model = small_vae(64, j=4)
    x0 = torch.rand(64)
    values = [-3.0, -1.0, 0.0, 2.0]
    z, x = compute.traversal(model, x0, 2, values)
    mu0 = model.encoder_params(x0[None])[0][0].detach()
    assert z.shape == (4, 4) and x.shape == (4, 64)
    torch.testing.assert_close(z[:, 2], torch.tensor(values))
    for d in (0, 1, 3):
        torch.testing.assert_close(z[:, d], mu0[d].expand(4))
    torch.testing.assert_close(x, model.likelihood.mean(model.decoder_params(z)).detach())
    assert (x[0] - x[-1]).abs().max() > 0


def test_traversal_rows_are_ordered_by_kl(digits):
    model = small_vae(64, j=4)
    ctx = runfigures.FigureContext(model=model, data=digits)
    ctx._kl = torch.tensor([0.2, 0.0, 1.5, 0.7])
    fig = runfigures.make_figures(ctx, "traversal", n=5)["traversal.png"]
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert [re.search(r"z_\{(\d)\}", s).group(1) for s in labels] == ["3", "4", "1", "2"]
    assert the_image(fig).shape == (4 * 9 + 1, 5 * 9 + 1)


def test_interpolation_endpoints_are_the_two_posterior_means():
    model = small_vae(64, j=3)
    xa, xb = torch.rand(64), torch.rand(64)
    z, x = compute.interpolate(model, xa, xb, steps=6)
    mu = model.encoder_params(torch.stack([xa, xb]))[0].detach()
    assert z.shape == (6, 3) and x.shape == (6, 64)
    torch.testing.assert_close(z[0], mu[0], rtol=0, atol=0)
    torch.testing.assert_close(z[-1], mu[1], rtol=0, atol=0)
    # on the straight line between them, evenly spaced
    torch.testing.assert_close(z[1:] - z[:-1], ((mu[1] - mu[0]) / 5).expand(5, 3))


# ---------------------------------------------------------------------------- image shapes
@pytest.mark.parametrize("shape", [(1, 28, 20), (3, 8, 6)])
def test_figures_keep_non_square_and_colour_images(tmp_path, shape):
    c, h, w = shape
    d = c * h * w
    g = torch.Generator().manual_seed(0)
    data = Dataset(name="fake", train=Split(torch.rand(40, d, generator=g), torch.arange(40) % 4),
                   test=Split(torch.rand(20, d, generator=g), torch.arange(20) % 4), image_shape=shape)
    model = small_vae(d, j=3)
    ctx = runfigures.FigureContext(model=model, data=data)
    figs = runfigures.make_figures(ctx, "manifold", n=3)
    a = the_image(figs["manifold.png"])
    expected = (3 * (h + 1) + 1, 3 * (w + 1) + 1) + ((3,) if c == 3 else ())
    assert a.shape == expected
    rec = runfigures.make_figures(ctx, "reconstructions", n=4)["reconstructions.png"]
    assert the_image(rec).shape == (4 * (h + 1) + 1, 4 * (w + 1) + 1) + ((3,) if c == 3 else ())
    # and the PNG files come out in the data's colour mode
    written, skipped = runfigures.draw_figures(ctx, "all", tmp_path, n=3)
    assert "latent-series" in skipped  # no run folder: no snapshots
    assert {"manifold.png", "samples.png", "reconstructions.png", "traversal.png", "interpolation.png",
            "latent.png", "kl.png"} <= set(written)
    for p in written.values():
        is_png(p.read_bytes())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


# ---------------------------------------------------------------------------- curves and KL
def test_curves_plot_the_history_and_kl_bars_the_units(run2d, ctx2d):
    hist = run2d.metrics()
    fig = draw.curves_figure(hist)
    lines = {(ax.get_title(), line.get_label()): line for ax in fig.axes for line in ax.get_lines()}
    bound = [ln for (t, lab), ln in lines.items() if t.startswith("ELBO") and lab == "test"][0]
    np.testing.assert_allclose(bound.get_ydata(), [r[M.TEST_BOUND] for r in hist])
    kl_train = [ln for (t, lab), ln in lines.items() if t.startswith("KL") and lab == "train"][0]
    np.testing.assert_allclose(kl_train.get_ydata(), [r[M.TRAIN_KL] for r in hist])

    # the KL per dimension is the closed form averaged over the test set
    with torch.no_grad():
        mu, lv = ctx2d.model.encoder_params(ctx2d.x)
    torch.testing.assert_close(ctx2d.kl, kl_normal_standard(mu, lv).mean(0), rtol=1e-5, atol=1e-6)


def test_active_units_are_those_whose_posterior_mean_varies_over_the_data(ctx2d):
    """One definition: Var_x E_q[z_j|x] > 0.01 (aevb.bounds), not the KL of the unit."""
    kl = torch.tensor([0.5, 0.001, 2.0, 0.0])
    var = torch.tensor([0.8, 0.5, 0.002, 0.0], dtype=torch.float64)  # unit 2: little KL but active; 3: the reverse
    fig = draw.kl_figure(kl, var)
    ax_var, ax_kl = fig.axes[:2]
    np.testing.assert_allclose([b.get_height() for b in ax_kl.patches][:3], kl.numpy()[:3], rtol=1e-6)
    np.testing.assert_allclose([b.get_height() for b in ax_var.patches][:3], var.numpy()[:3], rtol=1e-6)
    # zeros are drawn at a floor below everything else, so they still show on the log scale
    assert 0 < ax_kl.patches[3].get_height() < 0.001 and 0 < ax_var.patches[3].get_height() < 0.002
    grey = (0.7, 0.7, 0.7)
    for ax in (ax_var, ax_kl):
        colours = [tuple(np.round(b.get_facecolor()[:3], 3)) for b in ax.patches]
        assert [c != grey for c in colours] == [True, True, False, False]
    dashed = [ln for ln in ax_var.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and np.allclose(dashed[0].get_ydata(), ACTIVE_UNIT_THRESHOLD)
    assert not [ln for ln in ax_kl.get_lines() if ln.get_linestyle() == "--"]  # no threshold on the KL
    assert "2 of 4 active" in fig.texts[0].get_text()

    # a run's figure: the variances of the test points' posterior means, and the count of aevb.bounds
    with torch.no_grad():
        mu = ctx2d.model.encoder_params(ctx2d.x)[0].double()
    torch.testing.assert_close(ctx2d.unit_variances, mu.var(0), rtol=1e-5, atol=1e-8)
    assert ctx2d.active.tolist() == (mu.var(0) > 0.01).tolist()
    assert int(ctx2d.active.sum()) == int(active_mask(active_unit_variances(posterior_means(ctx2d.model, ctx2d.x))).sum())
    fig = runfigures.make_figures(ctx2d, "kl")["kl.png"]
    np.testing.assert_allclose([b.get_height() for b in fig.axes[0].patches], ctx2d.unit_variances.numpy(), rtol=1e-6)
    assert f"{int(ctx2d.active.sum())} of 2 active" in fig.texts[0].get_text()


def test_a_latent_space_with_a_dead_unit_has_it_inactive_in_the_figure(digits, tmp_path):
    model = small_vae(64, j=3)
    with torch.no_grad():  # unit 1's posterior mean no longer depends on x: inactive, whatever its KL
        model.encoder.net[-1].weight[1].zero_()
    ctx = runfigures.FigureContext(model=model, data=digits)
    assert ctx.unit_variances[1] == 0 and ctx.active.tolist() == [True, False, True]
    written, _ = runfigures.draw_figures(ctx, "kl", tmp_path)
    is_png(written["kl.png"].read_bytes())


# ---------------------------------------------------------------------------- the CLI
ALL_FILES = {"reconstructions.png", "samples.png", "manifold.png", "manifold_uniform.png", "latent.png",
             "latent_series.png", "interpolation.png", "traversal.png", "curves.png", "kl.png"}


def test_cli_plot_all_writes_every_figure(run2d, tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["plot", str(run2d.path), "all", "--out", str(out), "--device", "cpu", "-n", "5", "--draw"]) == 0
    printed = capsys.readouterr().out.split()
    assert {p.split("/")[-1] for p in printed} == ALL_FILES
    assert {p.name for p in out.iterdir()} == ALL_FILES
    for p in out.iterdir():
        is_png(p.read_bytes())
    # one kind, into the run folder by default
    assert main(["plot", str(run2d.path), "manifold", "--grid-size", "4"]) == 0
    assert (run2d.path / "figures" / "manifold.png").is_file()


def test_cli_plot_refuses_bad_kinds_and_folders_that_are_not_runs(run2d, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["plot", str(run2d.path), "pictures"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["plot", str(tmp_path), "all"]) == 2
    err = capsys.readouterr().err
    assert "not an aevb run" in err and "Traceback" not in err
    assert main(["plot", str(tmp_path / "missing"), "curves"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["plot", str(run2d.path), "samples", "-n", "0"]) == 2


# ---------------------------------------------------------------------------- the report
def _check_self_contained(text: str):
    imgs = re.findall(r"<img\b[^>]*>", text)
    assert imgs
    for tag in imgs:
        m = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', tag)
        assert m, f"image is not an embedded PNG: {tag[:80]}"
        is_png(base64.b64decode(m.group(1), validate=True))
    assert not re.search(r"<script\b[^>]*\bsrc\s*=", text, re.I)
    assert not re.search(r"<link\b", text, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", text, re.I)
    assert "http://" not in text and "https://" not in text
    return imgs


def test_report_is_written_by_training_and_is_self_contained(run2d):
    path = run2d.path / REPORT_FILE
    assert path.is_file()
    text = path.read_text()
    imgs = _check_self_contained(text)
    assert len(imgs) == len(ALL_FILES)
    # config and final numbers are in it
    last = run2d.metrics()[-1]
    assert f"{last['test_bound']:.4f}" in text
    assert "latent_dim" in text and "encoder_hidden" in text
    assert not [p for p in run2d.path.iterdir() if p.name.startswith(".report")]


def test_aevb_report_shows_what_aevb_evaluate_wrote(run2d, tmp_path, capsys):
    assert main(["evaluate", str(run2d.path), "--k", "5", "--device", "cpu"]) == 0
    assert main(["evaluate", str(run2d.path), "--k", "3", "--device", "cpu", "--precision", "bf16"]) == 0
    evaluation = run2d.path / "evaluation-k5.json"
    d = read_evaluation(evaluation)
    other = run2d.path / "evaluation-other.json"
    other.write_text(json.dumps({"format": "someone-elses", "split": "test", "k": 50, "iw_bound": -28.5}))
    broken = run2d.path / "evaluation-broken.json"
    broken.write_text("{not json")
    capsys.readouterr()
    try:
        out = tmp_path / "r.html"
        assert main(["report", str(run2d.path), "--out", str(out), "--device", "cpu"]) == 0
        assert capsys.readouterr().out.strip() == str(out)
        text = out.read_text()
        _check_self_contained(text)
        section = text[text.index('<h2 id="evaluation">'):text.index('<h2 id="explorer">')]
        # the headline of the file aevb evaluate wrote: L_5 and the active units, as that file says
        assert re.search(r"<b>L_5 \(importance-weighted bound\)</b></td><td class=\"num\">"
                         + re.escape(f"{d['lk']['mean']:.4f}") + "</td>", section)
        assert re.search(r"<b>active units \(Var_x E_q\[z_j\] &gt; 0.01\)</b></td><td class=\"num\">"
                         + f"{d['active_units']}</td><td>of 2</td>", section)
        assert f"{d['elbo']['mean']:.4f}" in section and "<code>lk.se</code>" in section
        # an evaluation in bfloat16 says so where its numbers are introduced; a float32 one does not
        k3 = section[section.index("<h3>evaluation-k3.json</h3>"):]
        assert "k = 3, last checkpoint" in k3 and "networks in bfloat16" in k3[:k3.index("</p>")]
        k5 = section[section.index("<h3>evaluation-k5.json</h3>"):]
        assert "networks in bfloat16" not in k5[:k5.index("</p>")]
        # files that are not evaluations are named, with why, and the report is complete
        assert "evaluation-other.json is not an aevb evaluation" in section
        assert "evaluation-broken.json could not be read" in section
        assert "-28.5000" not in section
        assert len(re.findall(r"<img\b", text)) == len(ALL_FILES)
        # --no-figures embeds what is already there
        out2 = write_report(run2d, figures=False, out=tmp_path / "r2.html")
        assert len(_check_self_contained(out2.read_text())) == len(ALL_FILES)
    finally:
        for p in (evaluation, other, broken):
            p.unlink()


def test_aevb_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not an aevb run" in capsys.readouterr().err


def test_figures_of_the_model_alone_are_drawn_when_the_data_set_is_missing(run2d, tmp_path):
    model = run2d.load_model()
    ctx = runfigures.FigureContext(model=model, image_shape=(1, 8, 8), history=run2d.metrics(), run_dir=run2d.path,
                              data_error="4 data file(s) missing and downloading is disabled:\n  - a.gz")
    written, skipped = runfigures.draw_figures(ctx, "all", tmp_path, n=3)
    assert set(written) == {"samples.png", "manifold.png", "manifold_uniform.png", "curves.png",
                            "latent_series.png"}
    assert set(skipped) == {"reconstructions", "latent", "interpolation", "traversal", "kl"}
    assert all("downloading is disabled" in why for why in skipped.values())
    with pytest.raises(PlotError):
        runfigures.make_figures(ctx, "latent")
