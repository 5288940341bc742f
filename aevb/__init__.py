"""aevb: Variational Autoencoders as in Auto-Encoding Variational Bayes (Kingma & Welling, 2014).

Quick use::

    from aevb import RunConfig, train, load_run
    run = train(RunConfig(), "runs/digits")      # scikit-learn digits, no download
    model = run.load_model()
"""
from .version import __version__
from .config import RunConfig, DataConfig, ModelConfig, ObjectiveConfig, OptimConfig, TrainConfig  # noqa: E402
from .model import VAE, BoundTerms  # noqa: E402
from .runs import Run, load_run  # noqa: E402


def train(*args, **kwargs):
    """Train a new run: ``train(cfg, out, overwrite=False, data=None, callbacks=())`` -> Run."""
    from .training import train as _train

    return _train(*args, **kwargs)


def load_safetensors(path, device="cpu"):
    """The VAE in a ``model.safetensors`` written by ``aevb export`` (see aevb.export)."""
    from .export import load_safetensors as _load

    return _load(path, device)


__all__ = ["load_safetensors", "RunConfig", "DataConfig", "ModelConfig", "ObjectiveConfig", "OptimConfig", "TrainConfig",
           "VAE", "BoundTerms", "Run", "load_run", "train", "__version__"]
