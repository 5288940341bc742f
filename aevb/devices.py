"""Device names: parsing and resolving ``auto``, ``cpu``, ``cuda``, ``cuda:N`` and ``mps``.

The one place where a device is chosen; everything else takes the ``torch.device`` it returns.
"""
from __future__ import annotations

import torch

from .errors import ConfigError, RunError

# arithmetic of the networks in a training step, an evaluation or scoring: float32, or bfloat16
# autocast (precision_context)
PRECISIONS = ("fp32", "bf16")

DEVICE_TYPES = ("cpu", "cuda", "mps")


def parse_device(name) -> torch.device:
    """A device name as a torch.device: auto is not accepted here; cpu, cuda, cuda:N, mps."""
    bad = RunError(f"device {name!r} is not a device name; use auto, cpu, cuda, cuda:N or mps")
    if not isinstance(name, str) or not name.strip():
        raise bad
    try:
        dev = torch.device(name.strip())
    except (RuntimeError, ValueError, TypeError):
        raise bad from None
    if dev.type not in DEVICE_TYPES or (dev.index is not None and dev.index < 0):
        raise bad
    return dev


def resolve_device(name: str = "auto", cpu_advice: str = "--device cpu") -> torch.device:
    """The torch.device for a name (auto: CUDA, else MPS, else CPU); refuses devices that are
    not available here, advising ``cpu_advice`` (the command line's option, or a Python
    argument such as ``device='cpu'``)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = parse_device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RunError(f"device {name!r} was asked for but CUDA is not available here; use {cpu_advice}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RunError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                           f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                  and torch.backends.mps.is_available()):
        raise RunError(f"device {name!r} was asked for but MPS is not available here; use {cpu_advice}")
    return dev


def precision_context(device: torch.device, precision: str):
    """The arithmetic of the networks within it: ``bf16`` runs their matrix products and
    convolutions in bfloat16 autocast on the CPU and CUDA (about 2x faster products on CPUs with
    AVX512-BF16 or AMX and on recent GPUs); the VAE casts the networks' outputs back, so bounds,
    KL terms and log-sum-exps are computed in float32. ``fp32`` (and other devices) change nothing."""
    enabled = effective_precision(device, precision) == "bf16"
    return torch.autocast(device_type=device.type if enabled else "cpu", dtype=torch.bfloat16, enabled=enabled)


def effective_precision(device: torch.device, precision: str) -> str:
    """The precision :func:`precision_context` runs on ``device``: bf16 only on the CPU and CUDA."""
    return "bf16" if precision == "bf16" and device.type in ("cpu", "cuda") else "fp32"


def check_precision(precision, option: str = "precision") -> str:
    """``precision`` when it is one of PRECISIONS; else a ConfigError naming ``option``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{option} must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision
