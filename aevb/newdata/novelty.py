"""Novelty scores: how unlike a run's data an item is, corrected for what a raw likelihood gets
wrong. A VAE's likelihood rewards simple inputs whatever they are (Nalisnick et al., "Do Deep
Generative Models Know What They Don't Know?", ICLR 2019), so -L_k alone often ranks a new kind of
data as *more* typical than the run's own. Each score here is higher for more novel items:

- ``novelty`` (the default): the input-complexity score of Serra et al. ("Input complexity and
  out-of-distribution detection with likelihood-based generative models", ICLR 2020),
  S(x) = -log2 p(x) - L(x) in bits, where -log2 p(x) comes from L_k (:func:`nll_bits`) and L(x)
  is the length in bits of the 8-bit image the model sees under a lossless compressor
  (:func:`complexity_bits`, column ``complexity``).
- ``lr``: the likelihood ratio of Ren et al. ("Likelihood ratios for out-of-distribution
  detection", NeurIPS 2019) against a background run, the same network trained on perturbed
  inputs: lr = L_k(background) - L_k(run) in nats (minus their LLR, so that higher is more
  novel); ``background_lk`` holds the background's L_k.
- ``lk`` and ``elbo``: -L_k and -ELBO, the raw likelihood as a novelty score.

For a set of items (a batch that is new or not as a whole) :func:`typicality_test` gives the
typicality test of Nalisnick et al. ("Detecting out-of-distribution inputs to deep generative
models using typicality", 2019): |mean of -L_k over the set - the training set's mean|, with a
threshold and a p-value from bootstrap batches of the run's own test (or validation) split.
"""
from __future__ import annotations

import bz2
import io
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from ..bits import LN2, bpd_convention
from ..data.base import KIND_REAL, Split
from ..errors import ConfigError
from ..images import to_images
from .results import Scores

# float32 bytes of the rows made into 8-bit images at a time by complexity_bits (1,000 MNIST digits,
# 34 full-size CelebA faces)
COMPLEXITY_BATCH_BYTES = 16 * 10 ** 6


def _deflate(data: bytes) -> bytes:
    """Raw deflate (zlib's compressor at its default level 6, 32 KiB window, no header or checksum)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


# the lossless compressors of the complexity term L(x), each on the 8-bit image [H, W, C]: zlib
# (raw deflate, level 6) or bz2 (level 9) of the image's bytes in row-major order (H, W, C), or PNG
# (PIL, level 9: per-row filters, then deflate, with PNG's own headers). zlib is the default: on
# MNIST pairs its AUC is within 0.03 of PNG's at a third to a tenth of the cost, and level 6 gives
# lengths within 3 % of level 9's at half its time (docs/new-data.md);
# lzma at preset 9 took 0.2 s per 28x28 image, so it is not offered
COMPRESSORS: Dict[str, Callable[[np.ndarray], bytes]] = {
    "zlib": lambda img: _deflate(img.tobytes()),
    "png": _png,
    "bz2": lambda img: bz2.compress(img.tobytes(), 9),
}
DEFAULT_COMPRESSOR = "zlib"

# the novelty scores an item can be ranked by (aevb score --rank-by, the percentile and flag):
# each is higher for a more novel item
RANK_BY = ("novelty", "lr", "lk", "elbo")
DEFAULT_RANK_BY = "novelty"
# the most training items whose mean -L_k estimates the entropy in the typicality test
TYPICALITY_TRAIN = 10000


def check_compressor(compressor: Optional[str], python: bool = True) -> Optional[str]:
    """A compressor's name (or None: no complexity term), refused in one line when unknown."""
    if compressor is None or compressor in COMPRESSORS:
        return compressor
    name = "compressor" if python else "--compressor"
    raise ConfigError(f"{name} must be one of {', '.join(COMPRESSORS)}; got {compressor!r}")


def compressed_bits(images: np.ndarray, compressor: str = DEFAULT_COMPRESSOR) -> np.ndarray:
    """L(x) of each 8-bit image of ``images`` (uint8 [N, H, W, C]): 8 x the length in bytes of its
    compressed form, float64 [N]."""
    compress = COMPRESSORS[compressor]
    return np.array([8.0 * len(compress(np.ascontiguousarray(img))) for img in images], dtype=np.float64)


