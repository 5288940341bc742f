"""Optimisers and learning-rate schedules by name: the one declaration of each list.

``OPTIMIZERS`` and ``SCHEDULES`` are what the settings accept (aevb.config derives its checks
and the command line its choices from them) and what :func:`build_optimizer` and
:func:`build_scheduler` construct. Only torch is imported here, so the settings can use them.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch

# name -> torch optimizer class; weight decay is L2 on every parameter, momentum is SGD's only
OPTIMIZERS: Dict[str, type] = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}

# name -> (optimizer, OptimConfig, epochs) -> schedule stepped once per epoch
SCHEDULES: Dict[str, Callable] = {
    "constant": lambda opt, cfg, epochs: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=1.0),
    "step": lambda opt, cfg, epochs: torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_epochs, gamma=cfg.gamma),
    "exponential": lambda opt, cfg, epochs: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.gamma),
    "cosine": lambda opt, cfg, epochs: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs)),
}


def build_optimizer(params, cfg) -> torch.optim.Optimizer:
    """The optimizer an OptimConfig names, over ``params``.

    The fused implementations (one kernel over all parameters, CPU and CUDA) are used where this
    PyTorch has them: on a 2-core CPU they halve the optimizer's share of a step."""
    params = list(params)
    cls = OPTIMIZERS[cfg.optimizer]
    kw = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cls is torch.optim.SGD:
        kw["momentum"] = cfg.momentum
    devices = {p.device.type for p in params}
    if len(devices) == 1 and devices <= {"cpu", "cuda"}:
        try:
            return cls(params, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):  # no fused kernel for this build or device
            pass
    return cls(params, **kw)


def build_scheduler(opt, cfg, epochs: int):
    """The learning-rate schedule an OptimConfig names, stepped once per epoch."""
    return SCHEDULES[cfg.schedule](opt, cfg, epochs)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Learning-rate factor of step ``step`` (0-based) under a linear warm-up over ``warmup_steps``."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
