"""Training that is stable by construction: centred encoder inputs, a decoder that starts at the
data's mean, fan-in-scaled learning rates, non-finite steps left out, sizes chosen from the data,
and runs saved before these existed resuming exactly as they started."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from aevb.cli import main
from aevb.config import RunConfig, merge, resolve
from aevb.config.rules import sizes_chosen
from aevb.config.settings import AS_BEFORE, get_setting
from aevb.distributions import Bernoulli, DiscretizedLogistic, Gaussian, GaussianFixed
from aevb.errors import TrainingDiverged
from aevb.model import VAE
from aevb.optimizers import build_optimizer, fan_in_factor
from aevb.presets import CURRENT_DEFAULTS, MEASURED_WITH, PRESETS
from aevb.training import Trainer
from aevb.training import loop as training_loop
from aevb.training.objective import step_is_finite

from conftest import tiny_config
from aevb import metrics as M


# ------------------------------------------------------------------ learning rates by fan-in
def test_fan_in_scaled_learning_rates():
    """Only weights of fan-in above the scale learn slower, by sqrt(scale / fan-in); biases and
    every layer of an MNIST-sized model keep the base rate, in one parameter group as before."""
    cfg = merge(RunConfig(), {"model": {"encoder_hidden": [64], "latent_dim": 8, "likelihood": "bernoulli"}}).model
    big = VAE.from_config(cfg, 3 * 218 * 178)
    opt = build_optimizer(big, merge(RunConfig(), {}).optim)
    first = big.encoder.net[0]
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lrs[id(first.weight)] == pytest.approx(1e-3 * math.sqrt(1024 / (3 * 218 * 178)), rel=1e-12)
    assert lrs[id(first.bias)] == 1e-3
    assert lrs[id(big.decoder.net[-1].weight)] == 1e-3  # fan-in 64: as it was
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(big.parameters()))
    mnist = VAE.from_config(merge(RunConfig(), {"model": {"likelihood": "bernoulli"}}).model, 784)
    assert len(build_optimizer(mnist, merge(RunConfig(), {}).optim).param_groups) == 1
    off = merge(RunConfig(), {"optim": {"fan_in_scale": 0}}).optim
    assert len(build_optimizer(big, off).param_groups) == 1
    conv = nn.Conv2d(256, 8, 4)
    assert fan_in_factor(conv.weight, conv, 1024) == pytest.approx(math.sqrt(1024 / (256 * 16)))


# ------------------------------------------------------------------ the start from the data
def _moments(seed=0, n=500, d=12):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g) ** 2
    return x, x.mean(0), x.var(0, unbiased=False)


@pytest.mark.parametrize("rule,unit,scaled", [(None, 1.0, "std"), ("shrink", 1.0, "std"), ("std", "std", "std"),
                                              ("none", 1.0, 1.0)])
def test_encoder_sees_centred_inputs_and_they_are_saved_with_the_weights(rule, unit, scaled):
    """x - m, divided by s (std), by s only where s > 1 (shrink, an MLP's default) or not at all,
    for values of spread s < 1 (``unit``) and the same values times 1000 (``scaled``)."""
    x, mean, var = _moments()
    model_cfg = {"encoder_hidden": [16], "latent_dim": 3, "likelihood": "bernoulli", "input_scale": rule}
    cfg = merge(RunConfig(), {"model": model_cfg}).model
    assert var.mean().sqrt() < 1
    for factor, want in ((1.0, unit), (1000.0, scaled)):
        model = VAE.from_config(cfg, 12)
        model.fit_to_data(mean * factor, var * factor ** 2)
        mu, log_var = model.encoder_params(x * factor)
        divisor = (var * factor ** 2).mean().sqrt() if want == "std" else want
        want_mu, want_lv = model.encoder((x * factor - mean * factor) * (1.0 / divisor))
        assert torch.allclose(mu, want_mu, rtol=1e-5, atol=1e-5) and \
            torch.allclose(log_var, want_lv, rtol=1e-5, atol=1e-5), (factor, rule)
    again = VAE.from_config(cfg, 12)
    again.load_state_dict(model.state_dict())
    assert torch.equal(again.encode(x * factor).loc, mu)
    # runs saved before centring existed have no such buffers and load as they were
    old = VAE.from_config(merge(RunConfig(), {"model": {**cfg.__dict__, "center_inputs": False}}).model, 12)
    assert not any(k.startswith("input_") for k in old.state_dict())


@pytest.mark.parametrize("likelihood", [Bernoulli(), Gaussian(), Gaussian(mean_activation="sigmoid", min_log_var=-6.0),
                                        GaussianFixed(), DiscretizedLogistic(1), DiscretizedLogistic(3)])
def test_output_bias_gives_the_data_mean_and_variance(likelihood):
    """With the decoder's other weights at zero, p(x|z) has the data's mean per value (and their
    variance, for likelihoods with a learned scale)."""
    _, mean, var = _moments()
    mean = mean.clamp(0.05, 0.95)
    if isinstance(likelihood, DiscretizedLogistic):  # narrow enough that [0, 1]'s edges do not cut the tails
        mean, var = 0.3 + 0.4 * mean, var * 0.05
    params = likelihood.output_bias(mean, var)
    assert params.shape == (likelihood.n_params * 12,)
    got = likelihood.mean(params.unsqueeze(0))[0]
    tol = 2e-3 if isinstance(likelihood, DiscretizedLogistic) else 1e-5
    assert torch.allclose(got, mean, atol=tol), (got - mean).abs().max()
    if isinstance(likelihood, Gaussian):
        assert torch.allclose(likelihood.split(params)[1].exp(), var.clamp(min=1e-2 * var.mean()), rtol=1e-4)
    if isinstance(likelihood, DiscretizedLogistic):
        _, _, log_scale = likelihood.split(params.unsqueeze(0))
        logistic_var = (log_scale.exp() * math.pi) ** 2 / 3
        assert torch.allclose(logistic_var[0, 0], var.clamp(min=1e-2 * var.mean()), rtol=1e-4)


def test_a_new_run_starts_at_the_data_mean(tmp_path):
    """Step 0's bound is that of the mean image (the decoder's bias), not of grey 0.5 everywhere:
    on digits about 28 nats instead of 44."""
    trainer = Trainer.new(tiny_config(), tmp_path / "run")
    mean, _ = trainer.data.split("train").moments()
    with torch.no_grad():
        out = trainer.model.decoder_params(torch.zeros(1, trainer.model.latent_dim))[0]
    assert torch.allclose(torch.sigmoid(trainer.model.decoder.net[-1].bias), mean.clamp(1e-3, 1 - 1e-3), atol=1e-6)
    assert out.shape == mean.shape
    old = Trainer.new(tiny_config(model={"output_bias_from_data": False, "center_inputs": False}), tmp_path / "old")
    x = trainer.splits["test"].rows()
    with torch.no_grad():
        start = float(trainer.model.elbo(x).bound.mean())
        plain = float(old.model.elbo(x).bound.mean())
    assert -30 < start < -26 and plain < -40, (start, plain)


def test_moments_of_a_streamed_split_equal_those_in_memory(tmp_path):
    from aevb.data.base import Split
    x = torch.randint(0, 256, (301, 7), dtype=torch.uint8)
    path = tmp_path / "x.u8"
    x.numpy().tofile(path)
    mapped = Split(np.memmap(path, dtype=np.uint8, mode="r", shape=(301, 7)), scale=255)
    assert mapped.streamed
    memory = Split(x.clone(), scale=255)
    for a, b in zip(mapped.moments(max_rows=100), memory.moments(max_rows=100)):
        assert torch.equal(a, b)
    mean, var = memory.moments()
    ref = x.double() / 255
    assert torch.allclose(mean.double(), ref.mean(0), atol=1e-6)
    assert torch.allclose(var.double(), ref.var(0, unbiased=False), atol=1e-6)


# ------------------------------------------------------------------ non-finite steps
def _poison_batches(monkeypatch, bad_steps):
    """Make the training bound NaN at the given (0-based) global steps."""
    real = training_loop.objective_terms
    count = {"step": 0}

    def terms(model, x, obj):
        out = real(model, x, obj)
        if count["step"] in bad_steps:
            out.bound = out.bound * float("nan")
        count["step"] += 1
        return out

    monkeypatch.setattr(training_loop, "objective_terms", terms)


def test_a_non_finite_step_is_left_out_and_counted(tmp_path, monkeypatch):
    """The weights after a skipped step are those before it, and the run goes on."""
    clean = Trainer.new(tiny_config(train={"epochs": 1}), tmp_path / "clean")
    clean.fit()
    _poison_batches(monkeypatch, {3})
    before, after = {}, {}
    real_step = Trainer._apply_step
    weights = lambda m: {k: v.clone() for k, v in m.state_dict().items()}

    def spy(self):
        before[self.step] = weights(self.model)
        real_step(self)
        after[self.step] = weights(self.model)

    monkeypatch.setattr(Trainer, "_apply_step", spy)
    trainer = Trainer.new(tiny_config(train={"epochs": 1}), tmp_path / "run")
    trainer.fit()
    assert 3 not in before and {2, 4} <= set(before)  # step 3 was never applied ...
    for k, v in before[4].items():  # ... so step 4 starts from the weights step 2 left
        assert torch.equal(v, after[2][k]), k
    assert not torch.equal(after[2]["decoder.net.0.weight"], before[2]["decoder.net.0.weight"])
    rec = trainer.history[0]
    assert rec[M.SKIPPED_STEPS] == 1 and trainer.skipped_steps == 1
    assert math.isfinite(rec[M.TRAIN_BOUND]) and math.isfinite(rec[M.TEST_BOUND])
    assert clean.history[0][M.SKIPPED_STEPS] == 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state[M.SKIPPED_STEPS] == 1


@pytest.mark.parametrize("clip", [None, 1.0])
def test_a_finite_loss_with_one_non_finite_gradient_is_not_a_step(clip):
    """The check reads every gradient, not the loss alone; parameters without one are passed over."""
    a, b, frozen = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(1))
    loss = torch.tensor(1.5)
    a.grad, b.grad = torch.full((3,), 0.5), torch.ones(2, 2)
    assert step_is_finite([a, b, frozen], loss, clip)
    for bad in (math.inf, -math.inf, math.nan):
        b.grad = torch.ones(2, 2)
        b.grad[1, 0] = bad
        assert not step_is_finite([a, b, frozen], loss, clip)
    b.grad = torch.ones(2, 2)
    assert not step_is_finite([a, b, frozen], torch.tensor(math.nan), clip)
    assert not step_is_finite([a, b, frozen], torch.tensor(-math.inf), clip)


def test_a_step_whose_gradient_alone_is_not_finite_is_left_out(tmp_path, monkeypatch):
    """A gradient that overflows while the loss stays finite (here one weight's, at step 2) is
    skipped and counted like a non-finite loss, and the weights stay as the step before left them."""
    real_step = Trainer._apply_step
    applied = []

    def spy(self):
        applied.append(self.step)
        real_step(self)

    monkeypatch.setattr(Trainer, "_apply_step", spy)
    trainer = Trainer.new(tiny_config(train={"epochs": 1}), tmp_path / "run")
    weight = trainer.model.decoder.net[0].weight
    calls = {"n": 0}

    def overflow(g):
        calls["n"] += 1
        return g * math.inf if calls["n"] == 3 else g

    weight.register_hook(overflow)
    trainer.fit()
    rec = trainer.history[0]
    assert 2 not in applied and {1, 3} <= set(applied)
    assert rec[M.SKIPPED_STEPS] == 1 and trainer.skipped_steps == 1
    assert math.isfinite(rec[M.TRAIN_BOUND]) and torch.isfinite(weight).all()


def test_too_many_non_finite_steps_stop_the_run_clearly(tmp_path, monkeypatch):
    _poison_batches(monkeypatch, set(range(0, 1000)))
    trainer = Trainer.new(tiny_config(train={"epochs": 2}, optim={"max_skipped_steps": 3}), tmp_path / "run")
    with pytest.raises(TrainingDiverged, match="4 training steps had a NaN or infinite loss or gradient.*"
                                               "more than the 3 that --max-skipped-steps allows"):
        trainer.fit()


# ------------------------------------------------------------------ sizes from the data
@pytest.mark.parametrize("shape, networks, likelihood, want", [
    ((1, 8, 8), "mlp", "bernoulli", dict(encoder_hidden=[400], latent_dim=20, batch_size=128, components=1)),
    ((1, 28, 28), "mlp", "bernoulli", dict(encoder_hidden=[400], latent_dim=20, batch_size=128)),
    ((3, 32, 32), "mlp", "gaussian", dict(encoder_hidden=[1024, 256], latent_dim=32, batch_size=128)),
    ((3, 218, 178), "mlp", "bernoulli", dict(encoder_hidden=[512, 128], latent_dim=32, batch_size=64)),
    ((3, 32, 32), "conv", "discretized-logistic", dict(channels=[64, 128, 256], latent_dim=128, batch_size=64,
                                                       components=3)),
    ((3, 64, 64), "conv", "discretized-logistic", dict(channels=[32, 64, 128, 256], latent_dim=128)),
    ((1, 28, 28), "conv", "bernoulli", dict(channels=[64, 128, 256], latent_dim=20, batch_size=128, components=1)),
    ((3, 218, 178), "conv", "bernoulli", dict(channels=[32, 64, 128, 256, 256, 256], batch_size=64)),
])
def test_sizes_follow_the_data(shape, networks, likelihood, want):
    cfg = merge(RunConfig(), {"model": {"encoder_network": networks, "decoder_network": networks,
                                        "likelihood": likelihood}})
    out = resolve(cfg, "unit", "folder:x", shape)
    for name, value in want.items():
        section = "train" if name == "batch_size" else "model"
        assert get_setting(out, f"{section}.{name}") == value, name
    given = merge(cfg, {"model": {"latent_dim": 5}, "train": {"batch_size": 7}})
    kept = resolve(given, "unit", "folder:x", shape)
    assert kept.model.latent_dim == 5 and kept.train.batch_size == 7
    assert "--latent-dim" not in sizes_chosen(given, kept) and "--batch-size" not in sizes_chosen(given, kept)


def test_the_first_line_names_the_sizes_and_config_json_keeps_them(tmp_path, capsys):
    assert main(["train", "--epochs", "1", "--no-progress", "--no-tensorboard", "--images-every", "0",
                 "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "sizes from the data: --hidden 400 --latent-dim 20 --batch-size 64" in err  # 1,438 training digits
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["encoder_hidden"] == [400] and saved["model"]["latent_dim"] == 20
    assert saved["train"]["batch_size"] == 64 and saved["model"]["components"] == 1
    assert saved["model"]["input_scale"] == "shrink"


@pytest.mark.parametrize("n_train,dim,conv,batch", [
    (None, 64, False, 128), (50_000, 784, False, 128), (2_048, 784, False, 128), (2_047, 784, False, 64),
    (1_438, 64, False, 64), (1_024, 64, False, 64), (1_023, 64, False, 32), (10, 64, False, 32),
    (4_560, 3 * 64 * 64, True, 64), (1_000, 3 * 64 * 64, True, 32)])
def test_a_small_training_set_gets_smaller_batches(n_train, dim, conv, batch):
    """The batch is halved, down to 32, while an epoch would have fewer than 16 steps: 1,438
    digits train with 64 (22 steps an epoch); a size the data do not give is the largest batch."""
    from aevb.sizing import batch_size

    assert batch_size(dim, conv, n_train) == batch


@pytest.mark.parametrize("network,shape,rule", [("mlp", (1, 28, 28), "shrink"), ("mlp", (3, 64, 64), "std"),
                                               ("conv", (1, 28, 28), "std")])
def test_the_input_scale_is_chosen_per_network_and_a_given_one_is_kept(network, shape, rule):
    cfg = merge(RunConfig(), {"model": {"encoder_network": network, "decoder_network": network}})
    assert resolve(cfg, "unit", "mnist", shape, 50_000).model.input_scale == rule
    given = merge(cfg, {"model": {"input_scale": "none"}})
    assert resolve(given, "unit", "mnist", shape, 50_000).model.input_scale == "none"


def test_presets_keep_the_settings_they_were_measured_with():
    for name, preset in PRESETS.items():
        for section, values in MEASURED_WITH.items():
            for key, value in values.items():
                # presets measured with today's defaults take them; the others keep the old ones
                assert (key in preset.get(section, {})) == (name not in CURRENT_DEFAULTS) or \
                    key in ("latent_dim", "encoder_hidden", "batch_size"), (name, key)
    assert "center_inputs" not in PRESETS["vamp-mnist"]["model"]
    assert PRESETS["digits"]["model"]["latent_dim"] == 8  # a preset's own value wins
    assert PRESETS["celeba-mlp"]["optim"]["warmup_steps"] == 50
    assert PRESETS["pytorch-example"]["model"]["center_inputs"] is False


# ------------------------------------------------------------------ runs saved before
def test_a_run_saved_before_the_stabilisers_resumes_exactly_as_it_started(tmp_path):
    """A config.json without the new settings is read with their old values (AS_BEFORE), so the
    resumed run equals one trained in one go with those values."""
    before = {"model": {"center_inputs": False, "output_bias_from_data": False},
              "optim": {"fan_in_scale": 0, "max_skipped_steps": 0}}
    full = Trainer.new(tiny_config(train={"epochs": 2}, **before), tmp_path / "full")
    full.fit()
    Trainer.new(tiny_config(train={"epochs": 1}, **before), tmp_path / "old").fit()
    path = tmp_path / "old" / "config.json"
    saved = json.loads(path.read_text())
    for key in AS_BEFORE:
        section, name = key.split(".")
        del saved[section][name]
    path.write_text(json.dumps(saved))
    resumed = Trainer.resume(tmp_path / "old", overrides=tiny_config(train={"epochs": 2}), given=["train.epochs"])
    assert resumed.cfg.model.center_inputs is False and resumed.cfg.optim.fan_in_scale == 0
    resumed.fit()
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in h]
    assert strip(full.history) == strip(resumed.history)


def test_a_centred_run_saved_before_the_input_scale_setting_reads_as_dividing_by_the_spread(tmp_path):
    """Centred runs written before ``model.input_scale`` divided by s: their config reads "std",
    and a resume keeps the saved factor instead of choosing again."""
    Trainer.new(tiny_config(train={"epochs": 1}), tmp_path / "old").fit()
    path = tmp_path / "old" / "config.json"
    saved = json.loads(path.read_text())
    assert saved["model"]["input_scale"] == "shrink"  # a 64-value MLP's choice today
    del saved["model"]["input_scale"]
    path.write_text(json.dumps(saved))
    assert RunConfig.from_dict(saved).model.input_scale == "std"
    first = torch.load(tmp_path / "old" / "checkpoints" / "last.pt", weights_only=True)["model"]["input_scale"]
    resumed = Trainer.resume(tmp_path / "old", overrides=tiny_config(train={"epochs": 2}), given=["train.epochs"])
    assert resumed.cfg.model.input_scale == "std"
    resumed.fit()
    assert torch.equal(resumed.model.input_scale, first)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("args, fragment", [
    (["--fan-in-scale", "-1"], "optim.fan_in_scale = -1"),
    (["--max-skipped-steps", "-2"], "optim.max_skipped_steps = -2"),
    (["--fan-in-scale", "1e3"], "invalid int value"),
    (["--input-scale", "unit"], "invalid choice: 'unit'"),
])
def test_bad_stability_options_are_refused_before_anything_is_written(tmp_path, capsys, args, fragment):
    try:
        code = main(["train", "--out", str(tmp_path / "run"), *args])
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    assert code != 0
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_bad_stability_settings_in_a_config_file_are_refused(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"model": {"center_inputs": "yes"}}))
    code = main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    assert code != 0
    err = capsys.readouterr().err
    assert "model.center_inputs = 'yes'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