def complexity_bits(split: Split, image_shape: Sequence[int], compressor: str = DEFAULT_COMPRESSOR,
                    batch_bytes: int = COMPLEXITY_BATCH_BYTES, progress: bool = False) -> np.ndarray:
    """L(x) in bits for every row of ``split``: the row as the model sees it (values in [0, 1]),
    made the 8-bit image round(255 x) of ``image_shape`` (C, H, W), then compressed
    (:func:`compressed_bits`). A binary image is thus its 0 / 255 picture. Float64 [N]. Rows are
    taken in batches of about ``batch_bytes`` of float32 values, so memory does not grow with
    the size of the pictures."""
    from .outputs import progress_bar

    batch_size = max(1, min(1000, batch_bytes // (4 * max(1, split.dim))))
    out = np.empty(len(split), dtype=np.float64)
    bar = progress_bar(len(split), f"complexity ({compressor})", progress)
    try:
        for i in range(0, len(split), batch_size):
            x = split.rows(i, i + batch_size, device="cpu")
            out[i:i + len(x)] = compressed_bits(to_images(x, image_shape), compressor)
            if bar is not None:
                bar.update(len(x))
    finally:
        if bar is not None:
            bar.close()
    return out


def has_complexity(kind: str) -> bool:
    """Whether data of ``kind`` have an 8-bit form (values in [0, 1]); real values do not."""
    return kind != KIND_REAL


def nll_bits(lk: np.ndarray, dim: int, kind: str, levels: Optional[int], likelihood: str) -> np.ndarray:
    """-log2 p(x) in bits from L_k in nats: -L_k / ln 2, plus D x log2(levels - 1) for a density over
    values on a grid (the bin width, as bits per dimension count it: aevb.bits.bpd_convention). Where
    the bound is not a probability of the values (a Bernoulli likelihood on grey levels) it is
    -L_k / ln 2 as it is."""
    offset, _ = bpd_convention(kind, levels, likelihood)
    return -np.asarray(lk, dtype=np.float64) / LN2 + (offset or 0.0) * dim


def novelty_columns(cols: Scores, items, likelihood: str, compressor: Optional[str] = DEFAULT_COMPRESSOR,
                    background_lk: Optional[np.ndarray] = None, progress: bool = False,
                    complexity: Optional[np.ndarray] = None) -> Scores:
    """``cols`` (the bounds of ``items``) with the novelty columns: ``complexity`` (L(x), bits, or
    the ``complexity`` given) and ``novelty`` (-log2 p(x) - L(x), bits) unless ``compressor`` is
    None or the data are real values, and with ``background_lk`` also ``background_lk`` and ``lr``
    (nats)."""
    add = {}
    if compressor is not None and has_complexity(items.kind):
        add["complexity"] = (complexity if complexity is not None else
                             complexity_bits(items.split, items.image_shape, compressor, progress=progress))
        add["novelty"] = nll_bits(cols["lk"], items.dim, items.kind, items.levels, likelihood) - add["complexity"]
    if background_lk is not None:
        add["background_lk"] = np.asarray(background_lk, dtype=np.float64)
        add["lr"] = add["background_lk"] - cols["lk"]
    return cols.assign(**add) if add else cols


def rank_score(cols, rank_by: str) -> np.ndarray:
    """The novelty score ``rank_by`` names (higher: more novel) from the columns ``cols``."""
    if rank_by in ("lk", "elbo"):
        return -np.asarray(cols[rank_by], dtype=np.float64)
    return np.asarray(cols[rank_by], dtype=np.float64)


def missing_rank(rank_by: str, background: bool, kind: Optional[str], option: bool = True) -> Optional[str]:
    """Why the score ``rank_by`` cannot be given (None when it can): ``lr`` needs a background run,
    ``novelty`` data with an 8-bit form. ``option``: name the command's options, else Python's."""
    if rank_by not in RANK_BY:
        return f"{'--rank-by' if option else 'rank_by'} {rank_by!r} is not a score; choose {', '.join(RANK_BY)}"
    if rank_by == "lr" and not background:
        return ("lr is the likelihood ratio against a background run: give one with "
                + ("--background RUN" if option else "background=RUN")
                + " (train it with `aevb train --background-of RUN`), or rank by novelty, lk or elbo")
    if rank_by == "novelty" and kind is not None and not has_complexity(kind):
        return ("novelty needs data with an 8-bit form (values in [0, 1]); this run's data are real values: "
                "rank by lk or elbo")
    return None


def percentile_of(score: np.ndarray, ref_sorted: np.ndarray) -> np.ndarray:
    """Per item: the percentage of the reference scores (sorted, ascending) strictly below its novelty
    score: 0 as typical as the most typical reference item, 100 more novel than all of them."""
    return 100.0 * np.searchsorted(ref_sorted, score, side="left") / len(ref_sorted)


# ------------------------------------------------------------------ a set of items: typicality
@dataclass
class Typicality:
    """The typicality test of a set of ``n`` items: ``statistic`` = |``mean_nll`` - ``entropy``|
    (nats), where ``mean_nll`` is the set's mean -L_k and ``entropy`` the training set's (an estimate
    of the model's entropy); ``threshold`` is the (1 - ``alpha``) quantile of the statistic over
    ``bootstrap`` batches of n items drawn with replacement from the run's ``reference`` split, and
    ``p_value`` the share of those batches at least as far from the entropy (with one added to both
    counts). ``novel``: statistic > threshold."""

    statistic: float
    mean_nll: float
    entropy: float
    n: int
    threshold: float
    p_value: float
    alpha: float
    bootstrap: int
    reference: str = "test"
    train_items: int = 0

    @property
    def novel(self) -> bool:
        return bool(self.statistic > self.threshold)

    def line(self) -> str:
        verdict = "atypical (new as a set)" if self.novel else "typical"
        return (f"typicality of the {self.n} items: |mean -L_k {self.mean_nll:.3f} - training mean {self.entropy:.3f}| "
                f"= {self.statistic:.3f} nats; {verdict} at alpha {self.alpha:g} (threshold {self.threshold:.3f} from "
                f"{self.bootstrap} bootstrap sets of {self.n} from the {self.reference} split), p = {self.p_value:.4f}")


def typicality_test(nll: np.ndarray, train_nll: np.ndarray, ref_nll: np.ndarray, bootstrap: int = 1000,
                    alpha: float = 0.01, seed: int = 0, reference: str = "test") -> Typicality:
    """The typicality test of the set whose -L_k are ``nll`` (nats), against the training set's
    ``train_nll`` (its mean estimates the entropy) and bootstrap sets of ``len(nll)`` items drawn
    from ``ref_nll`` with a numpy generator seeded with ``seed``."""
    nll, train_nll, ref_nll = (np.asarray(a, dtype=np.float64) for a in (nll, train_nll, ref_nll))
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1); got {alpha!r}")
    if bootstrap < 1:
        raise ConfigError(f"bootstrap must be at least 1; got {bootstrap!r}")
    entropy = float(train_nll.mean())
    mean = float(nll.mean())
    stat = abs(mean - entropy)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ref_nll), size=(int(bootstrap), len(nll)))
    boot = np.abs(ref_nll[draws].mean(1) - entropy)
    threshold = float(np.quantile(boot, 1 - alpha))
    p = float((1 + np.sum(boot >= stat)) / (1 + len(boot)))
    return Typicality(stat, mean, entropy, len(nll), threshold, p, float(alpha), int(bootstrap), reference,
                      len(train_nll))


