"""A decoder as a small program for the explorer's JavaScript: a list of layers and one block
of weights.

The page evaluates ``layers`` in order on a flat vector (``decoder.js``); an image-shaped vector
is C*H*W numbers in (C, H, W) order, as PyTorch's contiguous tensors. Layer kinds (offsets count
numbers in the weight block; a ``null`` bias or affine weight means none):

    linear          {"in": n, "out": m, "weight", "bias"}: y = W x + b, W [m, n] row-major
                    (PyTorch's layout), b [m]
    activation      {"fn": name, ...parameters}: element-wise, one of ``ACTIVATION_FNS``
    reshape         {"shape": [C, H, W]}: the flat vector read as an image; no number moves
    conv-transpose  {"in": Cin, "out": Cout, "in_size": [H, W], "out_size": [Ho, Wo], "kernel",
                    "stride", "padding", "output_padding" (each [rows, cols]), "weight", "bias"}:
                    PyTorch's ConvTranspose2d (groups 1, dilation 1, zero padding), W [Cin, Cout,
                    kH, kW] in PyTorch's layout, Ho = (H - 1) sH - 2 pH + kH + opH
    group-norm      {"groups": G, "channels": C, "eps", "weight", "bias"}: PyTorch's GroupNorm over
                    each group's C/G channels x H x W values (biased variance), then per-channel
                    weight and bias
    crop            {"channels": C, "in_size": [H, W], "top", "left", "size": [h, w]}: the h x w
                    window of every channel from (top, left)
    mean            {"take": D, "fn": ...}: the likelihood's mean E[x|z] [D] from its parameters:
                    "identity" | "sigmoid" of the first D values (Bernoulli logits, Gaussian mean
                    half), or "discretized-logistic" with "components" K, "levels" and
                    "min_log_scale" (see ``DiscretizedLogistic.split`` and ``.mean``)

It is the same computation as ``model.likelihood.mean(model.decoder_params(z))`` for aevb's
``MLPDecoder`` (Linear layers and activations) and ``ConvDecoder`` (Linear, activation, reshape,
transposed convolutions with optional GroupNorm, centre crop). Any other decoder or module
raises :class:`UnsupportedDecoder` naming it; a new layer kind is one branch here and one
function in ``decoder.js``.

Weights are embedded as base64 ``float32`` (exact) or ``float16`` (half the size; rounding the
weights changes the mean image by a measured amount, see :func:`mean_error`).
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..convnets import ConvDecoder
from ..distributions import LEVELS, MIN_LOG_SCALE, Bernoulli, DiscretizedLogistic, Gaussian, GaussianFixed
from ..linear import Linear
from ..networks import ACTIVATIONS, MLPDecoder
from ..runs import RunError

ENCODINGS = {"float32": np.float32, "float16": np.float16}


class UnsupportedDecoder(RunError):
    """The decoder cannot be run by the explorer's JavaScript."""


def _activation_layer(m: nn.Module):
    """The layer dict for an activation module, or None when it is not one."""
    if isinstance(m, nn.ReLU):
        return {"kind": "activation", "fn": "relu"}
    if isinstance(m, nn.Tanh):
        return {"kind": "activation", "fn": "tanh"}
    if isinstance(m, nn.Sigmoid):
        return {"kind": "activation", "fn": "sigmoid"}
    if isinstance(m, nn.ELU):
        return {"kind": "activation", "fn": "elu", "alpha": float(m.alpha)}
    if isinstance(m, nn.LeakyReLU):
        return {"kind": "activation", "fn": "leaky-relu", "slope": float(m.negative_slope)}
    if isinstance(m, nn.Softplus):
        return {"kind": "activation", "fn": "softplus", "beta": float(m.beta), "threshold": float(m.threshold)}
    if isinstance(m, nn.GELU):
        return {"kind": "activation", "fn": "gelu" if m.approximate == "none" else "gelu-tanh"}
    if isinstance(m, nn.SiLU):
        return {"kind": "activation", "fn": "silu"}
    return None


# decoder.js runs every activation aevb builds (networks.ACTIVATIONS), and GELU in its tanh form
ACTIVATION_FNS = tuple(ACTIVATIONS) + ("gelu-tanh",)
MODULES = "Linear, ConvTranspose2d, GroupNorm and the activations " + ", ".join(ACTIVATION_FNS)


def mean_layer(likelihood, data_dim: int) -> dict:
    """The ``mean`` layer of a likelihood: which parameters are the mean and how they become it."""
    if type(likelihood) is Bernoulli:
        return {"kind": "mean", "take": data_dim, "fn": "sigmoid"}
    if type(likelihood) in (Gaussian, GaussianFixed):
        return {"kind": "mean", "take": data_dim, "fn": likelihood.mean_activation}
    if type(likelihood) is DiscretizedLogistic:
        return {"kind": "mean", "take": data_dim, "fn": "discretized-logistic",
                "components": likelihood.components, "levels": LEVELS, "min_log_scale": MIN_LOG_SCALE}
    raise UnsupportedDecoder(f"the explorer cannot decode the {getattr(likelihood, 'name', type(likelihood).__name__)!r} "
                             "likelihood's mean yet (it supports bernoulli, gaussian, gaussian-fixed and "
                             "discretized-logistic)")


