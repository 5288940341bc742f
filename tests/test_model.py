"""The VAE's bounds: estimators agree, gradients flow through z = mu + sigma * eps, L_k >= ELBO."""
import math

import pytest
import torch

from aevb.config import ModelConfig
from aevb.model import VAE


def small_vae(likelihood="bernoulli", d=12, j=3, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(latent_dim=j, encoder_hidden=[16], likelihood=likelihood, activation="tanh")
    return VAE.from_config(cfg, d).double()


def binary_batch(n=6, d=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, d, generator=g) < 0.4).double()


def test_gradients_reach_the_encoder_through_the_reparameterization():
    model = small_vae()
    x = binary_batch()
    terms = model.elbo(x)
    # the reconstruction term alone depends on the encoder only through z = mu + sigma * eps
    terms.log_px_given_z.sum().backward()
    enc_grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in enc_grads)
    assert sum(g.abs().sum().item() for g in enc_grads) > 0
    # and the log-variance head receives gradient (sigma multiplies eps)
    last = model.encoder.net[-1]
    assert last.weight.grad[model.latent_dim:].abs().sum() > 0


def test_mc_and_closed_form_kl_estimators_agree_in_expectation():
    model = small_vae()
    x = binary_batch()
    torch.manual_seed(3)
    with torch.no_grad():
        a = model.elbo(x, n_samples=20000, kl="analytic")
        b = model.elbo(x, n_samples=20000, kl="mc")
    assert torch.allclose(a.kl, b.kl, atol=0.05)
    assert torch.allclose(a.bound, b.bound, atol=0.1)


def test_elbo_terms_add_up_and_shapes():
    model = small_vae("gaussian")
    x = torch.randn(5, 12, dtype=torch.float64)
    t = model.elbo(x, n_samples=3)
    assert t.bound.shape == (5,) and t.kl_per_dim.shape == (5, 3)
    assert torch.allclose(t.bound, t.log_px_given_z - t.kl)
    assert torch.allclose(t.kl, t.kl_per_dim.sum(-1))


def test_iw_bound_is_at_least_the_elbo_and_grows_with_k():
    model = small_vae()
    with torch.no_grad():  # a poor q (too wide) leaves a gap that larger k must close
        model.encoder.net[-1].bias[model.latent_dim:] += 2.0
    x = binary_batch(n=4)
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = model.elbo(x, n_samples=20000, kl="mc").bound
        l1 = torch.stack([model.iw_bound(x, 1) for _ in range(4000)])
        l10 = torch.stack([model.iw_bound(x, 10) for _ in range(400)]).mean(0)
        l100 = torch.stack([model.iw_bound(x, 100) for _ in range(100)]).mean(0)
    se = l1.std(0) / math.sqrt(len(l1))
    assert torch.all((l1.mean(0) - elbo).abs() < 4 * se)  # L_1 is the ELBO
    assert torch.all(l10 > elbo + 0.5) and torch.all(l100 > l10 + 0.1)


def test_chunked_iw_bound_equals_unchunked():
    model = small_vae()
    x = binary_batch(n=3)
    torch.manual_seed(5)
    full = model.iw_bound(x, 37)
    for chunk in (1, 5, 36):  # uneven splits of the 37 samples, each a different path through the chunks
        torch.manual_seed(5)
        chunked = model.iw_bound(x, 37, chunk_size=chunk)
        assert torch.allclose(chunked, full, rtol=0, atol=1e-5), chunk
    torch.manual_seed(6)  # and not trivially equal: other samples give another estimate
    assert (model.iw_bound(x, 37, chunk_size=5) - full).abs().max() > 1e-4
    with pytest.raises(ValueError):
        model.iw_bound(x, 0)
