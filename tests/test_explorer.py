"""`aevb explore`: the decoder program, the size limit, refusals and what the page embeds.
The page's behaviour in a real browser is tested in tests/test_explorer_browser.py."""
import base64
import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from aevb.cli import main
from aevb.config import ModelConfig
from aevb.distributions import Likelihood
from aevb.explorer import UnsupportedDecoder, decoder_program, write_explorer
from aevb.explorer.program import encoded_chars, mean_error
from aevb.model import VAE
from aevb.trainer import Trainer

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


def test_conv_decoders_are_refused_by_type_not_by_name():
    model = VAE.from_config(ModelConfig(latent_dim=2, encoder_hidden=[4], likelihood="bernoulli"), 16)

    class AnyName(nn.Module):  # a decoder with a transposed convolution, whatever it is called
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 4)
            self.up = nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1, output_padding=1)

        def forward(self, z):
            return self.up(self.fc(z).view(-1, 1, 2, 2)).flatten(1)

    model.decoder = AnyName()
    with pytest.raises(UnsupportedDecoder, match="does not support convolutional decoders"):
        decoder_program(model)


def test_an_unknown_likelihood_is_refused():
    model = VAE.from_config(ModelConfig(latent_dim=2, encoder_hidden=[4], likelihood="bernoulli"), 16)

    class Logistic(Likelihood):
        name = "discretized-logistic"

    model.likelihood = Logistic()
    with pytest.raises(UnsupportedDecoder, match="discretized-logistic"):
        decoder_program(model)


def test_float16_error_is_measured_and_small(one_thread):
    torch.manual_seed(0)
    model = VAE.from_config(ModelConfig(latent_dim=4, encoder_hidden=[64], likelihood="bernoulli"), 50).eval()
    z = torch.randn(100, 4)
    err = mean_error(model, z, "float16")
    assert 0 < err < 1 / 255
    assert mean_error(model, z, "float32") == 0.0


def test_explore_writes_one_self_contained_page(run_dir, one_thread):
    from aevb.plots import FigureContext, latent_means

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
    assert len(p["latent"]["kl"]) == 3 and all(k >= 0 for k in p["latent"]["kl"])


def test_size_limit_refuses_and_keeps_the_existing_page(run_dir, capsys):
    page = run_dir / "explorer.html"
    page.write_text("an earlier page")
    rc = main(["explore", str(run_dir), "--max-size", "0.05"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "above the limit of 0.05 MB" in err and "Nothing was written" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert page.read_text() == "an earlier page"
    assert main(["explore", str(run_dir), "--max-size", "1000"]) == 2
    assert "at most 200 MB" in capsys.readouterr().err


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
    from aevb.report import write_report

    (run_dir / "explorer.html").unlink(missing_ok=True)
    text = write_report(run_dir, figures=False, out=tmp_path / "r.html").read_text()
    assert "aevb explore" in text and 'href="' + str(run_dir / "explorer.html") not in text
    write_explorer(run_dir)
    text = write_report(run_dir, figures=False).read_text()
    assert 'href="explorer.html"' in text


def test_the_command_says_conv_decoders_are_not_supported_and_writes_nothing(run_dir, monkeypatch, capsys):
    from aevb.runs import Run

    load = Run.load_model

    def with_conv_decoder(self, device="cpu"):
        model = load(self, device)
        model.decoder = nn.Sequential(nn.Linear(3, 16), nn.Unflatten(1, (1, 4, 4)), nn.ConvTranspose2d(1, 1, 2, 2),
                                      nn.Flatten())
        return model

    monkeypatch.setattr(Run, "load_model", with_conv_decoder)
    (run_dir / "explorer.html").unlink(missing_ok=True)
    assert main(["explore", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "does not support convolutional decoders yet" in err and len(err.strip().splitlines()) == 1
    assert not (run_dir / "explorer.html").exists()
