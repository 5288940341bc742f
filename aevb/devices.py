"""Device names: parsing and resolving ``auto``, ``cpu``, ``cuda``, ``cuda:N`` and ``mps``.

The one place where a device is chosen; everything else takes the ``torch.device`` it returns.
"""
from __future__ import annotations

import contextlib
import sys
import time

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


# bfloat16 products at less than this share of float32's speed on the CPU get a warning
SLOW_BF16 = 0.9
_bf16_speed = {}  # device type -> bf16_speed, measured once per process
_bf16_looked_at = set()  # device types whose bf16 speed a precision context has looked at


def precision_context(device: torch.device, precision: str):
    """The arithmetic of the networks within it: ``bf16`` runs their matrix products and
    convolutions in bfloat16 autocast on the CPU and CUDA (about 2x faster products on CPUs whose
    AVX512-BF16 runs at twice the float32 rate, such as AMD's Zen 4, or with AMX, and on recent
    GPUs; half as fast on an Intel Xeon without AMX, which the first bf16 context of a process
    warns of: see :func:`bf16_speed`); the VAE casts the networks' outputs back, so bounds, KL
    terms and log-sum-exps are computed in float32. ``fp32`` (and other devices) change nothing."""
    enabled = effective_precision(device, precision) == "bf16"
    if enabled and device.type == "cpu" and device.type not in _bf16_looked_at:
        _bf16_looked_at.add(device.type)
        warn_if_bf16_is_slow(device)
    if not enabled and autocast_dtype("cpu") is None:  # nothing to switch off (a training step saves its cost)
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type if enabled else "cpu", dtype=torch.bfloat16, enabled=enabled)


def autocast_dtype(kind: str):
    """The dtype autocast lowers to on device kind ``kind`` (``cpu`` or ``cuda``) where it is on
    (a caller's own or a precision context), else None."""
    if kind not in ("cpu", "cuda"):
        return None
    try:
        on, dtype = torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind)
    except (TypeError, AttributeError):  # torch < 2.4: one function per device kind
        if kind == "cpu":
            on, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
        else:
            on, dtype = torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
    return dtype if on else None


def bf16_speed(device: torch.device, size: int = 1024, rows: int = 256) -> float:
    """How fast a bfloat16 matrix product runs on ``device`` against a float32 one (2.0: twice
    as fast): a ``rows`` x ``size`` batch through a ``size`` x ``size`` layer, the best of five
    of each in turn, a few milliseconds in all. Measured once per process and device type."""
    if device.type not in _bf16_speed:
        with torch.no_grad(), torch.autocast(device_type="cpu", enabled=False):
            noise = torch.Generator(device=device).manual_seed(0)  # (the global stream is the model's own)
            x = torch.randn(rows, size, device=device, generator=noise)
            w = torch.randn(size, size, device=device, generator=noise) / size ** 0.5
            pairs = {torch.float32: (x, w), torch.bfloat16: (x.bfloat16(), w.bfloat16())}
            times = {dtype: [] for dtype in pairs}
            for _ in range(6):
                for dtype, (a, b) in pairs.items():
                    t0 = time.perf_counter()
                    torch.nn.functional.linear(a, b)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    times[dtype].append(time.perf_counter() - t0)
        best = {dtype: min(t[1:]) for dtype, t in times.items()}  # the first round warms up
        _bf16_speed[device.type] = best[torch.float32] / best[torch.bfloat16]
    return _bf16_speed[device.type]


def warn_if_bf16_is_slow(device: torch.device) -> None:
    """One line on stderr where bfloat16 products on ``device`` run at less than SLOW_BF16 of
    float32's speed: --precision bf16 then makes a model slower, not faster."""
    speed = bf16_speed(device)
    if speed < SLOW_BF16:
        print(f"aevb: warning: on this {device.type.upper()} bfloat16 matrix products run at {speed:.2f}x the speed "
              "of float32 (measured just now), so precision bf16 makes the networks slower here, not faster; "
              "fp32 is the faster choice on this machine", file=sys.stderr, flush=True)


def effective_precision(device: torch.device, precision: str) -> str:
    """The precision :func:`precision_context` runs on ``device``: bf16 only on the CPU and CUDA."""
    return "bf16" if precision == "bf16" and device.type in ("cpu", "cuda") else "fp32"


def check_precision(precision, option: str = "precision") -> str:
    """``precision`` when it is one of PRECISIONS; else a ConfigError naming ``option``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{option} must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision
