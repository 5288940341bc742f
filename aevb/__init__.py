"""aevb: Variational Autoencoders as in Auto-Encoding Variational Bayes (Kingma & Welling, 2014).

Quick use::

    import aevb
    run = aevb.fit(None, "digits", epochs=20, out="runs/digits")   # scikit-learn digits, no download
    model = run.load_model()                  # an nn.Module: model(x).loss, model.encode(x), model.decode(z)
    run = aevb.fit(aevb.VAE.for_data(x), x)   # your own tensor, array, Dataset or DataLoader
    model = aevb.VAE.from_pretrained("runs/digits")
"""
from .version import __version__
from .errors import ConfigError  # noqa: E402
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


def train(cfg=None, out=None, overwrite=False, data=None, callbacks=(), model=None):
    """Train a new run of ``cfg`` (a RunConfig) into ``out`` -> Run: ``aevb.fit(model or cfg,
    data or cfg.data.dataset, out=out, ...)``; ``data`` is anything ``fit`` takes."""
    from .api import fit as _fit

    if model is not None and cfg is not None:
        raise ConfigError("aevb.train(cfg, model=...): give the model's settings to the model (VAE.for_data) and "
                          "train it with aevb.fit(model, data, **settings)")
    source = data if data is not None else (cfg.data.dataset if cfg is not None else "digits")
    return _fit(model if model is not None else cfg, source, out=out, overwrite=overwrite, callbacks=callbacks)


def load_safetensors(path, device="cpu"):
    """The VAE in a ``model.safetensors`` written by ``aevb export`` (``VAE.from_pretrained``)."""
    return VAE.from_pretrained(path, device=device)


__all__ = ["fit", "load", "resume", "Callback", "VAE", "BoundTerms", "Run", "RunConfig", "DataConfig", "ModelConfig",
           "ObjectiveConfig", "OptimConfig", "TrainConfig", "load_run", "train", "load_safetensors", "__version__"]
