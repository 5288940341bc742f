"""aevb: Variational Autoencoders as in Auto-Encoding Variational Bayes (Kingma & Welling, 2014).

Quick use::

    import aevb
    run = aevb.fit(None, "digits", epochs=20, out="runs/digits")   # scikit-learn digits, no download
    model = run.load_model()                  # an nn.Module: model(x).loss, model.encode(x), model.decode(z)
    run = aevb.fit(aevb.VAE.for_data(x), x)   # your own tensor, array, Dataset or DataLoader
    model = aevb.VAE.from_pretrained("runs/digits")
"""
from .version import __version__
from .config import RunConfig, DataConfig, ModelConfig, ObjectiveConfig, OptimConfig, TrainConfig  # noqa: E402
from .model import VAE, BoundTerms  # noqa: E402
from .runs import Run, load_run  # noqa: E402
from .training.callbacks import Callback  # noqa: E402


def fit(*args, **kwargs):
    """Train a model on data into a run folder -> Run (see :func:`aevb.api.fit`)."""
    from .api import fit as _fit

    return _fit(*args, **kwargs)


def load(path, encoder=None, decoder=None):
    """The run in the folder ``path`` -> Run; a run of your own modules needs instances of them
    (see :func:`aevb.api.load`)."""
    from .api import load as _load

    return _load(path, encoder=encoder, decoder=decoder)


def resume(*args, **kwargs):
    """Continue a run: ``resume(run, epochs=N, **changes)`` -> Run (see :func:`aevb.training.resume`)."""
    from .training import resume as _resume

    return _resume(*args, **kwargs)


def train(*args, **kwargs):
    """Train a new run: ``train(cfg, out, overwrite=False, data=None, callbacks=(), model=None)`` -> Run."""
    from .training import train as _train

    return _train(*args, **kwargs)


def load_safetensors(path, device="cpu"):
    """The VAE in a ``model.safetensors`` written by ``aevb export`` (``VAE.from_pretrained``)."""
    return VAE.from_pretrained(path, device=device)


__all__ = ["fit", "load", "resume", "Callback", "VAE", "BoundTerms", "Run", "RunConfig", "DataConfig", "ModelConfig",
           "ObjectiveConfig", "OptimConfig", "TrainConfig", "load_run", "train", "load_safetensors", "__version__"]
