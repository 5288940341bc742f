"""Linear layers whose weights outweigh their batch.

A fully connected layer on full-size photos (116,412 inputs by 1,164 units, 135 M weights, 542 MB
in float32) costs more in memory traffic than in arithmetic at a batch of 64: PyTorch's own
backward allocates a fresh 542 MB gradient at every step (the page faults of new memory cost as
much as the product that fills it), and bfloat16 autocast converts the weights afresh at every
call and their gradient back to float32. :class:`Linear` is an ``nn.Linear`` (same parameters,
same state dict, same results) that, for weights of at least ``WIDE_WEIGHTS`` values and while
gradients are recorded, runs the layer with buffers it keeps:

- under bfloat16 autocast, a bfloat16 copy of the weights, refreshed in place at every call, so
  the products run in bfloat16 as autocast runs them (float32 weights and gradients stay the
  master copy, as autocast keeps them);
- inside :func:`grads_in_place` (the training loop's backward pass), the weight gradient written
  straight into a buffer the layer keeps and given to ``weight.grad`` (added to it when it is
  already set), instead of a new tensor per step; a bfloat16 gradient goes there one block of
  ROW_BLOCK features at a time, converted while the block is in the CPU's caches; with it goes a
  proof that the gradient is finite, from the batch-sized operands alone (:func:`finite_certificate`),
  so that the training step's check need not read 135 M gradient values again.

Without gradients under bfloat16 autocast (an evaluation in bfloat16) a wide layer computes from
a bfloat16 copy of its weights that it keeps while the weights do not change (and that the
evaluation engine renews once per evaluation, :func:`fresh_low_copies`), instead of converting
135 M weights at every batch as autocast would.

Outside ``grads_in_place`` the gradient is returned to autograd as usual, so
``torch.autograd.grad`` and a user's own loop see ordinary PyTorch semantics.

On the CPU the products of wide layers, with or without gradients, also run in the order the
CPU's BLAS handles fastest for such shapes (:func:`product`): a layer with many outputs (the
decoder's 1,164 x 116,412 output layer) in blocks of ``ROW_BLOCK`` output features, 1.4-1.7x
faster in float32 than one product whose output rows span 116,412 values; a layer with many
inputs (the encoder's input layer) as (W x^T)^T, about 1.3x faster. The weight gradient of a
layer with many outputs is written by the same blocks. Smaller layers, and every layer on other
devices or inside a trace, an export or a compilation, are plain ``F.linear``.
"""
from __future__ import annotations

import math
import threading
import weakref
from contextlib import contextmanager
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .devices import autocast_dtype

# weights of at least this many values (16 MB in float32) take the buffered path: below it a
# step's allocations are small and PyTorch's own path is as fast, without the extra call
WIDE_WEIGHTS = 1 << 22
# output features per product of a wide layer with many outputs on the CPU: 1,024 rows of the
# weights (4.8 MB for 1,164 inputs in float32) keep the product's working set in the CPU's
# caches, where one product over 116,412 output features runs at 60-70 % of the speed
ROW_BLOCK = 1024
# a wide layer with at least this many times more inputs than outputs computes (W x^T)^T
MANY_INPUTS = 16

# a weight gradient g^T x over a batch of N rows is finite when N max|g| max|x| is below this: each
# entry is a sum of N products of at most max|g| max|x|, and rounding (float32 accumulation, also of
# bfloat16 operands) adds far less than the factor 2^10 held in reserve
FINITE_GRAD_BOUND = torch.finfo(torch.float32).max / 2 ** 10

_state = threading.local()
# bumped by fresh_low_copies: a kept bfloat16 copy made under an earlier value is copied again
_generation = [0]


@contextmanager
def grads_in_place():
    """Within this context, backward passes write the weight gradients of wide :class:`Linear`
    layers into buffers the layers keep (``weight.grad`` is that buffer after the pass, or has the
    gradient added when it was set). The training loop's backward runs inside it; the gradient
    buffer is overwritten by the next such pass, so copy a gradient you want to keep."""
    before = getattr(_state, "in_place", False)
    _state.in_place = True
    try:
        yield
    finally:
        _state.in_place = before