class WeightBlock:
    """The weight block being laid out: tensors appended in order, each at the returned offset.
    ``keep=False`` counts only (no copies; e.g. a model on the meta device)."""

    def __init__(self, keep: bool = True):
        self.keep, self.size, self.parts = keep, 0, []

    def add(self, t: Optional[torch.Tensor]) -> Optional[int]:
        """Append ``t`` flattened in its logical (row-major) order; None for a missing tensor.
        ``.contiguous()`` first: channels_last parameters are stored in another order."""
        if t is None:
            return None
        offset, self.size = self.size, self.size + t.numel()
        if self.keep:
            self.parts.append(t.detach().cpu().float().contiguous().reshape(-1).numpy())
        return offset

    def array(self) -> np.ndarray:
        return np.concatenate(self.parts).astype(np.float32) if self.parts else np.zeros(0, np.float32)


Shape = Tuple[int, ...]  # (n,) for a flat vector, (C, H, W) for an image


def _pairs(*values) -> List[List[int]]:
    return [[int(v[0]), int(v[1])] for v in values]


def linear_layer(m: nn.Linear, shape: Shape, block: WeightBlock) -> Tuple[dict, Shape]:
    """y = W x + b on a flat vector of ``m.in_features`` numbers -> (layer, (out_features,))."""
    if shape != (m.in_features,):
        raise UnsupportedDecoder(f"the explorer cannot run this decoder: a Linear layer of {m.in_features} inputs "
                                 f"gets {'x'.join(map(str, shape))} numbers")
    layer = {"kind": "linear", "in": m.in_features, "out": m.out_features,
             "weight": block.add(m.weight), "bias": block.add(m.bias)}
    return layer, (m.out_features,)


def conv_transpose_layer(m: nn.ConvTranspose2d, shape: Shape, block: WeightBlock) -> Tuple[dict, Shape]:
    """PyTorch's ConvTranspose2d on an image (Cin, H, W) -> (layer, (Cout, Ho, Wo))."""
    refused = [what for what, bad in (("groups", m.groups != 1), ("dilation", tuple(m.dilation) != (1, 1)),
                                      ("padding mode", m.padding_mode != "zeros")) if bad]
    if refused or len(shape) != 3 or shape[0] != m.in_channels:
        why = (f"its {' and '.join(refused)} (the explorer runs groups 1, dilation 1, zero padding)" if refused
               else f"its input of {'x'.join(map(str, shape))} numbers (it needs {m.in_channels} channels x H x W)")
        raise UnsupportedDecoder(f"the explorer cannot run the decoder's ConvTranspose2d({m.in_channels}, "
                                 f"{m.out_channels}, kernel {tuple(m.kernel_size)}): {why}")
    _, h, w = shape
    size = [(n - 1) * s - 2 * p + k + op for n, s, p, k, op in
            zip((h, w), m.stride, m.padding, m.kernel_size, m.output_padding)]
    layer = {"kind": "conv-transpose", "in": m.in_channels, "out": m.out_channels, "in_size": [h, w],
             "out_size": size, **dict(zip(("kernel", "stride", "padding", "output_padding"),
                                          _pairs(m.kernel_size, m.stride, m.padding, m.output_padding))),
             "weight": block.add(m.weight), "bias": block.add(m.bias)}
    return layer, (m.out_channels, *size)


def group_norm_layer(m: nn.GroupNorm, shape: Shape, block: WeightBlock) -> Tuple[dict, Shape]:
    """PyTorch's GroupNorm on an image (C, H, W) -> (layer, the same shape)."""
    if len(shape) != 3 or shape[0] != m.num_channels:
        raise UnsupportedDecoder(f"the explorer cannot run the decoder's GroupNorm({m.num_groups}, {m.num_channels}) "
                                 f"on {'x'.join(map(str, shape))} numbers (it needs {m.num_channels} channels x H x W)")
    layer = {"kind": "group-norm", "groups": m.num_groups, "channels": m.num_channels, "eps": float(m.eps),
             "weight": block.add(m.weight), "bias": block.add(m.bias)}
    return layer, shape


MODULE_LAYERS = ((nn.Linear, linear_layer), (Linear, linear_layer), (nn.ConvTranspose2d, conv_transpose_layer),
                 (nn.GroupNorm, group_norm_layer))


def module_layers(modules: Sequence[nn.Module], shape: Shape, block: WeightBlock) -> Tuple[List[dict], Shape]:
    """The layers of a chain of leaf modules applied to a vector of ``shape``, and the shape after."""
    layers = []
    for m in modules:
        if isinstance(m, nn.Identity):
            continue
        make = next((f for cls, f in MODULE_LAYERS if type(m) is cls), None)
        if make is not None:
            layer, shape = make(m, shape, block)
        else:
            layer = _activation_layer(m)
            if layer is None:
                raise UnsupportedDecoder(f"the explorer cannot run a {type(m).__name__} layer of the decoder "
                                         f"(it runs {MODULES})")
        layers.append(layer)
    return layers, shape


