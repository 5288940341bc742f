"""`aevb explore`: the decoder program, the size limit (a page without live decoding for a
decoder that does not fit), refusals and what the page embeds.
The page's behaviour in a real browser is tested in tests/test_explorer_browser.py."""
import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from aevb.bounds import ACTIVE_UNIT_THRESHOLD, active_mask, active_unit_variances, posterior_means
from aevb.cli import main
from aevb.units import format_bytes
from aevb.config import ModelConfig, RunConfig, merge
from aevb.distributions import Likelihood, kl_normal_standard
from aevb.explorer import UnsupportedDecoder, decoder_program, write_explorer
from aevb.explorer import page as explorer_page
from aevb.explorer.program import encoded_chars, mean_error
from aevb.figures.compute import latent_means
from aevb.figures.runfigures import FigureContext
from aevb.model import VAE
from aevb.report import write_report
from aevb.runs import Run
from aevb.training import Trainer

from conftest import tiny_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("explore") / "run"
    Trainer.new(tiny_config(), out).fit()
    return out


def _payload(path):
    text = path.read_text()
    m = re.search(r'<script type="application/json" id="payload">(.*?)</script>', text, re.S)
    return json.loads(m.group(1))


def test_program_layers_and_weights_are_the_decoders(one_thread):
    cfg = ModelConfig(latent_dim=3, encoder_hidden=[7, 5], activation="elu", likelihood="gaussian",
                      mean_activation="sigmoid")
    model = VAE.from_config(cfg, 12)
    prog = decoder_program(model)
    kinds = [(l["kind"], l.get("fn")) for l in prog.layers]
    assert kinds == [("linear", None), ("activation", "elu"), ("linear", None), ("activation", "elu"),
                     ("linear", None), ("mean", "sigmoid")]
    assert prog.layers[-1]["take"] == 12  # the mean half of the Gaussian's 24 parameters
    lin = [l for l in prog.layers if l["kind"] == "linear"]
    assert [(l["in"], l["out"]) for l in lin] == [(3, 5), (5, 7), (7, 24)]
    w_last = model.decoder.net[-1].weight.detach().numpy()
    got = prog.weights[lin[-1]["weight"]:lin[-1]["weight"] + w_last.size].reshape(w_last.shape)
    np.testing.assert_array_equal(got, w_last)
    b0 = model.decoder.net[0].bias.detach().numpy()
    np.testing.assert_array_equal(prog.weights[lin[0]["bias"]:lin[0]["bias"] + 5], b0)
    assert prog.n_weights == sum(p.numel() for p in model.decoder.parameters())
    raw = base64.b64decode(prog.encode("float32"))
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4"), prog.weights)
    assert len(prog.encode("float16")) == encoded_chars(prog.n_weights, "float16")


def _conv_model(shape=(3, 30, 22), likelihood="discretized-logistic", components=3, norm="group", kernel=3,
                channels=(4, 8), encoder="mlp"):
    cfg = merge(RunConfig(), {"model": {"encoder_network": encoder, "decoder_network": "conv", "channels": list(channels),
                                        "kernel_size": kernel, "conv_norm": norm, "latent_dim": 3, "activation": "elu",
                                        "likelihood": likelihood, "components": components}}).model
    return VAE.from_config(cfg, math.prod(shape), shape)


def _block(prog, offset, like: torch.Tensor) -> np.ndarray:
    """The numbers of ``prog.weights`` at ``offset`` read in the shape of ``like``."""
    return prog.weights[offset:offset + like.numel()].reshape(tuple(like.shape))


