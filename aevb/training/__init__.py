"""Training a run: the loop (loop.py) and the parts around it, one job each.

``objective.py`` the bound and loss of a step; ``state.py`` checkpoints and exact resume;
``session.py`` the run folder's life cycle and the checks before it is written;
``callbacks.py`` metrics, image grids, TensorBoard, progress and the ``Callback`` hooks.
"""
from .callbacks import Callback
from .loop import Trainer, resume, train

__all__ = ["Callback", "Trainer", "resume", "train"]
