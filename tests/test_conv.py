"""Convolutional encoders and decoders: shapes for every image size, the flat parameter layout,
batch independence, learning, resume, the conv presets and the refusal of bad inputs."""
import math

import numpy as np
import pytest
import torch

from aevb.cli import main
from aevb.config import ConfigError, RunConfig, merge
from aevb.convnets import ConvDecoder, ConvEncoder, check_fits
from aevb.evaluate import evaluate_run
from aevb.model import VAE
from aevb.config import apply_preset
from aevb.bounds import dataset_bound
from aevb.training import Trainer

from conftest import tiny_config
from aevb import metrics as M

SHAPES = [(1, 28, 28), (1, 28, 20), (3, 32, 32), (3, 64, 64), (3, 218, 178), (1, 8, 8)]


def _model_cfg(**kw):
    base = {"encoder_network": "conv", "decoder_network": "conv", "channels": [4, 8], "kernel_size": 4,
            "latent_dim": 3, "likelihood": "gaussian"}
    base.update(kw)
    return merge(RunConfig(), {"model": base}).model


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kernel", [3, 4])
def test_shapes_for_every_image_size_and_channel_count(shape, kernel, one_thread):
    d = math.prod(shape)
    model = VAE.from_config(_model_cfg(kernel_size=kernel, activation="tanh"), d, shape)  # no dead units
    x = torch.rand(5, d)
    mu, log_var = model.encoder_params(x)
    assert mu.shape == log_var.shape == (5, 3)
    z = torch.randn(2, 5, 3)
    params = model.decoder_params(z)
    assert params.shape == (2, 5, 2 * d)  # gaussian: mean and log-variance for every pixel and channel
    assert model.elbo(x).bound.shape == (5,)
    assert model.iw_bound(x, k=4).shape == (5,)
    # every corner of the image reaches q(z|x): nothing is dropped by the reshape
    xg = x[:1].clone().requires_grad_()
    model.encoder_params(xg)[0].sum().backward()
    g = xg.grad.reshape(shape).abs().sum(0)
    assert all(g[i, j] > 0 for i in (0, -1) for j in (0, -1))


def test_decoder_output_is_laid_out_like_the_mlp_decoder():
    """n_params blocks of D = C*H*W values in (C, H, W) order: parameter p of channel c at
    pixel (i, j) is element p*D + c*H*W + i*W + j."""
    c, h, w = 3, 10, 6
    dec = ConvDecoder(2, [4, 8], (c, h, w), n_params=2, kernel=4)
    last = dec.deconv[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.arange(2 * c, dtype=torch.float32))  # output map p*C + c holds p*C + c
    out = dec(torch.randn(7, 2))
    assert out.shape == (7, 2 * c * h * w)
    expected = torch.arange(2 * c, dtype=torch.float32).repeat_interleave(h * w)
    assert torch.equal(out[0], expected)


def test_centre_crop_keeps_the_middle_of_the_oversized_output():
    """218 x 178 decodes to 224 x 192 and is cropped by 3 rows and 7 columns on each side."""
    dec = ConvDecoder(2, [4, 8, 8, 8], (1, 218, 178), n_params=1, kernel=4)
    assert dec.out_size == (224, 192)
    full = {}
    hook = dec.deconv.register_forward_hook(lambda m, i, o: full.setdefault("x", o))
    out = dec(torch.randn(1, 2)).reshape(218, 178)
    hook.remove()
    torch.testing.assert_close(out, full["x"][0, 0, 3:221, 7:185])


