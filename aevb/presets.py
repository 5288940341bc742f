"""Named settings, applied over the defaults and under a config file and the command line.

Each preset is a nested dict in the config file's format, with its source named.
"""
from __future__ import annotations

# The defaults every preset below was written and measured with. Defaults are now chosen from the
# data (aevb.config.sizing) and new runs start with stabilisers (docs/stability.md); each preset
# states these values so that what it trains, and its measured numbers, stay as they were.
MEASURED_WITH = {
    "model": {"latent_dim": 20, "encoder_hidden": [400], "channels": [32, 64, 128, 256], "components": 1,
              "center_inputs": False, "output_bias_from_data": False},
    "optim": {"warmup_steps": 0, "fan_in_scale": 0},
    "train": {"batch_size": 128},
}

# Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders" (2016), one stochastic
# layer: 784-200-200-50 tanh, Bernoulli, Adam (beta1 0.9, beta2 0.999, eps 1e-4 in the
# paper; torch's eps here), batch 20, dynamically binarized MNIST.
IWAE_MNIST = {
    "data": {"dataset": "mnist", "binarize": "dynamic"},
    "model": {"latent_dim": 50, "encoder_hidden": [200, 200], "activation": "tanh", "likelihood": "bernoulli"},
    "optim": {"optimizer": "adam", "lr": 1e-3},
    "train": {"batch_size": 20},
}


def _iwae_mnist_with(**model) -> dict:
    """iwae-mnist with these model settings added."""
    return {**IWAE_MNIST, "model": {**IWAE_MNIST["model"], **model}}


