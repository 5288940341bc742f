"""A decoder as a small program for the explorer's JavaScript: a list of layers and one block
of weights.

The page evaluates ``layers`` in order on a vector (``decoder.js``). Layer kinds:

    linear      {"in": n, "out": m, "weight": offset, "bias": offset}: y = W x + b, W [m, n]
                stored row-major (PyTorch's layout), b [m]; offsets count numbers in the block
    activation  {"fn": name, ...parameters}: element-wise, one of ``ACTIVATION_FNS``
    mean        {"take": D, "fn": "identity" | "sigmoid"}: the likelihood's mean E[x|z] from its
                parameters: the first D values (Gaussian: the mean half), then ``fn``

It is the same computation as ``model.likelihood.mean(model.decode(z))``. A decoder with any
other module (e.g. the convolutional decoders) raises :class:`UnsupportedDecoder`; a new layer
kind is one branch here and one function in ``decoder.js``.

Weights are embedded as base64 ``float32`` (exact) or ``float16`` (half the size; rounding the
weights changes the mean image by a measured amount, see :func:`mean_error`).
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import List

import numpy as np
import torch
from torch import nn

from ..distributions import Bernoulli, Gaussian, GaussianFixed
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


ACTIVATION_FNS = ("relu", "tanh", "sigmoid", "elu", "leaky-relu", "softplus", "gelu", "gelu-tanh", "silu")


def mean_layer(likelihood, data_dim: int) -> dict:
    """The ``mean`` layer of a likelihood: which parameters are the mean and their squashing."""
    if type(likelihood) is Bernoulli:
        return {"kind": "mean", "take": data_dim, "fn": "sigmoid"}
    if type(likelihood) in (Gaussian, GaussianFixed):
        return {"kind": "mean", "take": data_dim, "fn": likelihood.mean_activation}
    raise UnsupportedDecoder(f"the explorer cannot decode the {getattr(likelihood, 'name', type(likelihood).__name__)!r} "
                             "likelihood's mean yet (it supports bernoulli, gaussian and gaussian-fixed)")


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd)


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
    """The decoder of ``model`` (a VAE) as a program for ``decoder.js``.

    Supports the MLP decoders (a ``Sequential`` of ``Linear`` and activation modules);
    raises :class:`UnsupportedDecoder` naming what is not supported otherwise.
    ``with_weights=False``: the layers only (``weights`` empty; e.g. for a model on the meta device).
    """
    decoder = model.decoder
    modules = list(decoder.modules())
    if any(_is_conv(m) for m in modules):
        raise UnsupportedDecoder(
            f"the explorer does not support convolutional decoders yet (this run's decoder is a "
            f"{type(decoder).__name__} with convolution layers); it runs MLP decoders only. "
            "Use `aevb plot RUN all` for figures of this model")
    net = getattr(decoder, "net", None)
    if not isinstance(net, nn.Sequential) or not all(len(list(m.children())) == 0 for m in net):
        raise UnsupportedDecoder(f"the explorer runs MLP decoders (Linear layers and activations); "
                                 f"this run's decoder is a {type(decoder).__name__}")
    layers, blocks, offset = [], [], 0
    for m in net:
        if isinstance(m, nn.Linear):
            n_w = m.in_features * m.out_features
            layers.append({"kind": "linear", "in": m.in_features, "out": m.out_features,
                           "weight": offset, "bias": offset + n_w})
            offset += n_w + m.out_features
            if with_weights:
                blocks.append(m.weight.detach().cpu().float().numpy().reshape(-1))
                blocks.append(m.bias.detach().cpu().float().numpy() if m.bias is not None
                              else np.zeros(m.out_features, np.float32))
            continue
        act = _activation_layer(m)
        if act is None:
            raise UnsupportedDecoder(f"the explorer cannot run a {type(m).__name__} layer of the decoder "
                                     "(it runs Linear layers and the activations "
                                     f"{', '.join(ACTIVATION_FNS)})")
        layers.append(act)
    layers.append(mean_layer(model.likelihood, int(model.data_dim)))
    weights = np.concatenate(blocks).astype(np.float32) if blocks else np.zeros(0, np.float32)
    return DecoderProgram(layers, weights)


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
    exact = model.likelihood.mean(model.decode(z.to(next(model.parameters()).device))).cpu().float()
    approx = rounded.likelihood.mean(rounded.decode(z.cpu().float()))
    return float((exact - approx).abs().max())
