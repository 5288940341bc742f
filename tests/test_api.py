"""The library as a PyTorch user programs it: the model is an nn.Module (model(x).loss,
encode / decode as distributions), built from the user's own modules, trained by aevb.fit on a
tensor, a Dataset or a DataLoader, saved and loaded bit-identically, and old checkpoints load."""
import json
import math

import pytest
import torch
from torch import nn

import aevb
from aevb.errors import CheckpointError, ConfigError
from aevb.latent import assemble
from aevb.model import VAE
from aevb.pretrained import upgrade_checkpoint
from aevb.networks import GaussianEncoder, MLPDecoder
from aevb.stacked import stacked_networks
from aevb import metrics as M


class Encoder(nn.Module):
    """A user's encoder as PyTorch examples write it: images in, one tensor [B, 2J] out."""

    def __init__(self, J=3, width=None):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.Tanh(), nn.Linear(16, width or 2 * J))

    def forward(self, x):
        return self.net(x)


class PairEncoder(Encoder):
    def forward(self, x):
        return self.net(x).chunk(2, -1)


class Decoder(nn.Module):
    """z [N, J] -> logits in the data's shape [N, 1, 6, 6]."""

    def __init__(self, J=3, out=36):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(J, 16), nn.Tanh(), nn.Linear(16, out))

    def forward(self, z):
        out = self.net(z)
        return out.view(-1, 1, 6, 6) if out.shape[-1] == 36 else out


