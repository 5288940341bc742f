"""The AEVB paper's baselines: HMC, the Appendix-D marginal likelihood, wake-sleep, Monte Carlo EM
and mean-field inference. Numbers are checked against closed forms, not only shapes."""
import math

import pytest
import torch

from aevb.baselines import (MCEM, WakeSleep, appendix_d_estimate, dream, elbo_given_q, evaluate_elbo,
                            fit_mean_field, hmc_sample, linear_gaussian_log_px, sleep_objective,
                            wake_objective)
from aevb.baselines.mean_field import amortization_gap
from aevb.config import ModelConfig, OptimConfig
from aevb.distributions import log_normal, log_standard_normal
from aevb.model import VAE


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only cost time on a shared CPU
    yield
    torch.set_num_threads(n)


def small_vae(d=12, j=2, hidden=16, likelihood="bernoulli", seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(latent_dim=j, encoder_hidden=[hidden], likelihood=likelihood, activation="tanh")
    return VAE.from_config(cfg, d).double()


def binary_data(n=64, d=12, seed=1):
    """Binary data with latent structure: each row is a noisy copy of one of 4 prototypes."""
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(4, d, generator=g) < 0.5).double()
    rows = protos[torch.randint(0, 4, (n,), generator=g)]
    flip = (torch.rand(n, d, generator=g) < 0.05).double()
    return (rows - flip).abs()


# ----------------------------------------------------------------------------- HMC
def test_hmc_samples_a_correlated_gaussian_with_the_right_moments_and_acceptance():
    torch.manual_seed(0)
    mean = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    a = torch.tensor([[2.0, 0.0, 0.0], [1.2, 0.8, 0.0], [0.3, -0.4, 0.5]], dtype=torch.float64)
    cov = a @ a.T
    prec = torch.linalg.inv(cov)

    def log_prob(z):
        d = z - mean
        return -0.5 * ((d @ prec) * d).sum(-1)

    chains, n = 200, 40
    res = hmc_sample(log_prob, torch.zeros(chains, 3, dtype=torch.float64), n_samples=n, burn_in=100)
    s = res.samples.reshape(-1, 3)
    # MC error of the mean: sd / sqrt(effective n); the chains are independent, the samples
    # within a chain nearly so for HMC on a Gaussian; allow 5 standard errors of 2000 draws
    se = cov.diagonal().sqrt() / math.sqrt(2000)
    assert ((s.mean(0) - mean).abs() < 5 * se).all(), (s.mean(0), mean)
    emp = torch.cov(s.T)
    assert torch.allclose(emp, cov, atol=0.15 * cov.diagonal().max().item()), (emp, cov)
    # the per-chain step size was tuned towards 90% acceptance
    acc = res.accept.mean().item()
    assert 0.8 < acc < 0.99, acc


# ----------------------------------------------------------------------------- Appendix D
def test_appendix_d_estimator_recovers_exact_log_px_of_a_linear_gaussian_model():
    torch.manual_seed(0)
    d, j, s = 6, 2, 0.5
    W = torch.randn(d, j, dtype=torch.float64)
    b = torch.randn(d, dtype=torch.float64)
    z = torch.randn(40, j, dtype=torch.float64)
    x = z @ W.T + b + s * torch.randn(40, d, dtype=torch.float64)
    log_var = torch.full_like(x, 2 * math.log(s))

    def log_joint(zz):
        return log_standard_normal(zz) + log_normal(x, zz @ W.T + b, log_var)

    est = appendix_d_estimate(log_joint, torch.zeros(40, j, dtype=torch.float64), n_samples=200, burn_in=100)
    exact = linear_gaussian_log_px(x, W, b, s)
    err = est.log_px - exact
    # per datapoint within a few tenths of a nat; on average unbiased to a few hundredths
    assert err.abs().max() < 0.4, err
    assert err.mean().abs() < 0.06, err.mean()


# ----------------------------------------------------------------------------- wake-sleep
def test_wake_and_sleep_updates_improve_their_own_objectives():
    model = small_vae()
    x = binary_data()
    ws = WakeSleep.from_config(model, OptimConfig(optimizer="adagrad", lr=0.05))
    with torch.random.fork_rng():
        torch.manual_seed(5)
        before_wake = wake_objective(model, x, n_samples=200).item()
    for _ in range(20):
        ws.wake(x)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        after_wake = wake_objective(model, x, n_samples=200).item()
    assert after_wake > before_wake + 0.5, (before_wake, after_wake)

    torch.manual_seed(6)
    z, xd = dream(model, 500)  # a fixed set of dreamed pairs
    enc_before = [p.clone() for p in model.encoder.parameters()]
    dec_before = [p.clone() for p in model.decoder.parameters()]
    before_sleep = sleep_objective(model, z, xd).item()
    for _ in range(40):
        ws.sleep(200)
    after_sleep = sleep_objective(model, z, xd).item()
    assert after_sleep > before_sleep + 0.1, (before_sleep, after_sleep)
    # each phase touches only its own network
    assert all(torch.equal(a, b) for a, b in zip(dec_before, model.decoder.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(enc_before, model.encoder.parameters()))


# ----------------------------------------------------------------------------- MCEM
def test_mcem_steps_raise_the_joint_likelihood_and_keep_chains_per_datapoint():
    model = small_vae()
    x = binary_data(n=200)
    mcem = MCEM.from_config(model, len(x), OptimConfig(optimizer="adagrad", lr=0.05))
    idx = torch.arange(len(x))

    def joint():
        with torch.no_grad():
            return (model.log_p_z(mcem.z) + model.log_p_x_given_z(x, mcem.z.unsqueeze(0))[0]).mean().item()

    mcem.e_step(x, idx)
    before = joint()
    for _ in range(10):
        mcem.step(x, idx)
    assert joint() > before + 0.5
    assert mcem.z.shape == (200, 2) and (mcem.visits == 11).all()
    assert 0.0 < mcem.last_accept <= 1.0


# ----------------------------------------------------------------------------- mean-field
def test_mean_field_elbo_is_at_least_the_amortized_elbo_for_the_same_decoder():
    model = small_vae()
    x = binary_data(n=50)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):  # a decoder and encoder worth comparing
        loss = -model.elbo(x).bound.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    dec = [p.clone() for p in model.parameters()]
    r = amortization_gap(model, x, steps=300, lr=0.05, init="prior", eval_samples=500, record_every=100)
    assert r["mean_field_elbo"] >= r["amortized_elbo"], r
    assert r["gap"] >= 0 and r["mean_field_s_per_point"] > 0 and r["amortized_s_per_point"] > 0
    # the decoder was held fixed and keeps requiring gradients afterwards
    assert all(torch.equal(a, b) for a, b in zip(dec, model.parameters()))
    assert all(p.requires_grad for p in model.parameters())
    # started at the encoder's output, it can only improve on it
    mf = fit_mean_field(model, x, steps=100, init="encoder", record_every=0)
    mu, lv = model.encoder_params(x)
    assert evaluate_elbo(model, x, mf.mu, mf.log_var, 500).mean() >= evaluate_elbo(model, x, mu.detach(), lv.detach(), 500).mean()
    assert elbo_given_q(model, x, mf.mu, mf.log_var).shape == (50,)
