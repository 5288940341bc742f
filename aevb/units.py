"""How messages write quantities: one way for a duration, one for a number of bytes, one for a count.

Both sit at the bottom of the package (nothing here imports from aevb), so every module writes
a size or a time the same way.
"""
from __future__ import annotations

import math

# decimal units, as sizes are given to aevb (``--memory-budget 8GB``: powers of 1000)
BYTE_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")


def format_bytes(n: float, digits: int = 1) -> str:
    """A number of bytes in the largest decimal unit that keeps it at 1 or more: '512 B',
    '12.3 kB', '45.6 MB', '54.1 GB'; ``digits`` after the point (whole bytes have none)."""
    n = float(n)
    if not math.isfinite(n):
        return f"{n} B"
    i = 0
    while i < len(BYTE_UNITS) - 1 and abs(n) >= 1000 ** (i + 1):
        i += 1
    if i == 0:
        return f"{n:.0f} B"
    v = n / 1000 ** i
    if i < len(BYTE_UNITS) - 1 and abs(round(v, digits)) >= 1000:  # 999.96 MB reads as 1.0 GB
        i, v = i + 1, v / 1000
    return f"{v:.{digits}f} {BYTE_UNITS[i]}"


def format_bytes_apart(a: float, b: float) -> tuple:
    """Two byte counts written with enough digits that different counts read differently."""
    for digits in range(1, 7):
        x, y = format_bytes(a, digits), format_bytes(b, digits)
        if x != y or a == b:
            return x, y
    return f"{a:.0f} B", f"{b:.0f} B"


def format_duration(seconds: float) -> str:
    """A duration to about two significant figures: '45 s', '12 min', '1.5 h', '3 days'."""
    s = max(0.0, float(seconds))
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:,.0f} days"


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, in the plural unless n is 1: ``count(1, "epoch")`` is "1 epoch"."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