def conv_decoder_layers(decoder: ConvDecoder, latent_dim: int, block: WeightBlock) -> Tuple[List[dict], Shape]:
    """``ConvDecoder.forward`` as layers: fc, reshape to ``start``, the transposed convolutions,
    the centre crop to the data's H x W -> (layers, (n_params*C, H, W))."""
    layers, shape = module_layers(list(decoder.fc), (latent_dim,), block)
    if shape != (int(np.prod(decoder.start)),):
        raise UnsupportedDecoder(f"the explorer cannot run this ConvDecoder: its fc emits {'x'.join(map(str, shape))} "
                                 f"numbers, not the {'x'.join(map(str, decoder.start))} of its first image")
    layers.append({"kind": "reshape", "shape": [int(s) for s in decoder.start]})
    deconv, (ch, hh, ww) = module_layers(list(decoder.deconv), tuple(int(s) for s in decoder.start), block)
    c, h, w = decoder.image_shape
    top, left = (decoder.out_size[0] - h) // 2, (decoder.out_size[1] - w) // 2
    if (hh, ww) != tuple(decoder.out_size):
        raise UnsupportedDecoder(f"the explorer cannot run this ConvDecoder: its convolutions emit {hh}x{ww} images, "
                                 f"not the {decoder.out_size[0]}x{decoder.out_size[1]} that it crops")
    crop = {"kind": "crop", "channels": ch, "in_size": [hh, ww], "top": top, "left": left, "size": [h, w]}
    return layers + deconv + [crop], (ch, h, w)


@dataclass
class DecoderProgram:
    """``layers`` (JSON-ready dicts) and ``weights``: every number they refer to, float32 [P]."""

    layers: List[dict]
    weights: np.ndarray

    @property
    def n_weights(self) -> int:
        return int(self.weights.size)

    def encode(self, encoding: str = "float32") -> str:
        """The weights as base64 of little-endian ``encoding`` numbers."""
        return base64.b64encode(self.weights.astype(np.dtype(ENCODINGS[encoding]).newbyteorder("<")).tobytes()).decode("ascii")


def base64_chars(n_bytes: int) -> int:
    """Length of the base64 text of ``n_bytes`` bytes: 4 characters per 3 bytes."""
    return 4 * ((int(n_bytes) + 2) // 3)


def encoded_chars(n_numbers: int, encoding: str) -> int:
    """Length of the base64 text of ``n_numbers`` weights in ``encoding``."""
    return base64_chars(n_numbers * np.dtype(ENCODINGS[encoding]).itemsize)


def decoder_program(model, with_weights: bool = True) -> DecoderProgram:
    """The decoder of ``model`` (a VAE) as a program for ``decoder.js``: z [J] -> E[x|z] [D].

    Supports aevb's ``MLPDecoder`` and ``ConvDecoder`` (any encoder) and the four likelihoods;
    raises :class:`UnsupportedDecoder` naming what is not supported otherwise.
    ``with_weights=False``: the layers only (``weights`` empty; e.g. for a model on the meta device).
    """
    decoder, block, latent_dim = model.decoder, WeightBlock(with_weights), int(model.latent_dim)
    if type(decoder) is ConvDecoder:
        layers, shape = conv_decoder_layers(decoder, latent_dim, block)
    elif type(decoder) is MLPDecoder:
        layers, shape = module_layers(list(decoder.net), (latent_dim,), block)
    else:
        raise UnsupportedDecoder(
            f"the explorer runs aevb's MLP and convolutional decoders (MLPDecoder, ConvDecoder); this run's "
            f"decoder is a {type(decoder).__name__}, which it cannot run. Use `aevb plot RUN all` for figures of this model")
    n_params = int(model.likelihood.n_params) * int(model.data_dim)
    if int(np.prod(shape)) != n_params:
        raise UnsupportedDecoder(f"the explorer cannot run this decoder: it emits {int(np.prod(shape))} numbers, but the "
                                 f"{model.likelihood.name} likelihood of {model.data_dim} values needs {n_params}")
    layers.append(mean_layer(model.likelihood, int(model.data_dim)))
    return DecoderProgram(layers, block.array())


def decoder_size(model) -> int:
    """The number of weights ``decoder_program`` would embed, without copying them."""
    return sum(p.numel() for p in model.decoder.parameters())


@torch.no_grad()
def mean_error(model, z: torch.Tensor, encoding: str) -> float:
    """Largest |change| of the decoder's mean image over the rows of ``z`` [N, J] when the
    decoder's weights are rounded to ``encoding`` (0 for float32, the explorer's exact case)."""
    if encoding == "float32" or len(z) == 0:
        return 0.0
    import copy

    rounded = copy.deepcopy(model).cpu().float().eval()
    for p in rounded.decoder.parameters():
        p.copy_(p.to(torch.float16).float())
    exact = model.likelihood.mean(model.decoder_params(z.to(next(model.parameters()).device))).cpu().float()
    approx = rounded.likelihood.mean(rounded.decoder_params(z.cpu().float()))
    return float((exact - approx).abs().max())