def test_conv_program_layers_and_weight_offsets_are_the_modules():
    """3x30x22 images, 2 stride-2 stages of kernel 3: 8x6 -> 16x12 -> 32x24, cropped at (1, 1);
    GroupNorm; a 3-component discretized logistic (9 parameter maps per channel)."""
    model = _conv_model()
    dec = model.decoder
    prog = decoder_program(model)
    assert [l["kind"] for l in prog.layers] == ["linear", "activation", "reshape", "conv-transpose", "group-norm",
                                                "activation", "conv-transpose", "crop", "mean"]
    lin, _, reshape, up1, gn, act, up2, crop, mean = prog.layers
    assert (lin["in"], lin["out"]) == (3, 8 * 8 * 6) and reshape["shape"] == [8, 8, 6] == list(dec.start)
    assert act == {"kind": "activation", "fn": "elu", "alpha": 1.0}
    assert {k: up1[k] for k in ("in", "out", "in_size", "out_size", "kernel", "stride", "padding", "output_padding")} == {
        "in": 8, "out": 4, "in_size": [8, 6], "out_size": [16, 12], "kernel": [3, 3], "stride": [2, 2],
        "padding": [1, 1], "output_padding": [1, 1]}
    assert (up2["in"], up2["out"], up2["in_size"], up2["out_size"]) == (4, 27, [16, 12], [32, 24])
    assert (gn["groups"], gn["channels"], gn["eps"]) == (4, 4, 1e-5)
    assert crop == {"kind": "crop", "channels": 27, "in_size": [32, 24], "top": 1, "left": 1, "size": [30, 22]}
    assert mean == {"kind": "mean", "take": 3 * 30 * 22, "fn": "discretized-logistic", "components": 3,
                    "levels": 256, "min_log_scale": -7 - math.log(2)}
    # the weights at each offset are the module's, in PyTorch's logical layout [in, out, kH, kW],
    # although the module holds them channels_last
    conv = dec.deconv[0]
    assert not conv.weight.is_contiguous()
    np.testing.assert_array_equal(_block(prog, up1["weight"], conv.weight), conv.weight.detach().numpy())
    np.testing.assert_array_equal(_block(prog, up2["weight"], dec.deconv[3].weight), dec.deconv[3].weight.detach().numpy())
    np.testing.assert_array_equal(_block(prog, up2["bias"], dec.deconv[3].bias), dec.deconv[3].bias.detach().numpy())
    np.testing.assert_array_equal(_block(prog, lin["weight"], dec.fc[0].weight), dec.fc[0].weight.detach().numpy())
    with torch.no_grad():
        dec.deconv[1].weight.copy_(torch.tensor([2.0, 3.0, 4.0, 5.0]))
    prog = decoder_program(model)
    np.testing.assert_array_equal(prog.weights[gn["weight"]:gn["weight"] + 4], [2, 3, 4, 5])
    # every parameter once: the offsets tile the block
    spans = sorted((l[key], n) for l, key, n in [(lin, "weight", 3 * 384), (lin, "bias", 384), (up1, "weight", 8 * 4 * 9),
                                                 (up1, "bias", 4), (gn, "weight", 4), (gn, "bias", 4),
                                                 (up2, "weight", 4 * 27 * 9), (up2, "bias", 27)])
    assert [a for a, _ in spans] == list(np.cumsum([0] + [n for _, n in spans[:-1]]))
    assert prog.n_weights == sum(n for _, n in spans) == sum(p.numel() for p in dec.parameters())
    assert decoder_program(model, with_weights=False).layers == prog.layers


def test_conv_and_mlp_networks_mix_and_every_likelihood_has_a_mean():
    mixed = _conv_model(encoder="conv", likelihood="bernoulli", norm="none", channels=(4,))
    mixed.decoder = VAE.from_config(ModelConfig(latent_dim=3, encoder_hidden=[5], likelihood="bernoulli"),
                                    3 * 30 * 22).decoder
    assert [l["kind"] for l in decoder_program(mixed).layers] == ["linear", "activation", "linear", "mean"]
    means = {lik: decoder_program(_conv_model(likelihood=lik, components=1, norm="none")).layers[-1]
             for lik in ("bernoulli", "gaussian", "gaussian-fixed", "discretized-logistic")}
    assert [(m["fn"], m["take"]) for m in means.values()] == [
        ("sigmoid", 1980), ("identity", 1980), ("identity", 1980), ("discretized-logistic", 1980)]
    assert means["discretized-logistic"]["components"] == 1