def fresh_low_copies() -> None:
    """Make every wide layer copy its weights into its kept bfloat16 copy again at its next pass
    without gradients. The evaluation engine calls it once per evaluation, so a change the weights'
    version counter does not see (a write through ``.data``) is never evaluated stale."""
    _generation[0] += 1


def _autocast_bf16(device: torch.device) -> bool:
    """Whether bfloat16 autocast is on for ``device``'s kind (CPU or CUDA)."""
    return autocast_dtype(device.type) == torch.bfloat16


def traced() -> bool:
    """Whether the layer runs inside an export, a trace or a compilation, which get the plain
    product (one operator, no writes into slices)."""
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or bool(compiling and compiling())
            or torch.onnx.is_in_onnx_export())


def _blocks(n: int):
    """(start, end) of the ROW_BLOCK-sized blocks of n output features."""
    return [(i, min(i + ROW_BLOCK, n)) for i in range(0, n, ROW_BLOCK)]


def _by_blocks(out_f: int, in_f: int, device: torch.device) -> bool:
    """Whether a wide layer's products (forward and weight gradient) go by blocks of output
    features: on the CPU, with at least two blocks and at least as many outputs as inputs."""
    return device.type == "cpu" and out_f >= 2 * ROW_BLOCK and out_f >= in_f


def product(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """x W^T + b for x [N, in], W [out, in], b [out] -> [N, out] (contiguous), in the order that
    runs fastest on the CPU for a wide layer: by blocks of ROW_BLOCK output features when the
    outputs are many, as (W x^T)^T when the inputs outnumber the outputs MANY_INPUTS times, else
    as one product."""
    out_f, in_f = weight.shape
    if _by_blocks(out_f, in_f, weight.device):
        y = torch.empty(x.shape[0], out_f, dtype=torch.result_type(x, weight), device=x.device)
        for a, b in _blocks(out_f):
            part = x @ weight[a:b].t() if bias is None else torch.addmm(bias[a:b], x, weight[a:b].t())
            y[:, a:b].copy_(part)
        return y
    if weight.device.type == "cpu" and in_f >= MANY_INPUTS * out_f:
        y = weight @ x.t() if bias is None else torch.addmm(bias.unsqueeze(1), weight, x.t())
        return y.t().contiguous()
    return x @ weight.t() if bias is None else torch.addmm(bias, x, weight.t())


def _weight_grad(g: Tensor, x: Tensor, out: Optional[Tensor] = None, add: bool = False) -> Tensor:
    """g^T x ([out, N] x [N, in] -> [out, in]) into ``out`` (a new tensor when None), or added to
    it with ``add``; by blocks of output features where the forward product goes by them."""
    out_f = g.shape[1]
    if out is None:
        out = torch.empty(out_f, x.shape[1], dtype=torch.result_type(g, x), device=g.device)
    for a, b in _blocks(out_f) if _by_blocks(out_f, x.shape[1], g.device) else [(0, out_f)]:
        if add:
            out[a:b].addmm_(g[:, a:b].t(), x)
        else:
            torch.mm(g[:, a:b].t(), x, out=out[a:b])
    return out


class _WideLinear(torch.autograd.Function):
    """y = x W^T + b for x [N, in], with the products in ``low`` (bfloat16 or None: the weights'
    own dtype) and the weight gradient into the layer's buffer inside grads_in_place."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], layer: "Linear", low: Optional[torch.dtype]):
        kind = x.device.type if x.device.type in ("cpu", "cuda") else "cpu"
        with torch.autocast(kind, enabled=False):
            if low is None:
                x_m, w_m = x, weight
            else:
                w_m = layer._buffer("low_weight", weight.shape, low, weight.device)
                w_m.copy_(weight.detach())
                layer.__dict__["_wide_buffers"].pop("low_key", None)  # (the copy is of this step's weights only)
                x_m = x.to(low)
            y = product(x_m, w_m, None if bias is None else bias.to(w_m.dtype))
        ctx.save_for_backward(x_m, w_m)
        ctx.layer, ctx.x_dtype, ctx.has_bias = layer, x.dtype, bias is not None
        return y

    @staticmethod
    def backward(ctx, g: Tensor):
        x_m, w_m = ctx.saved_tensors
        layer: Linear = ctx.layer
        g_m = g.to(w_m.dtype)
        dx = None
        if ctx.needs_input_grad[0]:  # (W^T g^T)^T: a third faster than g W for these shapes, never slower
            dx = (w_m.t() @ g_m.t()).t().to(ctx.x_dtype).contiguous()
        dw = None
        if ctx.needs_input_grad[1]:
            weight = layer.weight
            if getattr(_state, "in_place", False):
                _weight_grad_in_place(layer, weight, g_m, x_m)
            else:
                dw = _weight_grad(g_m, x_m).to(weight.dtype)
        db = g.sum(0).to(layer.bias.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db, None, None


def _weight_grad_in_place(layer: "Linear", weight: Tensor, g: Tensor, x: Tensor) -> None:
    """weight.grad (+)= g^T x through the layer's buffers: no new weight-sized tensor. Products
    in the weights' dtype go straight into the gradient, bfloat16 ones through a staged block."""
    add = weight.grad is not None
    out = weight.grad if add else layer._buffer("grad", weight.shape, weight.dtype, weight.device)
    if g.dtype == weight.dtype:
        _weight_grad(g, x, out, add=add)
    else:
        _weight_grad_staged(layer, g, x, out, add=add)
    if not add:
        _certify(out, g, x)
        weight.grad = out


def _certify(out: Tensor, g: Tensor, x: Tensor) -> None:
    """Attach to the weight gradient ``out`` = g^T x (g [N, out], x [N, in]) whether N max|g| max|x|
    proves it finite: one pass over the batch-sized g and x, against one over all the weights."""
    if g.numel() == 0 or x.numel() == 0:
        return
    g_lo, g_hi = torch.aminmax(g)
    x_lo, x_hi = torch.aminmax(x)  # (NaN in either makes the bound NaN: no proof)
    bound = g.shape[0] * torch.maximum(g_hi, -g_lo).double() * torch.maximum(x_hi, -x_lo).double()
    out._finite_certificate = (out._version, torch.where(bound < FINITE_GRAD_BOUND, 0.0, math.nan))


def finite_certificate(grad: Tensor) -> Optional[Tensor]:
    """For a wide layer's weight gradient written by the last backward pass (inside
    :func:`grads_in_place`) and not changed since (its version counter): a 0-d tensor, 0 when the
    gradient is proven finite, NaN when the proof fails (the gradient may still be finite: look
    at it). None for any other gradient, or one changed in place since (clipped, summed over
    processes, accumulated)."""
    kept = getattr(grad, "_finite_certificate", None)
    if kept is None or kept[0] != grad._version:
        return None
    return kept[1]


def _weight_grad_staged(layer: "Linear", g: Tensor, x: Tensor, out: Tensor, add: bool) -> None:
    """``out`` (+)= g^T x for low-precision g [N, out] and x [N, in] into the float32 gradient
    ``out`` [out, in]. On the CPU, one block of ROW_BLOCK output features (or, for a layer with
    more inputs than outputs, of ROW_BLOCK inputs) at a time, through a low-precision block the
    layer keeps and converts while it is still in the CPU's caches: a whole bfloat16 gradient
    (271 MB for the encoder's first layer) would be written to memory and read back, which costs
    each wide layer of celeba-mlp 15-20 ms a step. Elsewhere the whole product, then converted."""
    out_f, in_f = out.shape
    if g.device.type != "cpu":
        low = g.t() @ x
        out.add_(low) if add else out.copy_(low)
        return
    by_rows = _by_blocks(out_f, in_f, g.device)
    shape = (min(ROW_BLOCK, out_f), in_f) if by_rows else (out_f, min(ROW_BLOCK, in_f))
    stage = layer._buffer("grad_block", shape, g.dtype, g.device).view(-1)
    for a, b in _blocks(out_f if by_rows else in_f):
        if by_rows:
            part, target = stage[:(b - a) * in_f].view(b - a, in_f), out[a:b]
            torch.mm(g[:, a:b].t(), x, out=part)
        else:  # (a contiguous block of the kept storage for the last, narrower one too)
            part, target = stage[:out_f * (b - a)].view(out_f, b - a), out[:, a:b]
            torch.mm(g.t(), x[:, a:b], out=part)
        target.add_(part) if add else target.copy_(part)


class Linear(nn.Linear):
    """``nn.Linear`` that keeps its weight-sized buffers between steps when its weights have at
    least ``WIDE_WEIGHTS`` values (see the module's docstring). x [..., in] -> [..., out]."""

    def _buffer(self, name: str, shape, dtype: torch.dtype, device: torch.device) -> Tensor:
        """A tensor kept on the layer (not a parameter, not in the state dict), made again only
        when the weights' shape, dtype or device changed."""
        buffers = self.__dict__.setdefault("_wide_buffers", {})
        t = buffers.get(name)
        if t is None or t.shape != shape or t.dtype != dtype or t.device != device:
            buffers.pop(name, None)  # free the old one first: these are the largest tensors there are
            t = buffers[name] = torch.empty(shape, dtype=dtype, device=device)
        return t

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        # (the size from the layer's own ints: a trace records no comparison of tensors here, and
        # small layers, every step of an MNIST model, pay nothing more than nn.Linear)
        if self.in_features * self.out_features < WIDE_WEIGHTS or traced():
            return F.linear(x, w, self.bias)
        lead = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])
        if not torch.is_grad_enabled() or not (w.requires_grad or x.requires_grad):
            if _autocast_bf16(x.device) and w.dtype == torch.float32:
                with torch.autocast(x.device.type, enabled=False):  # what autocast computes, from a kept copy
                    low = self._low_weight()
                    y = product(flat.to(low.dtype), low, None if self.bias is None else self.bias.to(low.dtype))
                return y.reshape(*lead, y.shape[-1])
            if w.device.type != "cpu" or flat.dtype != w.dtype:
                return F.linear(x, w, self.bias)  # (mixed dtypes raise as nn.Linear does)
            y = product(flat, w, self.bias)
        else:
            low = torch.bfloat16 if _autocast_bf16(x.device) and w.dtype == torch.float32 else None
            y = _WideLinear.apply(flat, w, self.bias, self, low)
        return y.reshape(*lead, y.shape[-1])

    def _low_weight(self) -> Tensor:
        """The layer's kept bfloat16 copy of its weights for passes without gradients, copied
        again only when the weights changed since (their version counter or storage) or
        :func:`fresh_low_copies` was called, so an evaluation in bfloat16 converts 135 M weights
        once, not at every batch."""
        w = self.weight
        low = self._buffer("low_weight", w.shape, torch.bfloat16, w.device)
        try:
            key = (w._version, w.data_ptr(), _generation[0])
        except RuntimeError:  # an inference tensor has no version counter: copy every time
            key = None
        buffers = self.__dict__["_wide_buffers"]  # the key lives and goes with the copy
        kept = buffers.get("low_key")  # (key, the copy it was made into)
        if key is None or kept is None or kept[0] != key or kept[1]() is not low:
            low.copy_(w.detach())
            buffers["low_key"] = (key, weakref.ref(low))
        return low

    def __getstate__(self):  # copies and pickles leave the buffers behind
        state = self.__dict__.copy()
        state.pop("_wide_buffers", None)
        return state


def low_copy_bytes(module: nn.Module) -> int:
    """Bytes of the bfloat16 copies the wide :class:`Linear` layers of ``module`` keep in a pass
    under bfloat16 autocast (2 bytes per weight of each layer of at least WIDE_WEIGHTS weights)."""
    return sum(2 * m.weight.numel() for m in module.modules()
               if isinstance(m, Linear) and m.in_features * m.out_features >= WIDE_WEIGHTS
               and m.weight.dtype == torch.float32)


def release_buffers(module: nn.Module) -> None:
    """Free the buffers the wide :class:`Linear` layers of ``module`` keep (the next training step
    makes them again); the training loop calls it when it ends."""
    for m in module.modules():
        if isinstance(m, Linear):
            m.__dict__.pop("_wide_buffers", None)
