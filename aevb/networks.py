"""Encoder and decoder networks.

An encoder maps x [B, D] to the parameters (mu, log_var) of q(z|x), each [B, J]. A decoder maps
z [..., J] to the likelihood's parameters [..., n_params * D]. Both are plain MLPs here; any
``nn.Module`` with the same input/output shapes can be passed to ``VAE``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .linear import Linear

# encoder / decoder networks: the ones VAE.from_config builds (mlp here, conv in aevb.convnets), and
# "custom", a model of your own modules (VAE(encoder, decoder, ...), from Python only)
NETWORKS = ("mlp", "conv", "custom")

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "leaky-relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


# how the encoder's centred inputs x - m are scaled, s being the training data's standard deviation
# over all values: by 1 / s ("std"), by 1 / max(s, 1) ("shrink": a spread above 1 is brought to 1, a
# smaller one kept, so pixels in [0, 1] are centred only and real values on a large scale reach
# unit spread) or not at all ("none")
INPUT_SCALES = ("std", "shrink", "none")


def scale_of_centred_inputs(spread: float, rule: str) -> float:
    """The factor of centred inputs whose standard deviation over all values is ``spread``."""
    if rule == "none" or not spread > 0:
        return 1.0
    return 1.0 / (spread if rule == "std" else max(spread, 1.0))


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None


def mlp(n_in: int, hidden: Sequence[int], n_out: int, act: str = "relu") -> nn.Sequential:
    """n_in -> hidden[0] -> ... -> hidden[-1] -> n_out, with ``act`` after every hidden layer."""
    layers, width = [], n_in
    for h in hidden:
        layers += [Linear(width, int(h)), activation(act)]
        width = int(h)
    layers.append(Linear(width, n_out))
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """q(z|x) = N(mu(x), diag exp(log_var(x))): one MLP with a 2J-wide output layer."""

    def __init__(self, data_dim: int, hidden: Sequence[int], latent_dim: int, act: str = "relu"):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = mlp(data_dim, hidden, 2 * latent_dim, act)

    def forward(self, x: Tensor):
        mu, log_var = self.net(x).chunk(2, dim=-1)
        return mu, log_var


class MLPDecoder(nn.Module):
    """z [..., J] -> likelihood parameters [..., n_params * D]."""

    def __init__(self, latent_dim: int, hidden: Sequence[int], data_dim: int, n_params: int,
                 act: str = "relu"):
        super().__init__()
        self.net = mlp(latent_dim, hidden, n_params * data_dim, act)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)

    @torch.no_grad()
    def set_output_bias(self, bias: Tensor) -> None:
        """Set the output layer's bias [n_params * D] (a start at the data's mean)."""
        self.net[-1].bias.copy_(bias.to(self.net[-1].bias))


def init_normal_(module: nn.Module, std: Optional[float]) -> None:
    """Initialise every Linear weight and bias from N(0, std^2) (the AEVB paper's scheme).
    ``std=None`` keeps PyTorch's default initialisation."""
    if std is None:
        return
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, std)
                if m.bias is not None:
                    m.bias.normal_(0.0, std)
