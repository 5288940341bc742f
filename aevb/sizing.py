"""Network and batch sizes, and the encoder's input scale, chosen from the data when the user gives none.

A setting left unset (None) in ``model.latent_dim``, ``model.encoder_hidden``,
``model.channels``, ``model.components`` or ``train.batch_size`` is chosen here from the data's
shape (C, H, W) and D = C*H*W values per datapoint, so one command suits 8x8 digits and
218x178 colour photos alike (``aevb.config.rules.resolve`` fills them and the run's
config.json keeps them, so a resume never chooses again). The rules (docs/stability.md gives the
reasons):

* up to 2,048 values (digits, MNIST, Frey Face): one hidden layer of 400 units and 20 latents,
  batch 128 (the PyTorch example's MNIST model, which these defaults always were);
* up to 16,384 values (32x32 or 64x64 colour, 64x64 grey): MLP 1024-256 with 32 latents, or conv
  networks with 128 latents (the DCGAN-sized 32x32 model) and batch 64;
* above that (full-size photos): MLP 512-128 with 32 latents, batch 64, so the two D-wide layers
  hold 2 x 512 x D weights, not 2 x 1024 x D;
* conv networks: stride-2 stages until the smaller side is at most 4 (or no further stage fits),
  with 64, 128, 256 channels for images up to 32 pixels on their smaller side and 32, 64, 128,
  256, 256, ... for larger ones;
* the discretized logistic: a mixture of 3 components (one component learns visibly slower on
  colour images); every other likelihood has one;
* a small training set: the batch is halved (down to MIN_BATCH) while an epoch would take fewer
  than MIN_STEPS steps (digits' 1,437 training images: batch 64);
* the centred inputs' scale (``model.input_scale``, aevb.networks.scale_of_centred_inputs):
  "shrink" (divided by their standard deviation s only where s > 1) for an MLP on up to 2,048
  values, which learned worse from pixels amplified by 1 / s; "std" (divided by s) for larger
  inputs and conv encoders, which learned better with it (docs/stability.md).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

from .convnets import max_stages, stage_sizes

SMALL, MEDIUM = 2048, 16384  # values per datapoint
MIN_STEPS, MIN_BATCH = 16, 32  # steps per epoch a small training set keeps by smaller batches, down to this batch
LOGISTIC_COMPONENTS = 3  # mixture components of the discretized logistic


def conv_channels(h: int, w: int, kernel: int) -> List[int]:
    """Channels of the stride-2 stages for an H x W image: halve until the smaller side is at most
    4; 64 channels first for small images (smaller side <= 32), else 32; doubling up to 256."""
    allowed = max_stages(h, w, kernel)
    n = 0
    while n < allowed and min(stage_sizes(h, n, kernel)[-1], stage_sizes(w, n, kernel)[-1]) > 4:
        n += 1
    base = 64 if min(h, w) <= 32 else 32
    return [min(256, base * 2 ** i) for i in range(max(n, 1))]


def latent_size(dim: int, conv: bool) -> int:
    """Latents for D = ``dim`` values per datapoint."""
    return 20 if dim <= SMALL else (128 if conv else 32)


def hidden_sizes(dim: int) -> List[int]:
    """MLP hidden layers (the encoder's; the decoder mirrors them)."""
    return [400] if dim <= SMALL else ([1024, 256] if dim <= MEDIUM else [512, 128])


def batch_size(dim: int, conv: bool, n_train: Optional[int] = None) -> int:
    """Training minibatch size for D = ``dim`` values per datapoint and ``n_train`` training
    datapoints (None: not known, the largest batch the rule gives)."""
    batch = 64 if (conv and dim > SMALL) or dim > MEDIUM else 128
    while n_train is not None and batch > MIN_BATCH and n_train < MIN_STEPS * batch:
        batch //= 2
    return batch


def input_scale(network: str, dim: int) -> str:
    """How the encoder's centred inputs are scaled (aevb.networks.INPUT_SCALES) for an encoder
    ``network`` reading D = ``dim`` values: "shrink" for aevb's MLP on up to SMALL values, "std"
    for larger inputs, conv networks and a model of your own modules (as ``VAE(...,
    center_inputs=True)`` does)."""
    return "shrink" if network == "mlp" and dim <= SMALL else "std"


def mixture_components(likelihood: Optional[str]) -> int:
    """Mixture components per value of the likelihood."""
    return LOGISTIC_COMPONENTS if likelihood == "discretized-logistic" else 1


def model_sizes(model_cfg, image_shape: Sequence[int]) -> dict:
    """{setting name: value} for every unset size of a ModelConfig on data of ``image_shape``."""
    c, h, w = (int(s) for s in image_shape)
    dim, m = c * h * w, model_cfg
    conv = "conv" in (m.encoder_network, m.decoder_network)
    stacked = getattr(m, "latent_dims", None)
    chosen = {"latent_dim": sum(stacked) if stacked else latent_size(dim, conv), "encoder_hidden": hidden_sizes(dim),
              "channels": conv_channels(h, w, m.kernel_size), "components": mixture_components(m.likelihood),
              "input_scale": input_scale(m.encoder_network, dim)}
    return {k: v for k, v in chosen.items() if getattr(m, k) is None}
