"""Optimisers and learning-rate schedules by name: the one declaration of each list.

``OPTIMIZERS`` and ``SCHEDULES`` are what the settings accept (aevb.config derives its checks
and the command line its choices from them) and what :func:`build_optimizer` and
:func:`build_scheduler` construct. Only torch is imported here, so the settings can use them.
"""
from __future__ import annotations

import math
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


def fan_in_factor(weight: torch.nn.Parameter, module: torch.nn.Module, scale: int) -> float:
    """The learning-rate factor sqrt(scale / n) of a Linear or Conv2d weight with fan-in n > scale
    (1 otherwise, and for biases and every other parameter).

    Adam moves each weight by about lr per step whatever its gradient's size, and early on all
    of a unit's weights move together, so its pre-activation moves by about lr * n * |x|: with
    n = 116,412 (a full-size colour photo) that is tens of units per step, and the bound
    overflows within a few steps. Scaling by sqrt(scale / n) caps that growth at
    lr * sqrt(scale * n) * |x| and leaves every layer of fan-in <= scale (all of MNIST's) as it was."""
    if not scale or weight is not getattr(module, "weight", None) or not isinstance(
            module, (torch.nn.Linear, torch.nn.Conv2d)):
        return 1.0
    fan_in = weight[0].numel()
    return min(1.0, math.sqrt(scale / fan_in))


def param_groups(model: torch.nn.Module, lr: float, scale: int) -> list:
    """Parameter groups of ``model`` with their learning rates (fan_in_factor); one group when no
    weight is scaled, so runs without scaling keep the optimizer state they always had."""
    factors = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            factors[p] = fan_in_factor(p, module, scale)
    params = [p for p in model.parameters()]
    if all(factors.get(p, 1.0) == 1.0 for p in params):
        return [{"params": params, "lr": lr}]
    groups: Dict[float, list] = {}
    for p in params:
        groups.setdefault(factors.get(p, 1.0), []).append(p)
    return [{"params": ps, "lr": lr * f} for f, ps in sorted(groups.items(), reverse=True)]


def build_optimizer(params, cfg) -> torch.optim.Optimizer:
    """The optimizer an OptimConfig names, over ``params`` (an iterable of tensors, or a module:
    then weights of fan-in above ``cfg.fan_in_scale`` learn slower, see fan_in_factor).

    The fused implementations (one kernel over all parameters, CPU and CUDA) are used where this
    PyTorch has them: on a 2-core CPU they halve the optimizer's share of a step."""
    if isinstance(params, torch.nn.Module):
        groups = param_groups(params, cfg.lr, getattr(cfg, "fan_in_scale", 0))
    else:
        groups = [{"params": list(params), "lr": cfg.lr}]
    cls = OPTIMIZERS[cfg.optimizer]
    kw = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cls is torch.optim.SGD:
        kw["momentum"] = cfg.momentum
    devices = {p.device.type for g in groups for p in g["params"]}
    if len(devices) == 1 and devices <= {"cpu", "cuda"}:
        try:
            return cls(groups, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):  # no fused kernel for this build or device
            pass
    return cls(groups, **kw)


def build_scheduler(opt, cfg, epochs: int):
    """The learning-rate schedule an OptimConfig names, stepped once per epoch."""
    return SCHEDULES[cfg.schedule](opt, cfg, epochs)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Learning-rate factor of step ``step`` (0-based) under a linear warm-up over ``warmup_steps``."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
