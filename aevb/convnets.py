"""Convolutional encoder and decoder with the same flat interface as the MLPs.

Data stay flat everywhere else in aevb: x [..., D] with D = C*H*W in (C, H, W) order. A conv
network reshapes to images internally from the data set's ``image_shape`` (C, H, W):

* ``ConvEncoder``: x [..., D] -> stride-2 convolutions (one stage per entry of ``channels``,
  each halving H and W, rounding up for odd kernels and down for even ones) -> flatten ->
  Linear -> (mu, log_var), each [..., J].
* ``ConvDecoder``: z [..., J] -> Linear -> [channels[-1], ceil(H/2^n), ceil(W/2^n)] ->
  transposed convolutions that exactly double H and W (output padding 2 + 2p - k per stage),
  through ``channels`` reversed, the last stage emitting n_params*C maps -> centre crop to
  H x W -> flat likelihood parameters [..., n_params * D], laid out as n_params blocks of D
  (the layout of ``MLPDecoder``, which every likelihood's ``log_prob`` expects).

Normalisation is per datapoint only (``norm='group'``: GroupNorm), so a datapoint's bound never
depends on the other datapoints of its batch. Convolutions run in channels_last memory format,
the faster layout for oneDNN (CPU) and cuDNN kernels.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

from .errors import ConfigError

# normalisation after each hidden convolution: none, or GroupNorm (per datapoint)
CONV_NORMS = ("none", "group")
from .linear import Linear
from .networks import activation


def stage_sizes(size: int, n_stages: int, kernel: int) -> List[int]:
    """Spatial sizes through ``n_stages`` stride-2 convolutions of ``kernel`` with padding
    (kernel-1)//2: [size, ...], n_stages + 1 entries (a size below 1 means it does not fit)."""
    pad = (kernel - 1) // 2
    out = [int(size)]
    for _ in range(n_stages):
        out.append((out[-1] + 2 * pad - kernel) // 2 + 1)
    return out


def max_stages(h: int, w: int, kernel: int) -> int:
    """How many stride-2 stages an H x W image allows: every stage's input at least 2 x 2."""
    n = 0
    while min(stage_sizes(h, n, kernel)[-1], stage_sizes(w, n, kernel)[-1]) >= 2:
        n += 1
    return n


def check_fits(image_shape, channels: Sequence[int], kernel: int, what: str = "conv network") -> Tuple[int, int, int]:
    """Raise ConfigError unless ``channels`` (one stride-2 stage each) fit an image of
    ``image_shape`` (C, H, W); returns (C, H, W) as ints."""
    if image_shape is None or len(tuple(image_shape)) != 3 or min(int(s) for s in tuple(image_shape)[1:]) < 2:
        raise ConfigError(
            f"a {what} needs the data's image shape (C, H, W) with H and W at least 2, but the data "
            f"have {'none' if image_shape is None else tuple(image_shape)} (flat vectors); for array: data "
            "save the images as [N, H, W], [N, C, H, W] or [N, H, W, C] instead of flat [N, D] rows, "
            "or use --network mlp")
    c, h, w = (int(s) for s in image_shape)
    n = len(channels)
    allowed = max_stages(h, w, kernel)
    if n > allowed:
        example = " ".join(str(int(x)) for x in list(channels)[:allowed])
        raise ConfigError(
            f"{what}: {n} stride-2 stages (--channels {' '.join(map(str, channels))}) do not fit "
            f"{h}x{w} images with kernel {kernel}: each stage halves height and width and at most "
            f"{allowed} fit; give at most {allowed} channel counts (e.g. --channels {example})")
    return c, h, w


def _norm(channels: int, kind: str) -> nn.Module:
    """GroupNorm with up to 32 groups (the largest divisor of ``channels`` that is <= 32), or none."""
    if kind == "none":
        return nn.Identity()
    groups = max(g for g in range(1, min(32, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ConvEncoder(nn.Module):
    """q(z|x) from strided convolutions: x [..., C*H*W] -> (mu, log_var), each [..., J]."""

    def __init__(self, image_shape, channels: Sequence[int], latent_dim: int, kernel: int = 4,
                 act: str = "relu", norm: str = "none", channels_last: bool = True):
        super().__init__()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.image_shape = check_fits(image_shape, channels, kernel, "conv encoder")
        self.latent_dim = latent_dim
        c, h, w = self.image_shape
        layers, width = [], c
        for ch in channels:
            layers += [nn.Conv2d(width, int(ch), kernel, stride=2, padding=(kernel - 1) // 2),
                       _norm(int(ch), norm), activation(act)]
            width = int(ch)
        self.conv = nn.Sequential(*layers)
        hn, wn = stage_sizes(h, len(channels), kernel)[-1], stage_sizes(w, len(channels), kernel)[-1]
        self.head = Linear(width * hn * wn, 2 * latent_dim)
        self.to(memory_format=self.memory_format)

    def forward(self, x: Tensor):
        lead = x.shape[:-1]
        img = x.reshape(-1, *self.image_shape).contiguous(memory_format=self.memory_format)
        h = self.conv(img).flatten(1)
        mu, log_var = self.head(h).reshape(*lead, 2 * self.latent_dim).chunk(2, dim=-1)
        return mu, log_var


class ConvDecoder(nn.Module):
    """Likelihood parameters from transposed convolutions: z [..., J] -> [..., n_params * C*H*W].

    ``channels`` are the encoder's (the decoder runs through them reversed). ``widest``: the
    largest activation per sample (floats), for sizing evaluation chunks against memory."""

    def __init__(self, latent_dim: int, channels: Sequence[int], image_shape, n_params: int,
                 kernel: int = 4, act: str = "relu", norm: str = "none", channels_last: bool = True):
        super().__init__()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.image_shape = check_fits(image_shape, channels, kernel, "conv decoder")
        c, h, w = self.image_shape
        self.n_params = n_params
        n = len(channels)
        self.start = (int(channels[-1]), math.ceil(h / 2 ** n), math.ceil(w / 2 ** n))
        self.fc = nn.Sequential(Linear(latent_dim, math.prod(self.start)), activation(act))
        pad = (kernel - 1) // 2
        out_pad = 2 + 2 * pad - kernel  # (in-1)*2 - 2p + k + out_pad = 2*in
        widths = list(reversed([int(ch) for ch in channels])) + [n_params * c]
        layers = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.ConvTranspose2d(a, b, kernel, stride=2, padding=pad, output_padding=out_pad))
            if i < n - 1:
                layers += [_norm(b, norm), activation(act)]
        self.deconv = nn.Sequential(*layers)
        self.out_size = (self.start[1] * 2 ** n, self.start[2] * 2 ** n)  # >= (H, W); centre-cropped
        sizes = [(self.start[1] * 2 ** i) * (self.start[2] * 2 ** i) for i in range(n + 1)]
        self.widest = max(wd * s for wd, s in zip(widths, sizes))
        self.to(memory_format=self.memory_format)

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)
        out = self.deconv(h.contiguous(memory_format=self.memory_format))
        c, hh, ww = self.image_shape
        top, left = (self.out_size[0] - hh) // 2, (self.out_size[1] - ww) // 2
        out = out[:, :, top:top + hh, left:left + ww]
        return out.reshape(*lead, self.n_params * c * hh * ww)

    @torch.no_grad()
    def set_output_bias(self, bias: Tensor) -> None:
        """Start the output at ``bias`` [n_params * C*H*W] as far as a per-map bias can: each of the
        n_params * C output maps takes the mean of its H*W values."""
        last = self.deconv[-1]
        last.bias.copy_(bias.reshape(last.bias.shape[0], -1).mean(1).to(last.bias))