def test_gradients_reach_the_encoder(one_thread):
    shape = (3, 16, 16)
    model = VAE.from_config(_model_cfg(likelihood="discretized-logistic", components=2, conv_norm="group"),
                            768, shape)
    x = torch.randint(0, 256, (4, 768)).float() / 255
    (-model.elbo(x).bound.mean()).backward()
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for name, p in model.decoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("norm", ["none", "group"])
def test_a_datapoints_bound_at_evaluation_does_not_depend_on_its_batch(norm, one_thread):
    torch.manual_seed(0)
    shape = (3, 16, 16)
    model = VAE.from_config(_model_cfg(conv_norm=norm, likelihood="discretized-logistic"), 768, shape).eval()
    x = torch.randint(0, 256, (9, 768)).float() / 255

    def deterministic_bound(xb):  # log p(x | z = mu) - KL: the bound's noise-free part
        mu, log_var = model.encoder_params(xb)
        return model.log_p_x_given_z(xb, mu.unsqueeze(0))[0] - model.elbo(xb).kl

    with torch.no_grad():
        alone = torch.cat([deterministic_bound(x[i:i + 1]) for i in range(9)])
        together = deterministic_bound(x)
        others = deterministic_bound(torch.cat([x[:1], torch.rand(20, 768)]))[0]
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(others, alone[0], rtol=1e-5, atol=1e-3)


def _conv_digits(**train):
    return tiny_config(model={"encoder_network": "conv", "decoder_network": "conv", "channels": [16, 32],
                              "kernel_size": 3, "latent_dim": 4},
                       train={"threads": 1, **train})


def test_a_few_hundred_steps_raise_the_test_bound_clearly(tmp_path):
    trainer = Trainer.new(_conv_digits(epochs=12), tmp_path / "run")
    before = dataset_bound(trainer.model, trainer.splits["test"])["bound"]
    history = trainer.fit()
    after = history[-1][M.TEST_BOUND]
    assert trainer.step == 12 * math.ceil(len(trainer.data.train) / 64) > 250
    assert after > before + 10, (before, after)  # nats per datapoint (64 values)
    assert history[-1][M.TEST_BOUND] > history[2][M.TEST_BOUND]


def test_interrupted_then_resumed_conv_run_equals_uninterrupted(tmp_path):
    full = Trainer.new(_conv_digits(epochs=2), tmp_path / "full")
    full.fit()
    Trainer.new(_conv_digits(epochs=1), tmp_path / "part").fit()
    resumed = Trainer.resume(tmp_path / "part", overrides=_conv_digits(epochs=2), given=["train.epochs"])
    resumed.fit()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in h]
    assert strip(full.history) == strip(resumed.history)


