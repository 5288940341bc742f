"""The discretized logistic likelihood: a proper mass on 256 levels, checked against SciPy."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from aevb.distributions import DiscretizedLogistic, get_likelihood, log_logistic_bin
from aevb.evaluate import bits_per_dim, bpd_convention

LEVELS = torch.arange(256, dtype=torch.float64) / 255


def _masses(lik, params, d):
    """[256, B, D] probabilities of every level for every value."""
    b = params.shape[0]
    return torch.stack([lik.log_prob_values(torch.full((b, d), float(v), dtype=params.dtype), params)
                        for v in LEVELS]).exp()


@pytest.mark.parametrize("components", [1, 3])
def test_masses_of_the_256_levels_sum_to_one(components):
    g = torch.Generator().manual_seed(components)
    lik = DiscretizedLogistic(components)
    d = 6
    params = torch.randn(4, lik.n_params * d, generator=g, dtype=torch.float64) * 2
    params[:, -d:] -= 3  # some sharp scales, so the sum is not trivially spread out
    p = _masses(lik, params, d)
    torch.testing.assert_close(p.sum(0), torch.ones(4, d, dtype=torch.float64), rtol=0, atol=1e-10)
    assert (p >= 0).all()
    # log_prob is the sum over the values
    x = LEVELS[torch.randint(0, 256, (4, d), generator=g)]
    torch.testing.assert_close(lik.log_prob(x, params), lik.log_prob_values(x, params).sum(-1))


def test_log_mass_matches_scipy_logistic_cdf():
    g = torch.Generator().manual_seed(0)
    n = 5000
    mean = torch.rand(n, generator=g, dtype=torch.float64) * 1.4 - 0.2
    log_scale = torch.rand(n, generator=g, dtype=torch.float64) * 6 - 7
    k = torch.randint(0, 256, (n,), generator=g)
    k[:50], k[50:100] = 0, 255  # the edge levels take the tails
    x = k.double() / 255
    ours = log_logistic_bin(x, mean, log_scale).numpy()
    m, s, xv = mean.numpy(), np.exp(log_scale.numpy()), x.numpy()
    hi = np.where(k.numpy() == 255, np.inf, xv + 0.5 / 255)
    lo = np.where(k.numpy() == 0, -np.inf, xv - 0.5 / 255)
    # the difference of CDFs (or of survival functions above the mean, to avoid cancellation)
    mass = np.where(xv < m, stats.logistic.cdf(hi, m, s) - stats.logistic.cdf(lo, m, s),
                    stats.logistic.sf(lo, m, s) - stats.logistic.sf(hi, m, s))
    with np.errstate(divide="ignore"):
        ref = np.log(mass)
    ok = np.isfinite(ref) & (ref > -600)  # below, SciPy's float64 masses are subnormal
    assert ok.mean() > 0.95
    np.testing.assert_allclose(ours[ok], ref[ok], rtol=1e-9, atol=1e-9)
    # float32 agrees with float64 to float32 precision
    ours32 = log_logistic_bin(x.float(), mean.float(), log_scale.float()).double().numpy()
    np.testing.assert_allclose(np.exp(ours32[ok]), mass[ok], atol=5e-5)


def test_stable_far_in_the_tails_and_for_huge_scales():
    x = torch.tensor([0.5, 0.0, 1.0, 0.3, 0.3], requires_grad=False)
    mean = torch.tensor([-50.0, 30.0, -30.0, 0.3, 0.3], requires_grad=True)
    log_scale = torch.tensor([-7.7, -7.7, -7.7, 80.0, -20.0], requires_grad=True)
    lp = log_logistic_bin(x, mean, log_scale)
    assert torch.isfinite(lp).all()
    # huge scale: mass = bin width / (4 s) at the centre, log = -log(255) - 80 - log 4
    assert lp[3].item() == pytest.approx(-math.log(255) - 80 - math.log(4), rel=1e-6)
    assert lp[4].item() == pytest.approx(0.0, abs=1e-6)  # a tiny scale puts all mass on the level
    lp.sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all()


@pytest.mark.parametrize("components", [1, 2])
def test_mean_and_samples_come_from_the_same_distribution(components):
    g = torch.Generator().manual_seed(5)
    lik = DiscretizedLogistic(components)
    d = 3
    params = torch.randn(2, lik.n_params * d, generator=g, dtype=torch.float64)
    params[:, -d:] = params[:, -d:] * 0.5 - 2.5
    p = _masses(lik, params, d)  # [256, 2, d]
    exact_mean = (p * LEVELS[:, None, None]).sum(0)
    torch.testing.assert_close(lik.mean(params), exact_mean, rtol=0, atol=1e-10)
    draws = lik.sample(params.expand(20000, *params.shape), generator=g)  # [S, 2, d]
    k = torch.round(draws * 255).long()
    assert torch.equal(k.double() / 255, draws)  # every draw is a level
    freq = torch.stack([(k == i).double().mean(0) for i in range(256)])
    assert (freq - p).abs().max() < 0.015
    assert (draws.mean(0) - exact_mean).abs().max() < 0.01


def test_refuses_data_that_are_not_on_256_levels():
    lik = get_likelihood("discretized-logistic")
    lik.check_data(LEVELS.float().reshape(16, 16))
    with pytest.raises(ValueError, match=r"not levels k/255 .*store it as uint8"):
        lik.check_data(torch.tensor([[0.5, 0.25]]))
    with pytest.raises(ValueError, match=r"range \[-0.2, 0.5\]"):
        lik.check_data(torch.tensor([[-0.2, 0.5]]))
    lik.check_levels(256, "unit")
    with pytest.raises(ValueError, match=r"levels=17.*choose --likelihood gaussian"):
        lik.check_levels(17, "unit", what="digits")
    with pytest.raises(ValueError, match=r"levels=2.*choose --likelihood bernoulli"):
        lik.check_levels(2, "binary")
    with pytest.raises(ValueError, match=r"binarized dynamically.*drop --binarize"):
        lik.check_levels(256, "unit", dynamic_binarization=True)


def test_bits_per_dim_are_the_log_mass_without_offset():
    offset, why = bpd_convention("unit", 256, "discretized-logistic")
    assert offset == 0.0 and "exactly" in why
    assert bits_per_dim(-100 * 3072 * math.log(2) / 100, 3072, offset) == pytest.approx(1.0)
    # a density on the same data needs the bin-width offset; the mass does not
    assert bpd_convention("unit", 256, "gaussian")[0] == pytest.approx(math.log2(255))
    assert bpd_convention("unit", 17, "discretized-logistic")[0] is None
