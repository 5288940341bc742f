"""Bits per dimension: a log-likelihood in nats per datapoint as bits per data value, and the
convention that says when it is defined for the data and the likelihood (and with what offset).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

LN2 = math.log(2.0)


def bits_per_dim(log_px_nats, dim: int, offset_bits: float = 0.0):
    """Bits per dimension from a log-likelihood in nats per datapoint over ``dim`` values:
    -log p(x) / (dim ln 2) + ``offset_bits`` (the offset turns a density into bin probabilities,
    see :func:`bpd_convention`). Works on floats, arrays and tensors."""
    return -log_px_nats / (dim * LN2) + offset_bits


def bpd_convention(kind: str, levels: Optional[int], likelihood: str) -> Tuple[Optional[float], str]:
    """(offset in bits, explanation) for bits per dimension, or (None, why not) when the bound is
    not a likelihood of discrete data.

    - binary data with a Bernoulli likelihood: the bound is a log-probability; bpd = -L/(D ln 2).
    - data on a grid of ``levels`` values scaled to [0, 1] (8-bit images: 256 levels, spacing
      1/255) under a density (gaussian likelihoods): the probability of a value's bin is taken as
      density x bin width, so bpd = -L/(D ln 2) + log2(levels - 1). This is the usual convention
      for continuous models of quantised data; it bounds the discrete likelihood strictly only for
      models trained on uniformly dequantised data.
    - 8-bit data under the discretized logistic: the bound is already a log-probability of the
      levels; bpd = -L/(D ln 2), no offset.
    - a Bernoulli likelihood on grey levels is a cross-entropy, not a distribution over the
      levels; real-valued data have no bins: no bits per dimension.
    """
    binary = kind == "binary" or levels == 2
    if likelihood == "discretized-logistic":
        if levels == 256:
            return 0.0, ("8-bit data, discretized logistic: a probability mass on each of the 256 levels, so "
                         "bits/dim = -L / (D ln 2) exactly (the convention of published CIFAR-10 / CelebA numbers)")
        return None, f"not reported: the discretized logistic needs data on 256 levels, these have {levels}"
    if likelihood == "bernoulli":
        if binary:
            return 0.0, "binary data, Bernoulli likelihood: bits/dim = -L / (D ln 2) (exact log-probability)"
        return None, ("not reported: a Bernoulli likelihood on non-binary values is a cross-entropy, "
                      "not a normalised distribution over the data's values")
    if levels and levels > 2 and kind in ("unit", "binary"):
        off = math.log2(levels - 1)
        return off, (f"values on a grid of {levels} levels in [0, 1] (spacing 1/{levels - 1}) under a density: "
                     f"bits/dim = -L / (D ln 2) + log2({levels - 1}) = -L / (D ln 2) + {off:.4f} "
                     "(bin probability = density x bin width; a strict bound only for dequantised training)")
    return None, "not reported: the data are not discrete (no quantisation levels known)"