def binary_images(n=300, seed=0):
    """[n, 6, 6] uint8 images of two kinds (a bar on the left or on the top), with noise."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 6, 6, generator=g) < 0.1)
    kind = torch.rand(n, generator=g) < 0.5
    x[kind, :, :2] = True
    x[~kind, :2, :] = True
    return x.to(torch.uint8)


def custom_model(seed=0, encoder=Encoder):
    torch.manual_seed(seed)
    return VAE(encoder(), Decoder(), "bernoulli", 3, data_shape=(1, 6, 6))


def test_model_call_gives_the_configured_bound_and_a_loss_to_minimise():
    model = custom_model()
    x = binary_images(20).float()
    torch.manual_seed(5)
    terms = model(x)
    torch.manual_seed(5)
    direct = model.elbo(x.reshape(20, -1))
    assert torch.equal(terms.bound, direct.bound)
    assert terms.loss.shape == () and float(terms.loss.detach()) == pytest.approx(-float(direct.bound.mean().detach()))
    terms.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # the IWAE objective: L_k from k samples, what model.iwae gives with the same noise
    model.objective.objective, model.objective.k = "iwae", 7
    torch.manual_seed(6)
    lk = model(x).bound
    torch.manual_seed(6)
    assert torch.equal(lk, model.iwae(x.reshape(20, -1), 7).bound)


def test_encode_is_the_gaussian_posterior_as_a_torch_distribution():
    model = custom_model()
    x = binary_images(8).float()
    q = model.encode(x)
    mu, log_var = model.encoder_params(x.reshape(8, -1))
    ref = torch.distributions.Independent(torch.distributions.Normal(mu, torch.exp(0.5 * log_var)), 1)
    z = torch.randn(5, 8, 3)
    torch.testing.assert_close(q.log_prob(z), ref.log_prob(z))
    torch.testing.assert_close(q.mean, mu)
    torch.testing.assert_close(q.stddev, torch.exp(0.5 * log_var))
    torch.testing.assert_close(q.entropy(), ref.entropy())
    torch.manual_seed(0)
    draws = q.rsample((20_000,))
    assert draws.shape == (20_000, 8, 3)
    torch.testing.assert_close(draws.mean(0), mu, atol=0.05, rtol=0)
    draws, log_q = q.rsample_and_log_prob((4,))
    torch.testing.assert_close(log_q, ref.log_prob(draws))


def test_decode_gives_p_x_given_z_with_its_mean_in_data_space():
    model = custom_model()
    z = torch.randn(10, 3)
    p = model.decode(z)
    logits = model.decoder(z).reshape(10, -1)
    torch.testing.assert_close(p.params, logits)
    torch.testing.assert_close(p.mean, torch.sigmoid(logits))  # probabilities, not logits
    x = binary_images(10).float().reshape(10, -1)
    ref = torch.distributions.Independent(torch.distributions.Bernoulli(logits=logits), 1)
    torch.testing.assert_close(p.log_prob(x), ref.log_prob(x))


def test_a_stacked_posterior_scores_its_own_draws():
    """log_prob of given latents equals the log q the draw itself carried (both inferences)."""
    for inference in ("bottom-up", "top-down"):
        torch.manual_seed(1)
        q_nets, p_nets = stacked_networks([3, 2], [8], "tanh")
        model = VAE(GaussianEncoder(36, [16], 3), MLPDecoder(3, [16], 36, 1), "bernoulli", data_dim=36,
                    latents=assemble([3, 2], q_nets, p_nets, inference=inference)).double()
        q = model.encode(binary_images(4).double().reshape(4, -1))
        z, log_q = q.rsample_and_log_prob((6,))
        torch.testing.assert_close(q.log_prob(z), log_q)
        with pytest.raises(ValueError, match="no closed-form mean"):
            q.mean


@pytest.mark.parametrize("encoder, decoder, message", [
    (lambda: Encoder(width=5), lambda: Decoder(), "encoder's output is 5 wide; with latent_dim=3 it must be one "
                                                  "tensor [B, 6]"),
    (lambda: Encoder(), lambda: Decoder(out=30), "decoder's output has 30 values per datapoint; a bernoulli "
                                                 "likelihood of data with 36 values needs 36"),
])
def test_modules_whose_outputs_do_not_fit_are_refused_in_one_line(encoder, decoder, message):
    model = VAE(encoder(), decoder(), "bernoulli", 3, data_shape=(1, 6, 6))
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        model(binary_images(4).float())


def test_bad_constructions_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="latent_dim=0"):
        VAE(Encoder(), Decoder(), "bernoulli", 0)
    with pytest.raises(ConfigError, match="likelihood='poisson'"):
        VAE(Encoder(), Decoder(), "poisson", 3)
    with pytest.raises(ConfigError, match="two torch.nn.Module"):
        VAE(lambda x: x, Decoder(), "bernoulli", 3)


def test_fit_trains_the_users_modules_on_a_tensor_a_dataset_and_a_dataloader_alike(tmp_path, one_thread):
    """The same data as a uint8 tensor, a TensorDataset of (image, label) and a DataLoader give
    the same run, value for value; the model is saved and loaded back bit-identically."""
    x = binary_images()
    labels = torch.arange(len(x)) % 2
    forms = {"tensor": x, "dataset": torch.utils.data.TensorDataset(x, labels),
             "loader": torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=64)}
    metrics = {}
    for name, data in forms.items():
        model = custom_model(seed=3, encoder=PairEncoder if name == "loader" else Encoder)
        run = aevb.fit(model, data, epochs=2, batch_size=50, seed=4, out=tmp_path / name, report=False)
        metrics[name] = [(r[M.TRAIN_BOUND], r[M.TEST_BOUND]) for r in run.metrics()]
        assert run.config.model.encoder_network == "custom"
        assert run.config.data.dataset.startswith("memory:")
    assert metrics["tensor"] == metrics["dataset"] == metrics["loader"]
    assert all(math.isfinite(v) for row in metrics["tensor"] for v in row)
    # save_pretrained / from_pretrained: bit-identical outputs
    model.eval()
    model.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["custom"] is True
    back = VAE.from_pretrained(tmp_path / "saved", encoder=PairEncoder(), decoder=Decoder())
    xb = x[:9].float()
    assert torch.equal(back.encode(xb).loc, model.encode(xb).loc)
    assert torch.equal(back.decode(model.encode(xb).loc).mean, model.decode(model.encode(xb).loc).mean)
    with pytest.raises(ConfigError, match="your own encoder and decoder"):
        VAE.from_pretrained(tmp_path / "saved")


def test_a_model_for_the_data_round_trips_through_a_run_folder_and_a_saved_folder(tmp_path, one_thread):
    x = binary_images()
    model = VAE.for_data(x, latent_dim=2, encoder_hidden=[16])
    assert model.latent_dim == 2 and model.likelihood.name == "bernoulli" and model.data_dim == 36
    run = aevb.fit(model, x, epochs=1, out=tmp_path / "run", report=False)
    model.eval()
    xb = x[:5].float().reshape(5, -1)
    from_run = VAE.from_pretrained(run.path)
    model.save_pretrained(tmp_path / "saved")
    from_dir = VAE.from_pretrained(tmp_path / "saved")
    for other in (from_run, from_dir, run.load_model()):
        assert torch.equal(other.encoder_params(xb)[0], model.encoder_params(xb)[0])
        assert torch.equal(other.decode(torch.ones(1, 2)).mean, model.decode(torch.ones(1, 2)).mean)
    with pytest.raises(ConfigError, match="run folder"):
        model.save_pretrained(run.path)
    with pytest.raises(ConfigError, match="ONNX"):
        VAE.from_pretrained(tmp_path / "encoder.onnx")
    (tmp_path / "other.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="could not be read as a safetensors file"):
        VAE.from_pretrained(tmp_path / "other.safetensors")


def test_fit_refuses_model_settings_for_a_built_model_and_a_folder_that_holds_a_run(tmp_path, one_thread):
    x = binary_images(100)
    with pytest.raises(ConfigError, match=r"aevb.fit\(latent_dim=...\): the model is already built"):
        aevb.fit(custom_model(), x, latent_dim=4)
    with pytest.raises(ConfigError, match=r"aevb.fit\(epoch=...\): unknown option"):
        aevb.fit(None, x, epoch=4)
    run = aevb.fit(None, x, epochs=1, out=tmp_path / "run", report=False)
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    with pytest.raises(Exception, match="already") as caught:
        aevb.fit(None, x, epochs=1, out=tmp_path / "run")
    assert caught.type.__module__ == "aevb.errors"
    assert {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()} == before


def test_a_checkpoint_of_the_layout_before_latent_cells_loads_with_its_optimizer_state():
    """A three-layer model's checkpoint written with the old names and the old order of
    parameters (encoder, decoder, every q network, every p network, prior) comes back equal."""
    torch.manual_seed(0)
    sizes = [4, 3, 2]
    q_nets, p_nets = stacked_networks(sizes, [8], "tanh")
    model = VAE(GaussianEncoder(36, [16], 4), MLPDecoder(4, [16], 36, 1), "bernoulli", data_dim=36,
                latents=assemble(sizes, q_nets, p_nets))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(binary_images(16).float()).loss.backward()
    opt.step()
    names = [n for n, _ in model.named_parameters()]
    old_name = {}
    for n in names:
        parts = n.split(".")
        if n.startswith("latent.cells.") and parts[3] == "q_net":
            old_name[n] = f"stack.up.{int(parts[2]) - 1}." + ".".join(parts[4:])
        elif n.startswith("latent.cells.") and parts[3] == "p_net":
            old_name[n] = f"stack.down.{parts[2]}." + ".".join(parts[4:])
        else:
            old_name[n] = n

    def rank(n):
        o = old_name[n]
        return (0 if o.startswith("encoder") else 1 if o.startswith("decoder") else
                2 if o.startswith("stack.up") else 3, names.index(n))

    old_order = sorted(names, key=rank)
    assert old_order != names  # the test would prove nothing if the orders were the same
    saved = opt.state_dict()
    old_state = {"model": {old_name[n]: model.state_dict()[n] for n in old_order},
                 "optimizer": {"state": {old_order.index(n): saved["state"][i] for i, n in enumerate(names)},
                               "param_groups": [dict(saved["param_groups"][0], params=list(range(len(names))))]}}
    fresh = VAE(GaussianEncoder(36, [16], 4), MLPDecoder(4, [16], 36, 1), "bernoulli", data_dim=36,
                latents=assemble(sizes, *stacked_networks(sizes, [8], "tanh")))
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    state = upgrade_checkpoint(old_state, fresh, fresh_opt)
    fresh.load_state_dict(state["model"])
    fresh_opt.load_state_dict(state["optimizer"])
    for (n, a), (_, b) in zip(model.named_parameters(), fresh.named_parameters()):
        assert torch.equal(a, b), n
        assert torch.equal(opt.state[a]["exp_avg"], fresh_opt.state[b]["exp_avg"]), n
    # a plain state dict with the old names loads too (e.g. an old exported file)
    again = VAE(GaussianEncoder(36, [16], 4), MLPDecoder(4, [16], 36, 1), "bernoulli", data_dim=36,
                latents=assemble(sizes, *stacked_networks(sizes, [8], "tanh")))
    again.load_state_dict(dict(old_state["model"]))
    assert torch.equal(again.cells[1].q_net.net[0].weight, model.cells[1].q_net.net[0].weight)


def test_a_run_of_the_users_modules_is_used_from_python_and_refused_by_commands_in_one_line(tmp_path, capsys,
                                                                                               one_thread):
    x = binary_images()
    model = custom_model(seed=2)
    run = aevb.fit(model, x, epochs=1, out=tmp_path / "run", report=False)
    xb = x[:6]
    model.eval()
    for opened in (run, aevb.load(run.path, encoder=Encoder(), decoder=Decoder())):
        loaded = opened.load_model()
        assert torch.equal(loaded.encode(xb.float()).loc, model.encode(xb.float()).loc)
        codes = opened.encode(xb)
        torch.testing.assert_close(torch.as_tensor(codes.mu), model.encode(xb.float()).loc.double())
        scores = opened.score(xb, k=3)
        assert len(scores) == 6
    with pytest.raises(ConfigError, match="your own encoder and decoder"):
        aevb.load(run.path).load_model()
    import numpy as np

    from aevb.cli import main

    np.save(tmp_path / "x.npy", x.numpy())
    capsys.readouterr()
    assert main(["evaluate", str(run.path), "--data", f"array:{tmp_path / 'x.npy'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "your own encoder and decoder modules" in err and len(err.splitlines()) == 1


def test_a_run_of_data_in_memory_resumes_exactly_with_the_same_data_and_refuses_other_data(tmp_path, one_thread):
    x = binary_images()
    whole = aevb.fit(None, x, epochs=3, seed=5, batch_size=40, out=tmp_path / "whole", report=False)
    part = aevb.fit(None, x, epochs=1, seed=5, batch_size=40, out=tmp_path / "part", report=False)
    with pytest.raises(Exception, match="was trained on data given in memory") as caught:
        aevb.resume(part, epochs=3)
    assert caught.type.__module__ == "aevb.errors"
    other = binary_images(seed=9)
    with pytest.raises(Exception, match="other values of the same shape"):
        aevb.resume(part, epochs=3, data=other)
    assert [r["epoch"] for r in part.metrics()] == [1]  # nothing changed by the refusals
    resumed = aevb.resume(part, epochs=3, data=x)
    drop = (M.TRAIN_TIME_S, M.EPOCH_TIME_S)
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed.metrics()] == \
        [{k: v for k, v in r.items() if k not in drop} for r in whole.metrics()]
    assert json.loads((whole.path / "run.json").read_text())["data_memory"]["shape"] == [300, 6, 6]


def test_a_run_of_the_users_modules_resumes_from_its_run(tmp_path, one_thread):
    x = binary_images()
    whole = aevb.fit(custom_model(seed=1), x, epochs=2, seed=3, out=tmp_path / "whole", report=False)
    part = aevb.fit(custom_model(seed=1), x, epochs=1, seed=3, out=tmp_path / "part", report=False)
    resumed = aevb.resume(part, epochs=2, data=x)
    assert resumed.metrics()[-1][M.TEST_BOUND] == whole.metrics()[-1][M.TEST_BOUND]
    assert resumed.encoder is not None  # still a run of the user's modules


def test_a_setting_assigned_in_python_is_named_as_such_when_refused():
    from aevb.config import apply_preset, validate

    cfg = aevb.RunConfig()
    cfg.model.latent_dim = 0
    with pytest.raises(ConfigError, match=r"model.latent_dim = 0 \(from cfg.model.latent_dim, set in Python\)"):
        validate(cfg)
    cfg = apply_preset(aevb.RunConfig(), "pytorch-example")
    cfg.optim.lr = -1.0  # the preset set it, then Python changed it
    with pytest.raises(ConfigError, match=r"optim.lr = -1.0 \(from cfg.optim.lr, set in Python\)"):
        validate(cfg)
    cfg.optim.lr = 1e-3  # the preset's own value again: the preset is named
    cfg.train.batch_size = 0
    with pytest.raises(ConfigError, match=r"train.batch_size = 0 \(from cfg.train.batch_size, set in Python\)"):
        validate(cfg)
