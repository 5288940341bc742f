"""The checks of what the new-data methods and commands are given, shared by both so that they
refuse the same values with the same line. A message names the argument as the caller gave it:
``--samples`` on the command line, ``samples`` in Python (:func:`argument`)."""
from __future__ import annotations

import numbers
from typing import Optional, Sequence

from ..config.ranges import SEEDS
from ..errors import ConfigError, DataError

# the most draws z ~ q(z|x) per item (aevb encode --samples, run.encode(samples=...))
MAX_SAMPLES = 10000


def argument(name: str, python: bool) -> str:
    """How a message names an argument: ``--name`` (dashes for underscores) for the command
    line, ``name`` for Python."""
    return name if python else "--" + name.replace("_", "-")


def whole_number(value, name: str, what: str = "") -> int:
    """``value`` as an int, refusing (ConfigError naming ``name``) booleans, fractions and what is
    not a number: a count of ``what`` (or a seed) is a whole number."""
    bad = ConfigError(f"{name} must be a whole number{f' of {what}' if what else ''}; got {value!r}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise bad
    if isinstance(value, numbers.Integral):
        return int(value)
    if not float(value).is_integer():
        raise bad
    return int(value)


def check_samples(samples, python: bool = True) -> int:
    """The number of draws z ~ q(z|x) per item, 0..MAX_SAMPLES (0: none)."""
    name = argument("samples", python)
    n = whole_number(samples, name, "draws per item")
    if not 0 <= n <= MAX_SAMPLES:
        raise ConfigError(f"{name} must be in 0..{MAX_SAMPLES}; got {samples!r}")
    return n


def check_k(k, python: bool = True) -> int:
    """The number of importance samples per item: a whole number of at least 1."""
    name = argument("k", python)
    n = whole_number(k, name, "importance samples")
    if n < 1:
        raise ConfigError(f"{name} must be a positive number of importance samples; got {k!r}")
    return n


def check_seed(seed, python: bool = True, name: Optional[str] = None) -> int:
    """A seed (of the noise: draws, importance samples, binarization; of a PCA view; of a run) in
    the one range every seed has (aevb.config.ranges.SEEDS): a whole number, refused in one line
    (ConfigError) that names the keyword in Python (``seed``) and the option on the command line
    (``--seed``, or ``name`` where the option has another name). The one check of every seed."""
    name = name or argument("seed", python)
    n = whole_number(seed, name)
    lo, hi = SEEDS
    if not lo <= n <= hi:
        raise ConfigError(f"{name} must be in {lo}..{hi}; got {seed!r}")
    return n


def check_pictures(images: Sequence, name: str = "the images") -> None:
    """Refuse PIL images without pixels (a width or height of 0): there is nothing to prepare."""
    for i, img in enumerate(images):
        w, h = img.size
        if w == 0 or h == 0:
            raise DataError(f"{name}: image {i} is {w}x{h} pixels (width x height), an image without pixels; "
                            "give images of at least 1x1 pixels")
