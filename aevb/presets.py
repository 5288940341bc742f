"""Named settings, applied over the defaults and under a config file and the command line.

Each preset is a nested dict in the config file's format, with its source named.
"""
from __future__ import annotations

from .config import ConfigError, RunConfig, merge

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
    # Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders" (2016), one stochastic
    # layer: 784-200-200-50 tanh, Bernoulli, Adam (beta1 0.9, beta2 0.999, eps 1e-4 in the
    # paper; torch's eps here), batch 20, dynamically binarized MNIST.
    "iwae-mnist": {
        "data": {"dataset": "mnist", "binarize": "dynamic"},
        "model": {"latent_dim": 50, "encoder_hidden": [200, 200], "activation": "tanh", "likelihood": "bernoulli"},
        "optim": {"optimizer": "adam", "lr": 1e-3},
        "train": {"batch_size": 20},
    },
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
    # about lr * sum(x) ~ 50 per step and the loss blows up (7.5e10 nats in epoch 1); Adam 1e-4
    # reached after a linear warm-up over 100 steps trains smoothly from the first step.
    "celeba-mlp": {
        "data": {"dataset": "celeba"},
        "model": {"latent_dim": 10, "encoder_hidden": [1164, 116], "activation": "relu", "likelihood": "bernoulli"},
        "objective": {"objective": "elbo", "kl": "analytic", "samples": 1},
        "optim": {"optimizer": "adam", "lr": 1e-4, "warmup_steps": 100, "schedule": "constant"},
        "train": {"batch_size": 64, "eval_batch_size": 200, "epochs": 10},
    },
}


def apply_preset(cfg: RunConfig, name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    out = merge(cfg, PRESETS[name], source=f"preset {name}", where=lambda k: f"preset {name}")
    out.preset = name
    return out