PRESETS = {
    # A smaller model for the embedded digits (scikit-learn's 8x8 images): trains in seconds.
    # `aevb train` with no options uses the plain defaults (one 400-unit layer, 20 latents, 100 epochs).
    "digits": {
        "data": {"dataset": "digits"},
        "model": {"latent_dim": 8, "encoder_hidden": [256], "activation": "relu", "likelihood": "bernoulli"},
        "optim": {"optimizer": "adam", "lr": 1e-3},
        "train": {"batch_size": 64, "epochs": 100},
    },
    # pytorch/examples vae/main.py: 784-400-20 ReLU, Adam 1e-3, batch 128, 10 epochs,
    # Bernoulli (binary cross-entropy) on grey levels.
    "pytorch-example": {
        "model": {"latent_dim": 20, "encoder_hidden": [400], "activation": "relu", "likelihood": "bernoulli"},
        "objective": {"objective": "elbo", "kl": "analytic", "samples": 1},
        "optim": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "constant"},
        "train": {"batch_size": 128, "epochs": 10},
    },
    "iwae-mnist": IWAE_MNIST,
    # The same paper's two-layer model: stochastic layers of 100 and 50 units; two deterministic
    # tanh layers of 200 units between x and z1, two of 100 between z1 and z2; bottom-up
    # inference q(z1|x) q(z2|z1).
    "iwae-mnist-2layer": _iwae_mnist_with(latent_dim=None, latent_dims=[100, 50], latent_hidden=[100, 100]),
    # iwae-mnist's networks and training with the VampPrior of Tomczak & Welling, "VAE with a
    # VampPrior" (AISTATS 2018): 500 pseudo-inputs, as in their MNIST experiments.
    "vamp-mnist": _iwae_mnist_with(prior="vamp", pseudo_inputs=500),
    # iwae-mnist's networks and training with an inverse autoregressive flow posterior (Kingma
    # et al., "Improved Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016):
    # 2 IAF steps, as in their MNIST experiments.
    "iaf-mnist": _iwae_mnist_with(flow="iaf", flow_steps=2),
    # Kingma & Welling, "Auto-Encoding Variational Bayes" (2014), section 5 (docs/reproduction.md):
    # one tanh hidden layer of 500 units in encoder and decoder, Bernoulli decoder, parameters
    # from N(0, 0.01) (read as standard deviation 0.01), minibatch 100, L = 1, Adagrad with a
    # step size from {0.01, 0.02, 0.1} (0.02 here; 0.01 for Frey Face), and a N(0, I) prior on the parameters. The
    # paper maximises sum_i ELBO_i + log p(theta); the trainer minimises the per-datapoint mean,
    # so the prior is weight decay 1/N = 1/60000. 1667 epochs = the paper's 10^8 samples.
    "aevb-mnist": {
        "data": {"dataset": "mnist"},
        "model": {"latent_dim": 20, "encoder_hidden": [500], "decoder_hidden": [500], "activation": "tanh",
                  "likelihood": "bernoulli", "init_std": 0.01},
        "objective": {"objective": "elbo", "kl": "analytic", "samples": 1},
        "optim": {"optimizer": "adagrad", "lr": 0.02, "weight_decay": 1.0 / 60000, "schedule": "constant"},
        "train": {"batch_size": 100, "epochs": 1667},
    },
    # The same for Frey Face: 200 hidden units, a Gaussian decoder whose mean passes through a
    # sigmoid (pixels in [0, 1]) with a learned diagonal variance; weight decay 1/N with N = 1769
    # (aevb's Frey Face training split); 5653 epochs = 10^7 samples.
    "aevb-frey": {
        "data": {"dataset": "frey-face"},
        "model": {"latent_dim": 10, "encoder_hidden": [200], "decoder_hidden": [200], "activation": "tanh",
                  "likelihood": "gaussian", "mean_activation": "sigmoid", "init_std": 0.01},
        "objective": {"objective": "elbo", "kl": "analytic", "samples": 1},
        "optim": {"optimizer": "adagrad", "lr": 0.01, "weight_decay": 1.0 / 1769, "schedule": "constant"},
        "train": {"batch_size": 100, "epochs": 5653},
    },
    # The seed's model (shared/seeds/003): a Bernoulli MLP VAE on full 3x218x178 CelebA images
    # (D = 116412), 116412-1164-116-10 ReLU encoder and its mirror decoder, Bernoulli on [0, 1]
    # intensities. Optimiser, batch and warm-up are aevb's choice (not in the seed): with
    # Adam 1e-3 the first layer's 116412 non-negative inputs move each unit's pre-activation by
    # about lr * sum(x) ~ 50 per step and the loss blows up (7.5e10 nats in epoch 1); a linear
    # warm-up to the rate trains smoothly from the first step. Batch 128 with Adam 4e-4 after 50
    # warm-up steps (batch 64 with Adam 1e-4 after 100 before): a step's optimizer work (271 M
    # weights and two moments each) is shared by twice the images, 1.25x the images per second in
    # bfloat16 and 1.32x in float32, and the test ELBO on the CelebA subset was higher after 10
    # epochs in both precisions (benchmarks/RESULTS.md, "celeba-mlp: batch 128").
    "celeba-mlp": {
        "data": {"dataset": "celeba"},
        "model": {"latent_dim": 10, "encoder_hidden": [1164, 116], "activation": "relu", "likelihood": "bernoulli"},
        "objective": {"objective": "elbo", "kl": "analytic", "samples": 1},
        "optim": {"optimizer": "adam", "lr": 4e-4, "warmup_steps": 50, "schedule": "constant"},
        "train": {"batch_size": 128, "epochs": 10},
    },
    # Convolutional VAE for dynamically binarized MNIST. Network of the TensorFlow tutorial
    # "Convolutional Variational Autoencoder" (tensorflow.org/tutorials/generative/cvae): two
    # stride-2 3x3 convolutions with 32 and 64 filters and ReLU, mirrored by transposed
    # convolutions, Bernoulli logits. Latent size 50, Adam 1e-3 and batch 100 as in the
    # iwae-mnist comparison of README (the tutorial: 2 latents, Adam 1e-4, batch 32).
    "conv-mnist": {
        "data": {"dataset": "mnist", "binarize": "dynamic"},
        "model": {"encoder_network": "conv", "decoder_network": "conv", "channels": [32, 64], "kernel_size": 3,
                  "activation": "relu", "latent_dim": 50, "likelihood": "bernoulli"},
        "optim": {"optimizer": "adam", "lr": 1e-3},
        "train": {"batch_size": 100},
    },
    # CelebA 64x64: the network of Hou et al., "Deep Feature Consistent Variational Autoencoder"
    # (WACV 2017, arXiv:1610.00291), the widely used conv VAE of that size: faces centre-cropped
    # to 148x148 and resized to 64x64; 4 stride-2 4x4 convolutions with 32, 64, 128, 256 channels
    # and LeakyReLU, 100 latents; Adam, learning rate 5e-4, batch 64. Departures: no BatchNorm
    # (a datapoint's bound must not depend on its batch; GroupNorm, --conv-norm group, cost 25 %
    # more time per step on the 2-core CPU and blocks the bf16 speed-up), transposed 4x4
    # convolutions instead of nearest upsampling + 3x3 convolutions, and the discretized
    # logistic (PixelCNN++) instead of their perceptual loss, so bits/dim are honest.
    "conv-celeba64": {
        "data": {"dataset": "celeba", "image_size": [64, 64], "crop": [148, 148]},
        "model": {"encoder_network": "conv", "decoder_network": "conv", "channels": [32, 64, 128, 256],
                  "kernel_size": 4, "activation": "leaky-relu", "conv_norm": "none", "latent_dim": 100,
                  "likelihood": "discretized-logistic", "components": 1},
        "optim": {"optimizer": "adam", "lr": 5e-4},
        "train": {"batch_size": 64},
    },
    # 32x32 colour images from `--dataset folder:PATH` (train/CLASS/*.png and test/CLASS/*.png,
    # e.g. CIFAR-10 exported as PNG). The DCGAN discriminator/generator pair of Radford et al.
    # (ICLR 2016) at 32x32: stride-2 4x4 convolutions with 64, 128, 256 channels, LeakyReLU,
    # mirrored by transposed convolutions; 128 latents; a 3-component discretized logistic
    # mixture per value (PixelCNN++'s likelihood without its channel coupling); Adam 1e-3, batch 64.
    "conv-rgb32": {
        "data": {"image_size": [32, 32], "color": "rgb"},
        "model": {"encoder_network": "conv", "decoder_network": "conv", "channels": [64, 128, 256],
                  "kernel_size": 4, "activation": "leaky-relu", "conv_norm": "none", "latent_dim": 128,
                  "likelihood": "discretized-logistic", "components": 3},
        "optim": {"optimizer": "adam", "lr": 1e-3},
        "train": {"batch_size": 64},
    },
}


# Presets measured with today's defaults (the stabilisers and sizes of docs/stability.md): they
# are not pinned to MEASURED_WITH. Without centred inputs and the decoder's bias at the data's
# mean, a VampPrior on MNIST (tanh networks, Adam 1e-3) sat at the mean image with KL ~ 0 for all
# 27 epochs it trained: every posterior, the pseudo-inputs' too, stayed alike, so the mixture prior
# matched them at no cost while the decoder learned to ignore z.
# They were measured with the encoder's centred inputs divided by the data's spread, the one
# input scale there was then: they keep it (model.input_scale "std"), not the MLP choice of today.
CURRENT_DEFAULTS = {"iwae-mnist-2layer", "vamp-mnist", "iaf-mnist"}
for _name in CURRENT_DEFAULTS:
    PRESETS[_name]["model"] = {"input_scale": "std", **PRESETS[_name]["model"]}

PRESETS = {name: {sec: {**({} if name in CURRENT_DEFAULTS else MEASURED_WITH.get(sec, {})), **preset.get(sec, {})}
                  for sec in {*({} if name in CURRENT_DEFAULTS else MEASURED_WITH), *preset}}
           for name, preset in PRESETS.items()}