def _rgb_uint8(n, h, w, seed=0):
    """Smooth random colour images (blobs), uint8 [N, H, W, 3]: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.15, 0.3) * h
        inside = ((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2
        colour = rng.integers(0, 256, 3)
        out[i] = np.where(inside[..., None], colour, 255 - colour // 2)
    return out


def test_conv_celeba64_preset_on_generated_64x64_rgb(tmp_path):
    """The preset's network and likelihood on 64x64 colour data (array: instead of celeba, whose
    loader is separate); bits/dim from `aevb evaluate` are the log-mass / (D ln 2)."""
    x = _rgb_uint8(40, 64, 64)
    np.savez(tmp_path / "faces.npz", x_train=x[:32], x_test=x[32:])
    cfg = apply_preset(RunConfig(), "conv-celeba64")
    cfg = merge(cfg, {"data": {"dataset": f"array:{tmp_path / 'faces.npz'}", "image_size": None, "crop": None},
                      "train": {"epochs": 2, "batch_size": 16, "threads": 1, "progress": False,
                                "tensorboard": False}})
    trainer = Trainer.new(cfg, tmp_path / "run")
    assert trainer.data.image_shape == (3, 64, 64)
    history = trainer.fit()
    assert history[-1][M.TEST_BOUND] > history[0][M.TEST_BOUND]
    out = evaluate_run(tmp_path / "run", k=3)
    d = 3 * 64 * 64
    assert out["bits_per_dim"]["elbo"] == pytest.approx(-out["elbo"]["mean"] / (d * math.log(2)), rel=1e-12)
    assert out["bits_per_dim"]["lk"] > 0 and "exactly" in out["bits_per_dim_convention"]  # a mass: no offset
    # pictures come from the discretized logistic: means in [0, 1], samples on the 256 levels
    model = trainer.model.eval()
    draws = model.sample(4, mean=False)
    assert torch.equal(torch.round(draws * 255) / 255, draws)
    means = model.sample(4)
    assert means.min() >= 0 and means.max() <= 1


def test_conv_rgb32_preset_on_a_folder_of_class_subfolders(tmp_path):
    from PIL import Image

    x = _rgb_uint8(24, 40, 36, seed=1)  # resized to 32 x 32 by the preset
    for i, img in enumerate(x):
        split = "train" if i < 18 else "test"
        folder = tmp_path / "pics" / split / ("cat" if i % 2 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i}.png")
    cfg = merge(apply_preset(RunConfig(), "conv-rgb32"),
                {"data": {"dataset": f"folder:{tmp_path / 'pics'}"},
                 "train": {"epochs": 1, "batch_size": 6, "threads": 1, "progress": False, "tensorboard": False}})
    trainer = Trainer.new(cfg, tmp_path / "run")
    trainer.fit()
    data = trainer.data
    assert data.image_shape == (3, 32, 32) and len(data.train) == 18 and len(data.test) == 6
    assert data.train.y.tolist().count(1) == 9  # labels from the class folders
    assert trainer.cfg.model.likelihood == "discretized-logistic" and trainer.model.likelihood.n_params == 9
    assert (tmp_path / "run" / "images" / "samples_epoch001.png").is_file()


# ------------------------------------------------------------------ bad input
def _npz(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return f"array:{path}"


BAD = [
    # (extra arguments, a piece of the one-line message)
    (["--network", "conv", "--channels", "8", "16", "32", "64"], "at most 3 fit; give at most 3 channel counts"),
    (["--network", "conv", "--channels", "0", "16"], "model.channels = [0, 16] (from option --channels) is not valid: must be a list of at least one positive"),
    (["--network", "conv", "--channels", "-8"], "model.channels = [-8]"),
    (["--network", "conv", "--kernel-size", "1"], "model.kernel_size = 1 (from option --kernel-size) is out of range: must be an integer from 2 to 15"),
    (["--encoder-network", "conv", "--channels", "8", "16", "32", "64"], "conv network on digits: 4 stride-2"),
    (["--likelihood", "discretized-logistic"], "not 8-bit data on 256 levels (it has levels=17"),
    (["--likelihood", "bernoulli", "--components", "3"], "mixture components apply to --likelihood discretized-logistic only"),
    (["--likelihood", "discretized-logistic", "--components", "0"], "model.components = 0 (from option --components) is out of range"),
    (["EMPTYCHANNELS"], "model.channels = [] (from"),
    (["FLAT", "--network", "conv"], "needs the data's image shape (C, H, W)"),
    (["GREYFLOAT", "--likelihood", "discretized-logistic"], "not 8-bit data on 256 levels (it has levels=None"),
    (["BINMNIST", "--likelihood", "discretized-logistic", "--binarize", "dynamic"], "binarized dynamically"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_conv_and_likelihood_input_is_one_clear_line_and_writes_nothing(tmp_path, capsys, args, message):
    specs = {
        "FLAT": _npz(tmp_path, "flat.npz", x_train=np.random.rand(20, 30).astype(np.float32),
                     x_test=np.random.rand(5, 30).astype(np.float32)),
        "GREYFLOAT": _npz(tmp_path, "grey.npz", x_train=np.random.rand(20, 8, 8).astype(np.float32),
                          x_test=np.random.rand(5, 8, 8).astype(np.float32)),
        "BINMNIST": _npz(tmp_path, "u8.npz", x_train=np.random.randint(0, 256, (20, 8, 8), dtype=np.uint8),
                         x_test=np.random.randint(0, 256, (5, 8, 8), dtype=np.uint8)),
    }
    if args[0] in specs:
        args = ["--dataset", specs[args[0]]] + args[1:]
    if args[0] == "EMPTYCHANNELS":  # argparse needs one value after --channels; a config file can hold []
        (tmp_path / "c.yaml").write_text("model:\n  encoder_network: conv\n  channels: []\n")
        args = ["--config", str(tmp_path / "c.yaml")]
    out = tmp_path / "run"
    assert main(["train", *args, "--epochs", "1", "--threads", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_check_fits_names_the_fix():
    with pytest.raises(ConfigError, match=r"at most 2 fit; give at most 2 channel counts \(e.g. --channels 1 2\)"):
        check_fits((1, 4, 7), [1, 2, 3], 3)
    assert check_fits((3, 218, 178), [32, 64, 128, 256], 4) == (3, 218, 178)
    with pytest.raises(ConfigError, match="use --network mlp"):
        ConvEncoder(None, [4], 2)


def test_bf16_training_precision_keeps_the_bound_in_float32(one_thread):
    from aevb.devices import precision_context

    shape = (3, 16, 16)
    model = VAE.from_config(_model_cfg(likelihood="discretized-logistic"), 768, shape)
    x = torch.randint(0, 256, (8, 768)).float() / 255
    torch.manual_seed(3)
    exact = model.elbo(x)
    torch.manual_seed(3)
    with precision_context(torch.device("cpu"), "bf16"):
        mu, _ = model.encoder_params(x)
        half = model.elbo(x)
        params = model.decoder_params(torch.randn(2, 8, 3))
    assert mu.dtype == half.bound.dtype == params.dtype == torch.float32
    # the networks ran in bfloat16 (different numbers), the bound is still close to float32's
    assert not torch.equal(half.bound, exact.bound)
    torch.testing.assert_close(half.bound, exact.bound, rtol=0.02, atol=0)
    with pytest.raises(ConfigError, match=r"train.precision = 'fp16' .* must be one of fp32, bf16"):
        from aevb.config import validate
        validate(merge(RunConfig(), {"train": {"precision": "fp16"}}))


def test_conv_discretized_logistic_learns_frey_faces(tmp_path, shared_datasets):
    """A few hundred steps on a real 8-bit data set (Frey Face, 28x20 grey) lower the test
    bits/dim clearly; 8 bits/dim is a uniform distribution over the 256 levels."""
    cfg = tiny_config(data={"dataset": "frey-face", "data_dir": str(shared_datasets / "frey_face")},
                      model={"encoder_network": "conv", "decoder_network": "conv", "channels": [16, 32],
                             "kernel_size": 4, "latent_dim": 8, "likelihood": "discretized-logistic",
                             "activation": "leaky-relu"},
                      train={"epochs": 10, "batch_size": 64, "threads": 1, "images_every": 0})
    trainer = Trainer.new(cfg, tmp_path / "run")
    d = 28 * 20
    bpd = lambda bound: -bound / (d * math.log(2))
    before = bpd(dataset_bound(trainer.model, trainer.splits["test"])["bound"])
    history = trainer.fit()
    after = bpd(history[-1][M.TEST_BOUND])
    assert trainer.step >= 250
    assert before > 8 and after < 7.0 and before - after > 2, (before, after)  # measured: 9.07 -> 6.34


def test_network_sets_both_sides_and_the_specific_options_win():
    from aevb.cli import build_parser
    from aevb.commands.train import config_from_args

    def cfg(*argv):
        return config_from_args(build_parser().parse_args(["train", *argv]))

    c, given = cfg("--network", "conv")
    assert (c.model.encoder_network, c.model.decoder_network) == ("conv", "conv")
    assert {"model.encoder_network", "model.decoder_network"} <= set(given)
    c, _ = cfg("--network", "conv", "--decoder-network", "mlp", "--channels", "8", "16", "--components", "2")
    assert (c.model.encoder_network, c.model.decoder_network) == ("conv", "mlp")
    assert c.model.channels == [8, 16] and c.model.components == 2
    c, _ = cfg()
    assert (c.model.encoder_network, c.model.decoder_network) == ("mlp", "mlp")


def test_conv_encoder_with_mlp_decoder_and_the_reverse(one_thread):
    shape = (1, 28, 20)
    for enc, dec in (("conv", "mlp"), ("mlp", "conv")):
        model = VAE.from_config(_model_cfg(encoder_network=enc, decoder_network=dec, encoder_hidden=[16]),
                                560, shape)
        assert type(model.encoder).__name__ == ("ConvEncoder" if enc == "conv" else "GaussianEncoder")
        assert type(model.decoder).__name__ == ("ConvDecoder" if dec == "conv" else "MLPDecoder")
        assert model.decoder_params(torch.randn(3, 2, 3)).shape == (3, 2, 2 * 560)
        assert model.elbo(torch.rand(4, 560)).bound.shape == (4,)
