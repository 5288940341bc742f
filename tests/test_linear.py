"""aevb.linear.Linear: the same layer as nn.Linear, with kept buffers for wide weights."""
import copy
import pickle

import pytest
import torch
from torch import nn

from aevb import linear
from aevb.linear import Linear, grads_in_place


@pytest.fixture
def wide(monkeypatch):
    """Every layer takes the buffered path (the real threshold is for 16 MB weights)."""
    monkeypatch.setattr(linear, "WIDE_WEIGHTS", 1)


def pair(n_in=37, n_out=23, seed=0):
    torch.manual_seed(seed)
    ours = Linear(n_in, n_out)
    ref = nn.Linear(n_in, n_out)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def grads(layer, x, autocast=False):
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = layer(x)
    (y.float() * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
    return y, x.grad, layer.weight.grad, layer.bias.grad


@pytest.mark.parametrize("in_place", [False, True])
def test_float32_equals_nn_linear(wide, in_place):
    ours, ref = pair()
    x = torch.randn(3, 5, 37)  # leading dimensions are kept
    with grads_in_place() if in_place else torch.enable_grad():
        got = grads(ours, x)
    want = grads(ref, x)
    assert got[0].shape == (3, 5, 23)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_bf16_equals_autocast(wide):
    """Under bfloat16 autocast the layer computes what autocast computes: bfloat16 products of
    bfloat16 copies, float32 gradients of the float32 weights."""
    ours, ref = pair(300, 200)
    x = torch.randn(64, 300)
    with grads_in_place():
        got = grads(ours, x, autocast=True)
    want = grads(ref, x, autocast=True)
    assert got[0].dtype == want[0].dtype == torch.bfloat16
    assert got[2].dtype == torch.float32
    exact = grads(pair(300, 200)[1], x)  # float32: bf16 rounding is visible against it
    for g, w, e in zip(got, want, exact):
        assert (g.float() - w.float()).abs().max() <= 0.05 * (w.float() - e.float()).abs().max() + 1e-6


def test_weight_gradient_buffer_is_kept_and_accumulates(wide):
    ours, _ = pair()
    x = torch.randn(8, 37)
    with grads_in_place():
        ours(x).sum().backward()
    first = ours.weight.grad.clone()
    kept = ours.weight.grad.data_ptr()
    with grads_in_place():  # a second backward adds to the gradient, as PyTorch's would
        ours(x).sum().backward()
    torch.testing.assert_close(ours.weight.grad, 2 * first)
    ours.weight.grad = None  # zero_grad(set_to_none=True): the next pass writes into the same buffer
    with grads_in_place():
        ours(x).sum().backward()
    assert ours.weight.grad.data_ptr() == kept
    torch.testing.assert_close(ours.weight.grad, first)


@pytest.mark.parametrize("fused", [True, False])
def test_bf16_copy_follows_every_optimizer_step(wide, fused):
    """The bfloat16 copy is refreshed at each call, also after optimizers (fused ones) that
    change the weights without bumping their version."""
    ours, ref = pair(50, 40)
    opt = torch.optim.Adam(ours.parameters(), lr=0.1, fused=fused)
    x = torch.randn(16, 50)
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        with grads_in_place():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = ours(x)
            y.float().square().sum().backward()
        opt.step()
    ref.load_state_dict(ours.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(ours(x), ref(x))


def test_autograd_grad_outside_the_loop(wide):
    ours, ref = pair()
    x = torch.randn(4, 37)
    (gw,) = torch.autograd.grad(ours(x).square().sum(), ours.weight)
    (want,) = torch.autograd.grad(ref(x).square().sum(), ref.weight)
    torch.testing.assert_close(gw, want, rtol=1e-5, atol=1e-6)
    assert ours.weight.grad is None


def test_copies_leave_the_buffers_behind(wide):
    ours, ref = pair()
    with grads_in_place(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours(torch.randn(4, 37)).float().sum().backward()
    assert ours.__dict__["_wide_buffers"]
    for other in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        assert "_wide_buffers" not in other.__dict__
        torch.testing.assert_close(other(torch.ones(2, 37)), ref(torch.ones(2, 37)))
    assert list(ours.state_dict()) == list(ref.state_dict())
    linear.release_buffers(nn.Sequential(ours))
    assert "_wide_buffers" not in ours.__dict__


def test_training_is_the_same_with_and_without_the_buffers(monkeypatch, tmp_path):
    """Eight steps of aevb.fit on the buffered path reach the weights of PyTorch's own path."""
    import aevb

    x = torch.rand(64, 40).bernoulli()
    runs = {}
    for name, threshold in (("plain", 1 << 62), ("wide", 1)):
        monkeypatch.setattr(linear, "WIDE_WEIGHTS", threshold)
        torch.manual_seed(0)
        model = aevb.VAE.for_data(x, encoder_hidden=[30], latent_dim=3)
        runs[name] = aevb.fit(model, x, out=tmp_path / name, epochs=1, batch_size=8, seed=3, report=False)
    a = runs["plain"].load_model().state_dict()
    b = runs["wide"].load_model().state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


@pytest.fixture
def blocks(wide, monkeypatch):
    """Blocks of 8 output features, so a layer of a few dozen outputs spans several."""
    monkeypatch.setattr(linear, "ROW_BLOCK", 8)


@pytest.mark.parametrize("n_in, n_out", [(12, 43), (200, 7), (30, 30)])  # many outputs, many inputs, neither
def test_products_in_blocks_or_transposed_equal_f_linear(blocks, n_in, n_out):
    ours, ref = pair(n_in, n_out)
    x = torch.randn(2, 9, n_in)
    with torch.no_grad():
        got, want = ours(x), ref(x)
    assert got.shape == want.shape and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    got_g = grads(ours, x)
    want_g = grads(ref, x)
    for g, w in zip(got_g, want_g):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_weight_gradient_in_blocks_accumulates_in_place(blocks):
    ours, ref = pair(12, 43)
    x = torch.randn(16, 12)
    for _ in range(2):  # the second pass adds into the kept buffer, block by block
        with grads_in_place():
            (ours(x) * torch.linspace(-1, 1, 43)).sum().backward()
        (ref(x) * torch.linspace(-1, 1, 43)).sum().backward()
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_in, n_out", [(12, 43), (203, 7)])  # blocks of outputs; of inputs, the last narrower
def test_bf16_weight_gradient_staged_by_blocks_equals_autocast(blocks, n_in, n_out):
    """Under bfloat16 autocast the weight gradient goes through a small bfloat16 block per
    ROW_BLOCK outputs (or inputs) into the float32 gradient: the same values as autocast's whole
    bfloat16 product converted, written on the first pass and added on the second."""
    ours, ref = pair(n_in, n_out)
    x = torch.randn(16, n_in)
    weights = torch.linspace(-1, 1, n_out)
    for _ in range(2):
        with grads_in_place(), torch.autocast("cpu", dtype=torch.bfloat16):
            (ours(x).float() * weights).sum().backward()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            (ref(x).float() * weights).sum().backward()
    stage = ours.__dict__["_wide_buffers"]["grad_block"]
    assert stage.dtype == torch.bfloat16 and stage.numel() == 8 * (n_in if n_out > n_in else n_out)
    assert ours.weight.grad.dtype == torch.float32
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=8e-3, atol=1e-3)
    assert (ours.weight.grad - ref.weight.grad).abs().max() < 0.01 * ref.weight.grad.abs().max()


def test_frozen_weights_still_give_the_input_gradient(blocks):
    ours, ref = pair(12, 43)
    for layer in (ours, ref):
        layer.requires_grad_(False)
    x = torch.randn(5, 12, requires_grad=True)
    (gx,) = torch.autograd.grad(ours(x).square().sum(), x)
    (want,) = torch.autograd.grad(ref(x).square().sum(), x)
    torch.testing.assert_close(gx, want, rtol=1e-5, atol=1e-6)
    assert ours.weight.grad is None


def test_a_trace_gets_the_plain_product(blocks):
    ours, ref = pair(12, 43)
    traced = torch.jit.trace(ours, torch.randn(3, 12))
    assert "copy_" not in str(traced.graph)
    torch.testing.assert_close(traced(torch.ones(2, 12)), ref(torch.ones(2, 12)))


def no_grad_bf16(layer, x):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return layer(x)


def test_bf16_without_gradients_equals_autocast_from_a_kept_copy(wide):
    """Without gradients under bfloat16 autocast (an evaluation) the layer gives autocast's
    result, from a bfloat16 copy of its weights it keeps: made once, not at every batch."""
    ours, ref = pair(300, 200)
    x = torch.randn(3, 7, 300)
    got = no_grad_bf16(ours, x)
    want = no_grad_bf16(ref, x)
    assert got.dtype == want.dtype == torch.bfloat16 and got.shape == (3, 7, 200)
    torch.testing.assert_close(got.float(), want.float(), rtol=0.02, atol=0.02)
    kept = ours.__dict__["_wide_buffers"]["low_weight"]
    assert kept.dtype == torch.bfloat16 and torch.equal(kept, ours.weight.detach().to(torch.bfloat16))
    ptr = kept.data_ptr()
    no_grad_bf16(ours, x)  # the same weights: the same copy, not made again
    assert ours.__dict__["_wide_buffers"]["low_weight"].data_ptr() == ptr


def test_kept_bf16_copy_follows_changed_weights(wide):
    """A change of the weights in place (an optimizer step, a loaded state), a new weight tensor
    and a write through .data after fresh_low_copies (what the evaluation engine calls) each give
    the new weights' result, never the stale copy's."""
    ours, ref = pair(300, 200)
    x = torch.randn(16, 300)

    def check():
        ref.load_state_dict(ours.state_dict())
        torch.testing.assert_close(no_grad_bf16(ours, x).float(), no_grad_bf16(ref, x).float(), rtol=0.02, atol=0.02)

    check()
    with torch.no_grad():
        ours.weight.mul_(-2.0)  # in place: the version counter moves
    check()
    ours.load_state_dict(pair(300, 200, seed=1)[0].state_dict())
    check()
    ours.weight = nn.Parameter(torch.randn(200, 300))  # another tensor
    check()
    before = no_grad_bf16(ours, x).float()
    ours.weight.data.mul_(3.0)  # unseen by the version counter
    linear.fresh_low_copies()
    after = no_grad_bf16(ours, x).float()
    assert (after - before).abs().max() > 10.0  # the stale copy would give `before` again
    check()


# ------------------------------------------------------------------ the proof that a gradient is finite
def _backward(layer, x, g, autocast=False):
    """One backward pass of ``layer`` on ``x`` with the output gradient ``g``, inside grads_in_place."""
    layer.weight.grad = layer.bias.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = layer(x)
    with grads_in_place():
        y.backward(g.to(y.dtype))
    return layer.weight.grad


@pytest.mark.parametrize("autocast", [False, True])
def test_a_finite_weight_gradient_comes_with_its_proof(blocks, autocast):
    ours, _ = pair(12, 43)
    grad = _backward(ours, torch.randn(16, 12), torch.randn(16, 43), autocast)
    assert torch.isfinite(grad).all()
    proof = linear.finite_certificate(grad)
    assert proof is not None and proof.item() == 0.0
    grad.mul_(0.5)  # changed in place (clipped, summed over processes): no longer proven
    assert linear.finite_certificate(grad) is None
    assert linear.finite_certificate(torch.zeros(3)) is None  # any other tensor has none


def test_the_proof_fails_but_does_not_lie(blocks):
    """N max|g| max|x| bounds every entry of g^T x. Large values in different rows make the bound
    fail for a finite gradient (the check then reads the gradient); NaN or infinity in the batch
    always makes it fail."""
    ours, _ = pair(12, 43)
    x, g = torch.ones(4, 12), torch.ones(4, 43)
    x[0], g[1] = 1e25, 1e25  # no row holds both: every product is at most 1e25
    grad = _backward(ours, x, g)
    assert torch.isfinite(grad).all() and grad.abs().max() <= 4e25
    assert torch.isnan(linear.finite_certificate(grad))
    for bad in (float("nan"), float("inf")):
        x = torch.randn(4, 12)
        x[2, 5] = bad
        grad = _backward(ours, x, torch.randn(4, 43))
        assert not torch.isfinite(grad).all()
        assert torch.isnan(linear.finite_certificate(grad))
    x, g = torch.full((4, 12), 1e20), torch.full((4, 43), 1e20)  # every product overflows
    grad = _backward(ours, x, g)
    assert torch.isinf(grad).all() and torch.isnan(linear.finite_certificate(grad))


def test_the_step_check_trusts_a_proof_and_reads_the_gradient_without_one(blocks):
    from aevb.training.objective import step_is_finite

    ours, _ = pair(12, 43)
    loss = torch.tensor(2.0)
    params = list(ours.parameters())
    _backward(ours, torch.randn(8, 12), torch.randn(8, 43))
    assert step_is_finite(params, loss)
    x, g = torch.ones(4, 12), torch.ones(4, 43)
    x[0], g[1] = 1e25, 1e25  # finite, but not proven so: the gradients themselves decide
    _backward(ours, x, g)
    assert step_is_finite(params, loss)
    x[3, 3] = float("nan")
    _backward(ours, x, g)
    assert not step_is_finite(params, loss)
    _backward(ours, torch.randn(8, 12), torch.randn(8, 43))
    ours.weight.grad[0, 0] = float("inf")  # written after the proof: its version says so
    assert not step_is_finite(params, loss)
