"""Stacked latent layers: a linear-Gaussian two-layer model whose log p(x) is known in closed form,
recovered by L_k under both inferences; L_k non-decreasing in k; exact resume; the commands."""
import json
import math

import pytest
import torch

from aevb.bounds import evaluate_bounds
from aevb.cli import main
from aevb.distributions import get_likelihood
from aevb.model import VAE
from aevb.networks import GaussianEncoder, MLPDecoder
from aevb.latent import assemble
from aevb.stacked import precision_weighted, stacked_networks
from aevb.training import Trainer

from conftest import tiny_config
from helpers import assert_non_decreasing_in_k
from aevb import metrics as M

D, J1, J2 = 4, 3, 2


def _linear_model(inference: str, seed: int = 0):
    """p(z2) = N(0, I), p(z1|z2) = N(A z2 + a, diag s1^2), p(x|z1) = N(B z1 + b, diag s0^2): every
    network linear, every variance constant (the log-variance weights are zero)."""
    torch.manual_seed(seed)
    enc = GaussianEncoder(D, [], J1)
    dec = MLPDecoder(J1, [], D, 2)
    q_nets, p_nets = stacked_networks([J1, J2], [], "tanh")
    latents = assemble([J1, J2], q_nets, p_nets, inference=inference)
    model = VAE(enc, dec, get_likelihood("gaussian"), data_dim=D, latents=latents).double()
    with torch.no_grad():
        for layer, width in ((dec.net[-1], D), (p_nets[0].net[-1], J1)):
            layer.weight[width:].zero_()  # constant log-variances
            layer.bias[width:].uniform_(-1.0, 0.0)
    return model


def _exact_log_px(model, x):
    dec, down = model.decoder.net[-1], model.cells[0].p_net.net[-1]
    B, b, lv0 = dec.weight[:D].double(), dec.bias[:D].double(), dec.bias[D:].double()
    A, a, lv1 = down.weight[:J1].double(), down.bias[:J1].double(), down.bias[J1:].double()
    cov_z1 = A @ A.T + torch.diag(torch.exp(lv1))
    cov_x = B @ cov_z1 @ B.T + torch.diag(torch.exp(lv0))
    mean_x = B @ a + b
    return torch.distributions.MultivariateNormal(mean_x, cov_x).log_prob(x)


def _fit_posterior(model, x, steps=400):
    """Train q only (the encoder and the inference networks) on the ELBO, so that L_k converges
    fast; the generative model, and so log p(x), stay fixed."""
    gen = [p for n, p in model.named_parameters() if n.startswith("decoder") or ".p_net." in n]
    for p in gen:
        p.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.02)
    torch.manual_seed(1)
    for _ in range(steps):
        opt.zero_grad()
        (-model.elbo(x, n_samples=8).bound.mean()).backward()
        opt.step()


@pytest.mark.parametrize("inference", ["bottom-up", "top-down"])
def test_lk_recovers_the_exact_log_likelihood_of_a_linear_gaussian_two_layer_model(inference, one_thread):
    model = _linear_model(inference)
    x = torch.randn(32, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _fit_posterior(model, x)
    exact = _exact_log_px(model, x).detach()
    b1 = evaluate_bounds(model, x, k=1, seed=0)
    bk = evaluate_bounds(model, x, k=2000, seed=0)
    # a bound below, and L_k within Monte Carlo error of the exact value
    assert float(b1.elbo.mean()) < float(exact.mean()) - 0.01
    assert float(bk.lk.mean()) == pytest.approx(float(exact.mean()), abs=0.03)
    gap = bk.lk - exact  # at most Monte Carlo noise above 0 (E[L_k] <= log p(x))
    assert float(gap.mean()) < 3 * float(gap.std() / math.sqrt(len(gap)))
    # the per-layer KL adds up to the KL
    assert torch.allclose(bk.kl_layers.sum(-1), bk.kl, atol=1e-9)


def test_precision_weighting_is_the_product_of_two_gaussians():
    mu_hat, lv_hat = torch.tensor([0.5], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)
    mu_p, lv_p = torch.tensor([-1.0], dtype=torch.float64), torch.tensor([0.3], dtype=torch.float64)
    mu, lv = precision_weighted(mu_hat, lv_hat, mu_p, lv_p)
    z = torch.linspace(-6, 6, 20001, dtype=torch.float64)
    dens = torch.exp(torch.distributions.Normal(mu_hat, torch.exp(0.5 * lv_hat)).log_prob(z)
                     + torch.distributions.Normal(mu_p, torch.exp(0.5 * lv_p)).log_prob(z))
    dz = z[1] - z[0]
    mean = (z * dens).sum() / dens.sum()
    var = ((z - mean) ** 2 * dens).sum() / dens.sum()
    assert float(mu) == pytest.approx(float(mean), abs=1e-6)
    assert float(torch.exp(lv)) == pytest.approx(float(var), abs=1e-6)
    assert float(dens.sum() * dz) > 0


@pytest.mark.parametrize("inference", ["bottom-up", "top-down"])
def test_lk_is_non_decreasing_in_k_with_stacked_layers(inference):
    model = _linear_model(inference, seed=3)
    x = torch.randn(256, D, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert_non_decreasing_in_k(model, x)


def test_prior_draws_run_the_generative_path_down():
    model = _linear_model("bottom-up")
    z = model.draw_prior(40_000, torch.Generator().manual_seed(0)).double()
    z1, z2 = z[:, :J1], z[:, J1:]
    down = model.cells[0].p_net.net[-1]
    A, a = down.weight[:J1].detach().double(), down.bias[:J1].detach().double()
    cov = A @ A.T + torch.diag(torch.exp(down.bias[J1:].detach().double()))
    assert torch.allclose(z2.mean(0), torch.zeros(J2, dtype=torch.float64), atol=0.03)
    assert torch.allclose(z1.mean(0), a, atol=0.03)
    assert torch.allclose(torch.cov(z1.T), cov, atol=0.05)


@pytest.mark.parametrize("inference", ["bottom-up", "top-down"])
def test_a_stacked_run_resumes_exactly_and_reports_each_layer(tmp_path, capsys, inference, one_thread):
    settings = {"latent_dim": None, "latent_dims": [4, 2], "latent_hidden": [16], "inference": inference}
    full = Trainer.new(tiny_config(train={"epochs": 2}, model=settings), tmp_path / "full")
    full.fit()
    Trainer.new(tiny_config(train={"epochs": 1}, model=settings), tmp_path / "part").fit()
    resumed = Trainer.resume(tmp_path / "part", overrides=tiny_config(train={"epochs": 2}), given=["train.epochs"])
    resumed.fit()
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert full.history[-1][M.TEST_BOUND] == resumed.history[-1][M.TEST_BOUND]
    assert math.isfinite(full.history[-1][M.TEST_BOUND])

    run = tmp_path / "full"
    out = tmp_path / "ev.json"
    assert main(["evaluate", str(run), "--k", "10", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "layer z1" in printed and "layer z2" in printed
    result = json.loads(out.read_text())
    assert result["layers"]["sizes"] == [4, 2]
    assert sum(result["layers"]["kl"]) == pytest.approx(result["elbo"]["kl"], abs=1e-6)
    assert result["latent_dim"] == 6
    assert main(["sample", str(run), "--n", "8", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["explore", str(run), "--out", str(tmp_path / "e.html")]) == 2
    err = capsys.readouterr().err
    assert "stacked latent layers" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e.html").exists()


def test_encode_and_decode_round_trip_on_a_stacked_run(tmp_path, one_thread):
    from aevb import load_run
    run = tmp_path / "run"
    Trainer.new(tiny_config(train={"epochs": 1}, model={"latent_dim": None, "latent_dims": [4, 2]}), run).fit()
    codes = load_run(run).encode("digits:test", samples=3)
    assert codes["mu"].shape[1] == 6 and codes["z"].shape[1:] == (3, 6)
    images = load_run(run).decode(torch.as_tensor(codes["mu"][:5]))
    assert images.shape == (5, 64)
    assert math.isfinite(float(images.sum()))


@pytest.mark.parametrize("args,message", [
    (["--latent-dims", "100"], "model.latent_dims"),
    (["--latent-dims", "10", "0"], "model.latent_dims"),
    (["--latent-dims", "10", "5", "--flow", "iaf"], "a flow applies to one stochastic layer"),
    (["--latent-dims", "10", "5", "--prior", "vamp"], "VampPrior"),
    (["--latent-dims", "10", "5", "--kl", "analytic"], "closed form only"),
    (["--latent-dims", "10", "5", "--latent-dim", "7"], "give one of them"),
    (["--inference", "top-down"], "stacked layers only"),
    (["--latent-hidden", "10"], "stacked layers only"),
])
def test_bad_stacked_settings_are_refused_before_anything_is_written(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "1", "--no-progress"] + args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