def test_unsupported_decoders_and_modules_are_refused_naming_what():
    model = VAE.from_config(ModelConfig(latent_dim=2, encoder_hidden=[4], likelihood="bernoulli"), 16)

    class AnyName(nn.Module):  # a decoder of aevb's shape that is neither of aevb's decoders
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 16))

        def forward(self, z):
            return self.net(z).flip(-1)

    model.decoder = AnyName()
    with pytest.raises(UnsupportedDecoder, match="decoder is a AnyName, which it cannot run"):
        decoder_program(model)
    for module, what in [(nn.Hardswish(), "cannot run a Hardswish layer"),
                         (nn.BatchNorm2d(4), "cannot run a BatchNorm2d layer"),
                         (nn.ConvTranspose2d(4, 4, 3, dilation=2), "ConvTranspose2d.*its dilation"),
                         (nn.ConvTranspose2d(4, 4, 3, groups=2), "ConvTranspose2d.*its groups"),
                         (nn.ConvTranspose2d(5, 4, 3), r"its input of 4x16x12 numbers \(it needs 5 channels"),
                         (nn.GroupNorm(2, 6), "GroupNorm")]:
        conv = _conv_model(norm="none", likelihood="bernoulli")
        conv.decoder.deconv[1] = module  # after the first transposed convolution: a 4 x 16 x 12 image
        with pytest.raises(UnsupportedDecoder, match=what):
            decoder_program(conv)
    conv = _conv_model(norm="none", likelihood="bernoulli")
    conv.decoder.deconv[3] = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=0)  # no longer doubles
    with pytest.raises(UnsupportedDecoder, match="emit 31x23 images, not the 32x24"):
        decoder_program(conv)


def test_an_unknown_likelihood_is_refused():
    model = VAE.from_config(ModelConfig(latent_dim=2, encoder_hidden=[4], likelihood="bernoulli"), 16)

    class Poisson(Likelihood):
        name = "poisson"

    model.likelihood = Poisson()
    with pytest.raises(UnsupportedDecoder, match="'poisson' likelihood's mean"):
        decoder_program(model)


def test_float16_error_is_measured_and_small(one_thread):
    torch.manual_seed(0)
    model = VAE.from_config(ModelConfig(latent_dim=4, encoder_hidden=[64], likelihood="bernoulli"), 50).eval()
    z = torch.randn(100, 4)
    err = mean_error(model, z, "float16")
    assert 0 < err < 1 / 255
    assert mean_error(model, z, "float32") == 0.0


def test_explore_writes_one_self_contained_page(run_dir, one_thread):
    res = write_explorer(run_dir)
    assert res.path == run_dir / "explorer.html" and res.path.is_file()
    text = res.path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "fetch(" not in text and "XMLHttpRequest" not in text
    p = _payload(res.path)
    ctx = FigureContext.from_run(run_dir, device="cpu")
    n = p["points"]["n"]
    assert n == res.n_points == len(ctx.x)  # digits' 180 test points, all of them
    mu = np.frombuffer(base64.b64decode(p["points"]["mu"]), "<f4").reshape(n, 3)
    np.testing.assert_allclose(mu, latent_means(ctx.model, ctx.x).numpy(), atol=1e-6)
    pixels = np.frombuffer(base64.b64decode(p["points"]["pixels"]), np.uint8).reshape(n, -1)
    np.testing.assert_array_equal(pixels[3], np.round(ctx.x[3].numpy() * 255).astype(np.uint8))
    assert p["points"]["labels"][:5] == [int(v) for v in ctx.y[:5]]
    assert p["image"] == {"shape": [1, 8, 8], "scale": 1.0, "offset": 0.0}
    assert p["decoder"]["encoding"] == "float32" and p["encoding_error"] == 0.0
    # KL per unit, and which units are active: Var_x E_q[z_j|x] > 0.01 over the same points (aevb.bounds)
    with torch.no_grad():
        m, lv = ctx.model.encoder_params(ctx.x)
    np.testing.assert_allclose(p["latent"]["kl"], kl_normal_standard(m, lv).mean(0).numpy(), rtol=1e-5)
    np.testing.assert_allclose(p["latent"]["variance"], m.double().var(0).numpy(), rtol=1e-5)
    assert p["latent"]["active"] == [bool(v > 0.01) for v in m.double().var(0)]
    assert sum(p["latent"]["active"]) == int(active_mask(active_unit_variances(posterior_means(ctx.model, ctx.x))).sum())
    assert p["latent"]["active_threshold"] == ACTIVE_UNIT_THRESHOLD == 0.01


