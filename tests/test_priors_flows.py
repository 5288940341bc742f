"""Learned priors and flow posteriors: exact densities, exact log-determinants, L_k non-decreasing
in k for every combination, exact resume, and the run commands working on such models."""
import contextlib
import json
import math

import pytest
import torch

from aevb.bounds import evaluate_bounds
from aevb.cli import main
from aevb.config import ConfigError
from aevb.config.settings import ModelConfig
from aevb.flows import Flow, made_masks
from aevb.model import VAE
from aevb.priors import MixturePrior, log_normal_mixture
from aevb.training import Trainer

from conftest import tiny_config
from helpers import assert_non_decreasing_in_k
from aevb import metrics as M

COMBINATIONS = [(p, f) for p in ("standard", "mog", "vamp") for f in ("none", "planar", "iaf")]


def _model(prior="standard", flow="none", latent=3, data=12, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(latent_dim=latent, encoder_hidden=[16], likelihood="bernoulli", prior=prior, flow=flow,
                      prior_components=4, pseudo_inputs=5, flow_steps=3, input_scale="std")
    model = VAE.from_config(cfg, data).double()
    x = torch.rand(200, data, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    model.fit_to_data(x.mean(0), x.var(0))
    return model


# ------------------------------------------------------------------ flows
@pytest.mark.parametrize("kind", ["planar", "iaf"])
def test_a_flows_log_determinant_equals_autograds_jacobian(kind):
    torch.manual_seed(1)
    J = 4
    flow = Flow(kind, 3, J).double()
    with torch.no_grad():  # move away from the near-identity start, so the check means something
        for p in flow.parameters():
            p.add_(0.5 * torch.randn_like(p))
    context = torch.randn(2 * J, dtype=torch.float64)
    for _ in range(3):
        z0 = torch.randn(J, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(lambda z: flow(z, context)[0], z0)
        log_det = flow(z0, context)[1].detach()
        sign, log_abs = torch.linalg.slogdet(jac)
        assert float(log_det) == pytest.approx(float(log_abs), abs=1e-9)
        assert abs(float(log_det)) > 1e-3  # not a trivial identity


def test_an_iaf_step_is_autoregressive():
    J, H = 5, 17
    m_in, m_out = made_masks(J, H)
    # output j may depend on input i only when i < j: the product of the masks is strictly lower
    path = (m_out @ m_in) > 0
    assert not torch.triu(path).any()
    torch.manual_seed(0)
    flow = Flow("iaf", 1, J).double()
    context = torch.randn(2 * J, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda z: flow(z, context)[0], torch.randn(J, dtype=torch.float64))
    assert torch.allclose(jac, torch.tril(jac))  # triangular: det = product of the diagonal


@pytest.mark.parametrize("kind", ["planar", "iaf"])
def test_a_flow_posterior_is_a_normalised_density(kind):
    """E_{z ~ q}[p(z) / q(z)] = 1 for any normalised p; a wrong sign or a missing term of the
    log-determinant moves it far from 1. p is narrower than q (so the weights are bounded)."""
    model = _model(flow=kind, latent=2)
    with torch.no_grad():
        for p in model.flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
        mu, log_var = torch.tensor([[0.2, -0.4]], dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64)
        eps = torch.randn(400_000, 1, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        drawn = model.latent_sample(eps, mu, log_var)
        z, log_q = drawn.z, drawn.log_q
        centre, var = z.mean(0), 0.3 ** 2  # p = N(centre, 0.09 I)
        log_p = -0.5 * (2 * math.log(2 * math.pi * var) + ((z - centre) ** 2).sum(-1) / var)
        ratio = torch.exp(log_p - log_q).mean()
        # the same estimate with the log-determinant left out is far from 1
        z0 = mu + torch.exp(0.5 * log_var) * eps
        base = -0.5 * (2 * math.log(2 * math.pi) + ((z0 - mu) ** 2).sum(-1))
        wrong = torch.exp(log_p - base).mean()
    assert float(ratio) == pytest.approx(1.0, abs=0.02)
    assert abs(float(wrong) - 1.0) > 0.1


# ------------------------------------------------------------------ priors
def test_the_mixture_prior_density_equals_a_brute_force_mixture():
    torch.manual_seed(0)
    prior = MixturePrior(3, 4).double()
    with torch.no_grad():
        prior.log_vars.copy_(torch.randn(4, 3) - 2.0)  # narrow components: the hard case for the expansion
        prior.logits.copy_(torch.randn(4))
    z = torch.randn(7, 5, 3, dtype=torch.float64)
    comps = torch.distributions.Normal(prior.means, torch.exp(0.5 * prior.log_vars))
    brute = torch.logsumexp(comps.log_prob(z[..., None, :]).sum(-1) + torch.log_softmax(prior.logits, 0), -1)
    assert torch.allclose(prior.log_prob(z), brute, atol=1e-9)


def test_the_vampprior_density_is_the_mixture_of_the_pseudo_inputs_posteriors():
    model = _model(prior="vamp")
    z = torch.randn(6, 3, dtype=torch.float64)
    u = model.prior.pseudo_inputs
    mu, log_var = model.encoder_params(u)
    brute = torch.logsumexp(torch.stack([torch.distributions.Normal(mu[k], torch.exp(0.5 * log_var[k]))
                                         .log_prob(z).sum(-1) for k in range(len(u))]), 0) - math.log(len(u))
    assert torch.allclose(model.log_p_z(z), brute, atol=1e-9)
    # gradients reach the pseudo-inputs and the encoder through the prior
    model.log_p_z(z).sum().backward()
    assert u.grad is not None and u.grad.abs().sum() > 0


def test_an_evaluation_encodes_the_pseudo_inputs_once_and_forgets_them_after():
    model = _model(prior="vamp")
    z = torch.randn(6, 3, dtype=torch.float64)
    calls = []
    encode = model.encoder_params
    model.encoder_params = lambda x: calls.append(len(x)) or encode(x)
    free = model.log_p_z(z)
    calls.clear()
    with torch.no_grad(), model.fixed_prior():
        inside = [model.log_p_z(z) for _ in range(3)]
        with model.fixed_prior():  # nested: still the same components
            inside.append(model.log_p_z(z))
    assert calls == [len(model.prior.pseudo_inputs)]  # one encoding for four densities
    for value in inside:
        assert torch.equal(value, free.detach())
    # after the context, a change of the pseudo-inputs is seen again
    with torch.no_grad():
        model.prior.pseudo_inputs.add_(1.0)
    assert not torch.allclose(model.log_p_z(z), free)
    # an evaluation gives the bounds it gives without the cache (chunks of 3 samples: 3 chunks)
    x = torch.bernoulli(torch.full((4, model.data_dim), 0.3, dtype=torch.float64),
                        generator=torch.Generator().manual_seed(0))
    calls.clear()
    cached = evaluate_bounds(model, x, k=9, chunk=3).lk
    assert len(calls) == 2  # the pseudo-inputs once, the data once (one batch)
    calls.clear()
    model.fixed_prior = contextlib.nullcontext  # the same evaluation, encoding them per chunk
    assert torch.allclose(cached, evaluate_bounds(model, x, k=9, chunk=3).lk, atol=1e-9)
    assert len(calls) == 4


def test_mixture_densities_stay_exact_for_very_narrow_components():
    means = torch.tensor([[0.3, -1.2]], dtype=torch.float32)
    log_vars = torch.tensor([[-9.0, -8.0]])
    z = means + torch.tensor([[1e-3, -2e-3]])
    exact = torch.distributions.Normal(means.double(), torch.exp(0.5 * log_vars.double())).log_prob(z.double()).sum(-1)
    assert float(log_normal_mixture(z, means, log_vars, torch.zeros(1))) == pytest.approx(float(exact), abs=1e-3)


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_prior_draws_follow_the_learned_prior(prior):
    model = _model(prior=prior, latent=2)
    z = model.draw_prior(50_000, torch.Generator().manual_seed(0)).double()
    # the draws' log-density under the prior, against a Monte Carlo of the prior's own entropy:
    # draws from another distribution (e.g. N(0, I)) score clearly lower
    own = float(model.log_p_z(z).mean().detach())
    other = float(model.log_p_z(torch.randn(50_000, 2, dtype=torch.float64)).mean().detach())
    assert own > other + 0.1
    assert torch.equal(z, model.draw_prior(50_000, torch.Generator().manual_seed(0)).double())


# ------------------------------------------------------------------ bounds
@pytest.mark.parametrize("prior,flow", COMBINATIONS)
def test_lk_is_non_decreasing_in_k_for_every_combination(prior, flow):
    model = _model(prior, flow)
    x = torch.bernoulli(torch.rand(256, 12, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    assert_non_decreasing_in_k(model, x)


@pytest.mark.parametrize("prior,flow", COMBINATIONS)
def test_the_elbo_and_its_kl_agree_between_training_and_evaluation(prior, flow):
    """The training ELBO's expectation equals the engine's ELBO: both are E_q[log p(x|z)] - KL,
    with the KL in closed form or by Monte Carlo from the same density."""
    model = _model(prior, flow)
    x = torch.bernoulli(torch.rand(16, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    torch.manual_seed(0)
    with torch.no_grad():
        train_elbo = model.elbo(x, n_samples=4000).bound.mean()
    b = evaluate_bounds(model, x, k=4000, seed=3)
    assert float(train_elbo) == pytest.approx(float(b.elbo.mean()), abs=0.05)
    assert (b.kl_per_dim is None) == (prior != "standard" or flow != "none")


def test_the_closed_form_kl_is_refused_where_there_is_none():
    model = _model(prior="vamp")
    with pytest.raises(ValueError, match="no closed form"):
        model.elbo(torch.rand(2, 12, dtype=torch.float64), kl="analytic")


# ------------------------------------------------------------------ runs
@pytest.mark.parametrize("model_settings", [{"prior": "vamp", "pseudo_inputs": 10},
                                            {"flow": "iaf"}, {"prior": "mog", "flow": "planar", "flow_steps": 2}])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, model_settings, one_thread):
    full = Trainer.new(tiny_config(train={"epochs": 2}, model=model_settings), tmp_path / "full")
    full.fit()
    Trainer.new(tiny_config(train={"epochs": 1}, model=model_settings), tmp_path / "part").fit()
    resumed = Trainer.resume(tmp_path / "part", overrides=tiny_config(train={"epochs": 2}), given=["train.epochs"])
    resumed.fit()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert full.history[-1][M.TEST_BOUND] == resumed.history[-1][M.TEST_BOUND]
    saved = json.loads((tmp_path / "part" / "config.json").read_text())
    assert saved["objective"]["kl"] == "mc"
    assert {k: saved["model"][k] for k in model_settings} == model_settings


@pytest.mark.parametrize("parts", [["--prior", "vamp", "--pseudo-inputs", "8"], ["--flow", "iaf"],
                                   ["--prior", "mog", "--flow", "planar", "--flow-steps", "2"]])
def test_the_run_commands_work_on_runs_with_parts(tmp_path, capsys, one_thread, parts):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--epochs", "1", "--latent-dim", "3", "--hidden", "32",
                 "--no-progress", "--no-tensorboard"] + parts) == 0
    assert main(["evaluate", str(run), "--k", "20"]) == 0
    out = capsys.readouterr().out
    assert "not defined" in out  # KL per unit
    result = json.loads(next((run / "evaluations").glob("*.json")).read_text()) \
        if (run / "evaluations").is_dir() else None
    assert main(["sample", str(run), "--n", "16", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    assert main(["plot", str(run), "all", "--out", str(tmp_path / "figures")]) == 0
    assert (tmp_path / "figures" / "kl.png").is_file()
    assert result is None or result["elbo"]["mean"] < result["lk"]["mean"] + 1e-9
    assert main(["export", str(run), "--out", str(tmp_path / "export"), "--format", "safetensors"]) == 0
    assert main(["explore", str(run), "--out", str(tmp_path / "e.html")]) == 0


@pytest.mark.parametrize("args,message", [
    (["--flow", "iaf", "--kl", "analytic"], "closed form only"),
    (["--prior", "vamp", "--kl", "analytic"], "closed form only"),
    (["--prior", "vamp", "--pseudo-inputs", "0"], "model.pseudo_inputs"),
    (["--prior", "mog", "--prior-components", "-3"], "model.prior_components"),
    (["--flow", "planar", "--flow-steps", "1000"], "model.flow_steps"),
    (["--pseudo-inputs", "10"], "applies to --prior vamp only"),
    (["--flow-steps", "3"], "applies to a flow"),
    (["--prior", "student"], "invalid choice"),
])
def test_bad_prior_and_flow_settings_are_refused_before_anything_is_written(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) if "invalid choice" in message else _no_raise():
        assert main(["train", "--out", str(out), "--epochs", "1", "--no-progress"] + args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len([line for line in err.strip().splitlines() if line.strip()]) <= 2
    assert not out.exists()


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_settings_from_python_are_checked_too():
    with pytest.raises(ConfigError, match="closed form only"):
        from aevb.config.rules import validate
        validate(tiny_config(model={"flow": "iaf"}, objective={"kl": "analytic"}))
