"""The tests a setting's value must pass (beyond its type): numeric intervals, choices, layer
sizes, image sizes, byte sizes, hold-out counts and device names; each a predicate with the
words a refusal uses."""
from __future__ import annotations

from ..data.cache import parse_size
from ..devices import RunError, parse_device


def between(lo=None, hi=None, lo_open=False, hi_open=False):
    def ok(v):
        return ((lo is None or (v > lo if lo_open else v >= lo)) and
                (hi is None or (v < hi if hi_open else v <= hi)))
    text = " and ".join(t for t in (
        None if lo is None else f"{'>' if lo_open else '>='} {lo:g}",
        None if hi is None else f"{'<' if hi_open else '<='} {hi:g}") if t)
    return ok, f"a number {text}"


# A seed, wherever one is taken (training, data splits, every command's --seed): NumPy's
# RandomState, which splits the data, takes seeds below 2**32.
SEED_MAX = 2 ** 32 - 1
SEEDS = (0, SEED_MAX)

# CPU threads for PyTorch (train.threads, --threads of every command that takes it).
THREADS = (1, 4096)


def integers(lo: int, hi: int):
    """An integer setting in lo..hi: (predicate, words)."""
    return (lambda v: lo <= v <= hi), f"an integer in {lo}..{hi}"


def choice(*allowed):
    return (lambda v: v in allowed), "one of " + ", ".join("none" if a is None else str(a) for a in allowed)


def layer_sizes(v):
    return all(1 <= h <= 1_000_000 for h in v)


def two_sizes(v):
    return len(v) == 2 and all(1 <= s <= 16384 for s in v)


def byte_size(v):
    if v.strip().lower() == "auto":
        return True
    try:
        parse_size(v)
    except ValueError:
        return False
    return True


def too_large(key: str, v) -> bool:
    """A size written correctly but beyond what parse_size represents (1 EB)."""
    if key != "data.memory_budget" or not isinstance(v, str):
        return False
    try:
        parse_size(v)
    except ValueError as e:
        return "out of range" in str(e)
    return False


def shown(value) -> str:
    """``value`` for a message: its repr, or the start of a very long string and its length."""
    if isinstance(value, str) and len(value) > 60:
        return f"{value[:12]!r}... ({len(value)} characters)"
    return repr(value)


def holdout(v):
    return v >= 0 and (v < 1 or float(v).is_integer())


def device_name(v):
    if v == "auto":
        return True
    try:
        parse_device(v)
    except RunError:
        return False
    return True


# The valid values of every setting that is a choice, each taken from the one declaration beside
# the code that builds it; validation, `aevb train --help` choices and construction follow.