def test_the_page_marks_units_from_the_active_list_it_is_given(run_dir, tmp_path, monkeypatch):
    """explorer.js greys the units the payload's "active" list says are inactive, and computes no
    activity of its own from the KL."""
    monkeypatch.setattr(explorer_page, "unit_variances", lambda mu: torch.tensor([0.5, 0.005, 0.02], dtype=torch.float64))
    # every unit carries KL above the threshold (the trained run's own KLs depend on its training)
    monkeypatch.setattr(explorer_page, "kl_per_dimension", lambda model, x: torch.tensor([0.05, 0.3, 0.02], dtype=torch.float64))
    p = _payload(write_explorer(run_dir, out=tmp_path / "e.html").path)
    assert p["latent"]["active"] == [True, False, True] and p["latent"]["variance"] == [0.5, 0.005, 0.02]
    assert min(p["latent"]["kl"]) > 0.01  # every unit carries KL: the old KL rule would call all three active
    js = (Path(explorer_page.__file__).parent / "static" / "explorer.js").read_text()
    assert "P.latent.active" in js and "kl[j] < threshold" not in js and "v >= threshold" not in js


def test_size_limits_that_no_page_fits_refuse_and_keep_the_existing_page(run_dir, capsys):
    page = run_dir / "explorer.html"
    page.write_text("an earlier page")
    # 0.03 MB is below the page's scripts alone: not even one point fits without the weights
    rc = main(["explore", str(run_dir), "--max-size", "0.03"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "above --max-size 0.03 MB" in err and "even without the weights one test point" in err
    assert "nothing was written" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    # --require-live: the refusal of a decoder that does not fit, as before
    assert main(["explore", str(run_dir), "--max-size", "0.06", "--require-live"]) == 2
    err = capsys.readouterr().err
    assert "above the limit of 0.06 MB" in err and "Nothing was written" in err and len(err.strip().splitlines()) == 1
    assert main(["explore", str(run_dir), "--max-size", "0.06", "--points", "0"]) == 2
    assert "--points 0 leaves a page without live decoding nothing to show" in capsys.readouterr().err
    assert page.read_text() == "an earlier page"
    assert main(["explore", str(run_dir), "--max-size", "1000"]) == 2
    assert "at most 200 MB" in capsys.readouterr().err


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory, one_thread):
    """Digits with a 400-unit decoder: 27,264 weights, 0.15 MB as base64 float32."""
    out = tmp_path_factory.mktemp("explore-wide") / "run"
    Trainer.new(tiny_config(model={"encoder_hidden": [400]}, train={"epochs": 1}), out).fit()
    return out


def test_a_decoder_above_max_size_gives_a_page_of_pytorchs_reconstructions(wide_run, tmp_path, capsys):
    out = tmp_path / "off.html"
    assert main(["explore", str(wide_run), "--max-size", "0.1", "--out", str(out)]) == 0
    ctx = FigureContext.from_run(wide_run, device="cpu")
    n_weights = sum(p.numel() for p in ctx.model.decoder.parameters())
    assert n_weights == 3 * 400 + 400 + 400 * 64 + 64 == 27_264
    p = _payload(out)
    n = p["points"]["n"]
    line = capsys.readouterr().out.strip()
    assert line == (f"{out}  ({format_bytes(out.stat().st_size)}; live decoding off: the decoder's 27,264 weights "
                    "would take 145.4 kB as base64 float32 (72.7 kB as float16), above --max-size 0.1 MB; hover shows "
                    f"precomputed reconstructions; {n} test points)")
    assert out.stat().st_size <= 0.1e6
    assert p["decoder"]["weights"] is None and p["decoder"]["live"] is False and p["decoder"]["n_weights"] == 27_264
    assert p["decoder"]["notice"].startswith("Live decoding is off: the decoder's 27,264 weights would take 145.4 kB")
    assert f"`aevb plot {wide_run} all`" in p["decoder"]["notice"]
    # as many points as fit: fewer than the test set, and the page full to within one point
    assert 100 < n < p["points"]["total"] == len(ctx.data.test)
    per_point = 4 * math.ceil(2 * 64 / 3) + 4 * math.ceil(4 * 3 / 3) + 8
    assert 0.1e6 - out.stat().st_size < per_point + 25_000  # the frame's allowance
    # the embedded reconstructions are PyTorch's decoder mean at the posterior means, 8-bit
    x = ctx.x[:n]
    mu = np.frombuffer(base64.b64decode(p["points"]["mu"]), "<f4").reshape(n, 3)
    np.testing.assert_allclose(mu, latent_means(ctx.model, x).numpy(), atol=1e-6)
    with torch.no_grad():
        mean = ctx.model.likelihood.mean(ctx.model.decoder_params(torch.from_numpy(mu.copy())))
    want = torch.round(mean.clamp(0, 1) * 255).to(torch.uint8).numpy()
    rec = np.frombuffer(base64.b64decode(p["points"]["reconstructions"]), np.uint8).reshape(n, 64)
    assert np.abs(rec.astype(int) - want).max() <= 1 and (rec == want).mean() > 0.999
    assert len(np.unique(rec)) > 20 and not np.array_equal(rec[0], rec[1])
    pixels = np.frombuffer(base64.b64decode(p["points"]["pixels"]), np.uint8).reshape(n, 64)
    np.testing.assert_array_equal(pixels, np.round(x.numpy() * 255).astype(np.uint8))


def test_without_live_decoding_points_get_half_the_image_budget(wide_run, tmp_path, monkeypatch):
    monkeypatch.setattr(explorer_page, "IMAGE_BUDGET", 50 * 64)  # 50 digits of 8x8
    live = write_explorer(wide_run, out=tmp_path / "live.html")
    off = write_explorer(wide_run, out=tmp_path / "off.html", max_mb=0.1)
    assert (live.live, live.n_points, live.why_not_live) == (True, 50, "")
    assert (off.live, off.n_points) == (False, 25)
    assert off.why_not_live.endswith("above --max-size 0.1 MB")
    assert _payload(off.path)["points"]["n"] == 25
    # --points lowers it further; the images, not the weights, can be what leaves live decoding out
    assert write_explorer(wide_run, out=tmp_path / "few.html", max_mb=0.1, points=7).n_points == 7
    monkeypatch.setattr(explorer_page, "IMAGE_BUDGET", 16_000_000)
    res = write_explorer(wide_run, out=tmp_path / "img.html", max_mb=0.2)
    assert res.live is False and "and the 359 test images" in res.why_not_live
    assert "fewer --points would leave room for the weights" in res.why_not_live


def test_a_page_without_live_decoding_needs_the_data_set(wide_run, tmp_path, monkeypatch, capsys):
    def missing(self):
        raise FileNotFoundError("digits: no such file")

    monkeypatch.setattr(Run, "load_data", missing)
    assert main(["explore", str(wide_run), "--max-size", "0.1", "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert "the run's data set could not be loaded here" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.html").exists()


def test_explore_refuses_a_folder_as_out_and_a_folder_that_is_no_run(run_dir, tmp_path, capsys):
    assert main(["explore", str(run_dir), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["explore", str(tmp_path)]) == 2
    assert "not an aevb run folder" in capsys.readouterr().err


def test_float16_page_is_smaller_and_says_what_it_costs(run_dir, tmp_path, capsys):
    assert main(["explore", str(run_dir), "--weights", "float16", "--out", str(tmp_path / "e16.html")]) == 0
    assert "float16 changes the mean image by at most" in capsys.readouterr().out
    p16 = _payload(tmp_path / "e16.html")
    p32 = _payload(write_explorer(run_dir, out=tmp_path / "e32.html").path)
    assert len(p16["decoder"]["weights"]) < 0.55 * len(p32["decoder"]["weights"])
    assert 0 < p16["encoding_error"] < 1 / 255


def test_report_links_the_explorer_when_present(run_dir, tmp_path):
    (run_dir / "explorer.html").unlink(missing_ok=True)
    text = write_report(run_dir, figures=False, out=tmp_path / "r.html").read_text()
    assert "aevb explore" in text and 'href="' + str(run_dir / "explorer.html") not in text
    write_explorer(run_dir)
    text = write_report(run_dir, figures=False).read_text()
    assert 'href="explorer.html"' in text


def test_the_command_says_a_decoder_is_not_supported_and_writes_nothing(run_dir, monkeypatch, capsys):
    load = Run.open_model

    def with_conv_decoder(self, device="cpu", checkpoint="last"):
        loaded = load(self, device, checkpoint)
        loaded.model.decoder = nn.Sequential(nn.Linear(3, 16), nn.Unflatten(1, (1, 4, 4)),
                                             nn.ConvTranspose2d(1, 1, 2, 2), nn.Flatten())
        return loaded

    monkeypatch.setattr(Run, "open_model", with_conv_decoder)
    (run_dir / "explorer.html").unlink(missing_ok=True)
    assert main(["explore", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "decoder is a Sequential, which it cannot run" in err and len(err.strip().splitlines()) == 1
    assert not (run_dir / "explorer.html").exists()


def test_explore_writes_a_page_for_a_conv_run(tmp_path, one_thread, capsys):
    """A conv encoder and decoder (digits 8x8, 2 stages) with GroupNorm: the command writes the
    page, whose program is the decoder's; float16 states its measured cost."""
    cfg = tiny_config(model={"encoder_network": "conv", "decoder_network": "conv", "channels": [4, 8],
                             "kernel_size": 3, "conv_norm": "group"}, train={"epochs": 1})
    Trainer.new(cfg, tmp_path / "run").fit()
    assert main(["explore", str(tmp_path / "run"), "--weights", "float16"]) == 0
    out = capsys.readouterr().out
    assert "float16 changes the mean image by at most" in out and "decoder weights as float16" in out
    p = _payload(tmp_path / "run" / "explorer.html")
    prog = decoder_program(Run(tmp_path / "run").load_model("cpu"))
    assert p["decoder"]["layers"] == prog.layers and p["decoder"]["n_weights"] == prog.n_weights
    assert [l["kind"] for l in prog.layers].count("conv-transpose") == 2 and p["image"]["shape"] == [1, 8, 8]
    assert 0 < p["encoding_error"] < 1 / 255


def test_the_footer_reads_the_runs_evaluation_through_its_schema(run_dir, tmp_path, one_thread):
    """The page states what `aevb evaluate` wrote (its headline, from the file with the most
    samples) and the test ELBO's bits/dim by aevb.evaluate's convention for these data."""
    import shutil

    from aevb.cli import main
    from aevb.evaluate import bits_per_dim, bpd_convention

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    write_explorer(run, tmp_path / "before.html")
    assert _payload(tmp_path / "before.html")["facts"]["evaluation"] is None
    assert main(["evaluate", str(run), "--k", "2", "--no-progress"]) == 0
    assert main(["evaluate", str(run), "--k", "6", "--no-progress", "--precision", "bf16"]) == 0
    write_explorer(run, tmp_path / "after.html")
    facts = _payload(tmp_path / "after.html")["facts"]
    written = json.loads((run / "evaluation-k6.json").read_text())
    assert facts["evaluation"]["file"] == "evaluation-k6.json (networks in bfloat16)"
    rows = {label: value for label, value, _ in facts["evaluation"]["rows"]}
    assert rows["L_6 (importance-weighted bound)"] == written["lk"]["mean"]
    data = Run(run).load_data()
    offset, _ = bpd_convention(data.kind, data.levels, written["likelihood"])
    if offset is None:
        assert facts["test_elbo_bits"] is None
    else:
        assert facts["test_elbo_bits"] == pytest.approx(bits_per_dim(facts["test_elbo"], data.dim, offset))
