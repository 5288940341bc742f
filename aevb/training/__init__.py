"""Training a run: the loop (loop.py) and the parts around it, one job each.

``objective.py`` the bound and loss of a step; ``state.py`` checkpoints and exact resume;
``session.py`` the run folder's life cycle (``RunLifecycle``) and the checks before it is written;
``callbacks.py`` the ``Callback`` hooks and the built-in callbacks (best epoch and best.pt, early
stop, last.pt, metrics files, image grids, TensorBoard, progress); ``report.py`` the figures and
report.html at the end of a run; ``loggers.py`` Weights & Biases and MLflow.
"""
from .callbacks import Callback
from .loop import Trainer, resume, train

__all__ = ["Callback", "Trainer", "resume", "train"]
