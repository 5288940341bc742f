"""The log-densities and the KL against direct formulas (scipy) and Monte Carlo."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from aevb.distributions import get_likelihood, kl_normal_standard, log_normal, log_standard_normal


def test_closed_form_kl_matches_monte_carlo_within_standard_error():
    torch.manual_seed(0)
    mu = torch.randn(5, 3, dtype=torch.float64)
    log_var = torch.randn(5, 3, dtype=torch.float64) * 0.5
    closed = kl_normal_standard(mu, log_var).sum(-1)  # [5]
    z = mu + torch.exp(0.5 * log_var) * torch.randn(200_000, 5, 3, dtype=torch.float64)  # [S, 5, 3]
    samples = log_normal(z, mu, log_var) - log_standard_normal(z)  # [S, 5]
    mc, se = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
    assert torch.all((closed - mc).abs() < 4 * se), (closed, mc, se)
    assert torch.all(closed > 0)


def test_kl_is_zero_only_at_the_prior():
    zero = kl_normal_standard(torch.zeros(2, 4), torch.zeros(2, 4))
    assert torch.equal(zero, torch.zeros(2, 4))
    assert kl_normal_standard(torch.tensor([1.0]), torch.tensor([0.0])).item() == pytest.approx(0.5)


def test_log_normal_matches_scipy():
    rng = np.random.default_rng(1)
    x, m, lv = rng.normal(size=(3, 4, 6))
    ours = log_normal(torch.tensor(x), torch.tensor(m), torch.tensor(lv)).numpy()
    ref = stats.norm.logpdf(x, m, np.exp(0.5 * lv)).sum(-1)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    np.testing.assert_allclose(log_standard_normal(torch.tensor(x)).numpy(), stats.norm.logpdf(x).sum(-1))


def test_bernoulli_log_prob_matches_scipy_on_logits():
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=3, size=(7, 10))
    x = (rng.random((7, 10)) < 0.5).astype(float)
    lik = get_likelihood("bernoulli")
    ours = lik.log_prob(torch.tensor(x), torch.tensor(logits)).numpy()
    ref = stats.bernoulli.logpmf(x, 1 / (1 + np.exp(-logits))).sum(-1)
    np.testing.assert_allclose(ours, ref, rtol=1e-10)
    # stable far in the tails, where sigmoid saturates
    big = lik.log_prob(torch.tensor([[1.0, 0.0]]), torch.tensor([[-200.0, 200.0]]))
    assert big.item() == pytest.approx(-400.0)


def test_gaussian_log_prob_matches_scipy_and_sigmoid_mean():
    rng = np.random.default_rng(3)
    x = rng.random((4, 5))
    mean, lv = rng.normal(size=(2, 4, 5))
    params = torch.tensor(np.concatenate([mean, lv], -1))
    lik = get_likelihood("gaussian")
    np.testing.assert_allclose(lik.log_prob(torch.tensor(x), params).numpy(),
                               stats.norm.logpdf(x, mean, np.exp(0.5 * lv)).sum(-1), rtol=1e-12)
    sig = get_likelihood("gaussian", mean_activation="sigmoid")
    np.testing.assert_allclose(sig.log_prob(torch.tensor(x), params).numpy(),
                               stats.norm.logpdf(x, 1 / (1 + np.exp(-mean)), np.exp(0.5 * lv)).sum(-1), rtol=1e-12)


def test_gaussian_fixed_is_scaled_squared_error():
    rng = np.random.default_rng(4)
    x, mean = rng.normal(size=(2, 3, 8))
    for sigma in (1.0, 0.3):
        lik = get_likelihood("gaussian-fixed", sigma=sigma)
        ours = lik.log_prob(torch.tensor(x), torch.tensor(mean)).numpy()
        np.testing.assert_allclose(ours, stats.norm.logpdf(x, mean, sigma).sum(-1), rtol=1e-12)
    one = get_likelihood("gaussian-fixed", sigma=1.0)
    sq = ((x - mean) ** 2).sum(-1)
    np.testing.assert_allclose(-one.log_prob(torch.tensor(x), torch.tensor(mean)).numpy(),
                               0.5 * sq + 4 * math.log(2 * math.pi), rtol=1e-12)


def test_bernoulli_rejects_values_outside_unit_interval():
    lik = get_likelihood("bernoulli")
    lik.check_data(torch.tensor([[0.0, 0.5, 1.0]]))
    with pytest.raises(ValueError, match=r"\[0, 1\].*gaussian"):
        lik.check_data(torch.tensor([[0.0, 1.5]]))
    with pytest.raises(ValueError, match="NaN"):
        get_likelihood("gaussian").check_data(torch.tensor([[float("nan")]]))


def test_unknown_likelihood_names_the_choices():
    with pytest.raises(ValueError, match="bernoulli, gaussian, gaussian-fixed"):
        get_likelihood("poisson")


@pytest.fixture
def sliced(monkeypatch):
    """The Bernoulli terms by slices of 3 rows of 10 values from 40 values up (a small batch
    takes the path of full-size photos)."""
    from aevb import distributions
    monkeypatch.setattr(distributions, "BERNOULLI_SLICE", 30)
    monkeypatch.setattr(distributions, "SLICED_FROM", 40)
    return distributions


def test_bernoulli_by_slices_matches_scipy_with_its_own_gradient(sliced):
    """Sliced forward and hand-written gradient against scipy's density and gradcheck in float64,
    for the training layout (x [B, D] against logits [S, B, D]) and equal shapes."""
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.integers(0, 2, size=(7, 10)), dtype=torch.float64)
    for shape in [(2, 7, 10), (7, 10)]:
        logits = torch.tensor(rng.normal(scale=3.0, size=shape), requires_grad=True)
        ours = sliced.bernoulli_log_prob(x, logits)
        assert ours.shape == shape[:-1] and ours.grad_fn is not None
        assert "BernoulliLogProb" in type(ours.grad_fn).__name__ or "BernoulliLogProb" in str(ours.grad_fn.next_functions)
        p = 1.0 / (1.0 + np.exp(-logits.detach().numpy()))
        ref = stats.bernoulli.logpmf(x.numpy(), p).sum(-1)
        np.testing.assert_allclose(ours.detach().numpy(), ref, rtol=1e-10)
        assert torch.autograd.gradcheck(lambda l: sliced.bernoulli_log_prob(x, l), (logits,))


def test_bernoulli_by_slices_from_bfloat16_logits_computes_in_float32(sliced):
    """bfloat16 logits (an autocast decoder's): the density is float32 arithmetic on their values
    (the same bits as the plain form), the gradient comes back in bfloat16 and equals
    g (x - sigmoid(l)) rounded once."""
    torch.manual_seed(0)
    x = torch.rand(9, 12).round()
    logits = (torch.randn(2, 9, 12) * 4).bfloat16().requires_grad_()
    ours = sliced.bernoulli_log_prob(x, logits)
    assert ours.dtype == torch.float32
    l32 = logits.detach().float()
    ref = (x * l32 - torch.nn.functional.softplus(l32)).sum(-1)
    assert torch.equal(ours, ref)
    g = torch.randn(2, 9)
    (grad,) = torch.autograd.grad(ours, logits, g)
    assert grad.dtype == torch.bfloat16
    expected = (g.unsqueeze(-1) * (x - torch.sigmoid(l32))).bfloat16()
    assert torch.equal(grad, expected)


def test_bernoulli_plain_form_adds_both_gradients_in_float32():
    """Below the slicing size, bfloat16 logits are converted once, so x and -sigmoid(l) cancel in
    float32 before the gradient is rounded (adding two rounded bfloat16 terms would not)."""
    x = torch.full((1, 4), 0.7)
    logits = torch.full((1, 4), 0.8473, dtype=torch.bfloat16, requires_grad=True)  # sigmoid ~ 0.7
    (grad,) = torch.autograd.grad(get_likelihood("bernoulli").log_prob(x, logits).sum(), logits)
    exact = (x - torch.sigmoid(logits.detach().float())).bfloat16()
    assert torch.equal(grad, exact)