def train_sample(n: int, most: int, seed: int) -> np.ndarray:
    """The rows of a training split of ``n`` whose mean -L_k estimates the entropy: all of them, or
    ``most`` drawn without replacement (seeded), sorted."""
    if n <= most:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=most, replace=False))



# ------------------------------------------------------------------ items to scores
def score_novelty(model, items, k: int, likelihood: str, seed: int = 0, progress: bool = False,
                  compressor: Optional[str] = DEFAULT_COMPRESSOR, background=None) -> Scores:
    """The bounds of every item of ``items`` (aevb.newdata.score_columns: id, elbo, lk, lk_se,
    bits/dim) with the novelty columns of :func:`novelty_columns`; ``background``: the model of a
    background run, scored on the same rows with the same seed, for ``lr``."""
    from concurrent.futures import ThreadPoolExecutor

    from .outputs import score, score_columns

    with ThreadPoolExecutor(1) as pool:  # the compressor (which releases the GIL) beside the model's work
        bits = None
        if compressor is not None and has_complexity(items.kind):
            bits = pool.submit(complexity_bits, items.split, items.image_shape, compressor)
        cols = score_columns(model, items, k, likelihood, seed, progress)
        bg = None if background is None else score(background, items.split, k, seed, progress).lk.numpy()
        return novelty_columns(cols, items, likelihood, compressor, bg, complexity=bits and bits.result())


def rank_against(cols: Scores, ref: Scores, rank_by: str, flag_above: Optional[float] = None) -> Scores:
    """``cols`` with ``percentile``: the percentage of the reference items ``ref`` (the run's own
    split, scored the same way) whose ``rank_by`` score is below the item's, and with
    ``flag_above`` also ``flag`` = percentile > flag_above."""
    pct = percentile_of(rank_score(cols, rank_by), np.sort(rank_score(ref, rank_by)))
    cols = cols.assign(percentile=pct)
    return cols if flag_above is None else cols.assign(flag=pct > flag_above)
