"""The one engine for bounds over data: the ELBO, L_k and their terms, per datapoint.

L_k (Burda, Grosse & Salakhutdinov 2016) for one datapoint is

    L_k = log (1/k) sum_{i=1..k} p(x, z_i) / q(z_i|x),   z_i ~ q(z|x),

computed by log-sum-exp. L_1 is the ELBO, E[L_k] never decreases with k, and L_k -> log p(x) as
k -> infinity, so L_5000 is the usual estimate of the marginal log-likelihood.

Every bound over data in aevb comes from :func:`batch_bounds`: the test and validation bound of
each training epoch (:func:`elbo_sums`, k = 1), ``aevb evaluate`` (:func:`evaluate_bounds`),
``VAE.iw_bound`` and the figures' posterior statistics. Data are taken in batches of B
datapoints from a :class:`~aevb.data.Split` (in memory or streamed), and the k samples of a batch
in chunks of c samples: one chunk is a tensor z [B, c, J] (batch first, so the decoder output
[B, c, D] meets x [B, D] in one batched product), and the per-datapoint log-sum-exp of the chunks
is combined exactly (logaddexp), so memory is bounded by c * B * D whatever k.

Where the noise comes from is the caller's choice (:class:`SeededNoise`: a private generator
drawn in fixed blocks, so L_k does not depend on the chunk size; :class:`GlobalNoise`: torch's
global stream under a fixed seed, as a training step draws it). The ELBO reported beside L_k uses
the same samples: E_q[log p(x|z)] is their average and the KL is in closed form (estimator B).

All values are nats per datapoint (summed over the D data dimensions).
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from . import linear
from .data.base import Split, as_split
from .distributions import kl_normal_standard

# training bounds: the SGVB ELBO (VAE.elbo) or the importance-weighted bound (VAE.iwae)
OBJECTIVES = ("elbo", "iwae")
# how VAE.elbo takes the KL: in closed form (estimator B) or by Monte Carlo (estimator A)
KL_ESTIMATORS = ("analytic", "mc")
# Samples per block of noise: eps is drawn in blocks of this many samples per batch.
NOISE_BLOCK = 64
# Default memory budget of one chunk, bytes: four temporaries of chunk x batch x decoder width.
# 16 MB (1M floats per temporary) keeps the element-wise work near the CPU caches; on a 2-core
# EPYC it was faster than 8x that (benchmarks/RESULTS.md).
DEFAULT_BUDGET = 16_000_000
# Temporaries of the widest size that one chunk holds at once (decoder output, its softplus, ...).
TEMPORARIES = 4
# The IWAE paper's criterion for an active latent unit: Var_x(E_q[z_j | x]) > 0.01.
ACTIVE_UNIT_THRESHOLD = 0.01


# ------------------------------------------------------------------------- sizes
def decoder_width(model) -> int:
    """The widest activation the decoder produces per sample (the largest Linear output, and
    at least the likelihood's n_params * D); used to size chunks against a memory budget."""
    widths = [m.out_features for m in model.decoder.modules() if isinstance(m, nn.Linear)]
    widths.append(int(getattr(model.decoder, "widest", 0)))  # conv decoders say theirs
    return max(widths + [model.likelihood.n_params * model.data_dim])


def _bytes_per_row(model) -> int:
    return TEMPORARIES * next(model.parameters()).element_size() * decoder_width(model)


def weight_bytes(model) -> int:
    """Bytes of the model's parameters: what every batch of an evaluation reads once."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


# An evaluation batch reads every weight matrix once, so a batch of a few rows is bound by reading
# the weights, not by its arithmetic. Where the temporaries of this many rows are no larger than
# the weights already in memory (the MLP of full-size CelebA faces: 8 rows by DEFAULT_BUDGET),
# a batch takes this many rows (benchmarks/RESULTS.md).
WEIGHT_BOUND_ROWS = 64


def budget_rows(model, budget: Optional[int] = None) -> int:
    """Datapoint-samples one chunk may hold: as many as keep its temporaries within
    DEFAULT_BUDGET (the fastest size on a CPU) or a smaller ``budget``; raised to
    WEIGHT_BOUND_ROWS for a model whose weights outweigh that many rows' temporaries, as far as
    ``budget`` (bytes the user allows; None: the weights' size) permits."""
    per_row = _bytes_per_row(model)
    rows = max(1, min(int(budget or DEFAULT_BUDGET), DEFAULT_BUDGET) // per_row)
    if rows < WEIGHT_BOUND_ROWS:
        allowed = int(budget) if budget is not None else weight_bytes(model)
        if WEIGHT_BOUND_ROWS * per_row <= min(allowed, weight_bytes(model)):
            rows = WEIGHT_BOUND_ROWS
    return rows


def default_sizes(model, n: int, k: int, batch_size: Optional[int] = None, chunk: Optional[int] = None,
                  budget: Optional[int] = None) -> Tuple[int, int]:
    """(batch_size, chunk) keeping one chunk's temporaries within :func:`budget_rows`.

    Without a batch size, a batch holds as many datapoints as fit with all k samples at once
    (at least 1, at most n); without a chunk, a chunk holds as many samples as fit.
    """
    rows = budget_rows(model, budget)
    if batch_size is None:
        batch_size = max(1, min(n, rows // k if k <= rows else 1))
    if chunk is None:
        chunk = max(1, min(k, rows // batch_size))
    return int(batch_size), int(min(int(chunk), k))


# The most datapoints an evaluation batch takes, however small they are.
EVAL_ROWS = 1000


def eval_rows(model, budget: Optional[int] = None) -> int:
    """Datapoints per batch of a pass that only evaluates (bounds, posterior means, decoding):
    :func:`budget_rows`, at most EVAL_ROWS. 1000 MNIST images; 64 full-size colour photos
    (116,412 values each) for a model whose weights outweigh those rows' temporaries, else as
    many as fit in the budget, so no pass over data grows with the size of its datapoints
    beyond the budget or the model's own size."""
    return min(EVAL_ROWS, budget_rows(model, budget))


def memory_need(model, n: int, k: int, batch_size: Optional[int] = None, chunk: Optional[int] = None,
                budget: Optional[int] = None, precision: str = "fp32") -> int:
    """Bytes an evaluation of n datapoints with k samples needs beyond the model: its largest
    chunk, and with ``precision`` "bf16" (as it runs on the device) the bfloat16 copies of the
    wide layers' weights (aevb.linear)."""
    bs, c = default_sizes(model, n, k, batch_size, chunk, budget)
    return _bytes_per_row(model) * c * bs + (linear.low_copy_bytes(model) if precision == "bf16" else 0)


# a probe pass at least this long (seconds) is timed as it is; a shorter one is run again, the
# first run a warm-up whose one-off costs would weigh on so short a pass
PROBE_ALONE_S = 0.1


def estimate_seconds(model, x: Union[Split, Tensor], k: int, budget: Optional[int] = None) -> float:
    """How long evaluating every row of ``x`` with ``k`` samples will take on this machine,
    extrapolated from a short timed probe (a few datapoints, a chunk within ``budget``): one
    pass for a large model (0.3 s of 64 full-size faces with a 1 GB MLP), two where a pass is
    under PROBE_ALONE_S."""
    n = len(x)
    rows = budget_rows(model, budget)
    pb = max(1, min(n, 64, rows))
    ps = max(1, min(k, rows // pb))
    probe = as_split(x).rows(0, pb, next(model.parameters()).device)
    for _ in range(2):  # (the second pass only after a short first one, its warm-up)
        t0 = time.perf_counter()
        evaluate_bounds(model, probe, k=ps, batch_size=pb, chunk=ps)
        seconds = time.perf_counter() - t0
        if seconds >= PROBE_ALONE_S:
            break
    return seconds / (pb * ps) * n * k


# ------------------------------------------------------------------------- noise
class _Blocks:
    """eps ~ N(0, I) for the samples of one batch, handed out as [B, n, J] (batch first), drawn
    in blocks of ``NOISE_BLOCK`` samples, so the values do not depend on how the k samples are
    split into chunks. Unused samples of the last block are dropped with the batch."""

    def __init__(self, generator: torch.Generator, batch: int, latent: int, dtype, device):
        self.g, self.batch, self.latent, self.dtype, self.device = generator, batch, latent, dtype, device
        self.buf: Optional[Tensor] = None

    def __call__(self, n: int) -> Tensor:
        parts, need = [], n
        while need > 0:
            if self.buf is None or self.buf.shape[1] == 0:
                self.buf = torch.randn((self.batch, NOISE_BLOCK, self.latent), generator=self.g,
                                       dtype=self.dtype, device=self.device)
            part, self.buf = self.buf[:, :need], self.buf[:, need:]
            parts.append(part)
            need -= part.shape[1]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


class SeededNoise:
    """Noise from a private generator seeded with ``seed``: repeatable, independent of the chunk
    size, and leaving torch's global stream alone (evaluation)."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def start(self, device: torch.device):
        self.generator = torch.Generator(device=device).manual_seed(self.seed)
        return contextlib.nullcontext()

    def prepare(self, x: Tensor) -> Tensor:
        return x

    def for_batch(self, batch: int, latent: int, dtype, device) -> Callable[[int], Tensor]:
        return _Blocks(self.generator, batch, latent, dtype, device)


class GlobalNoise:
    """Noise from torch's global stream, forked and seeded with ``seed`` (so the caller's stream
    is untouched): eps is drawn [n, B, J] as a training step draws it, and with ``dynamic`` each
    batch is first binarized, x ~ Bernoulli(x), from the same stream (the epoch's test bound)."""

    def __init__(self, seed: int = 0, dynamic: bool = False):
        self.seed, self.dynamic = int(seed), dynamic

    def start(self, device: torch.device):
        return _seeded_global(self.seed, device)

    def prepare(self, x: Tensor) -> Tensor:
        return torch.bernoulli(x) if self.dynamic else x

    def for_batch(self, batch: int, latent: int, dtype, device) -> Callable[[int], Tensor]:
        return lambda n: torch.randn((n, batch, latent), dtype=dtype, device=device).transpose(0, 1)


@contextlib.contextmanager
def _seeded_global(seed: int, device: torch.device):
    """torch's global stream seeded with ``seed`` inside a fork: the caller's stream is untouched."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


# ------------------------------------------------------------------------- one chunk
def chunk_log_weights(model, x: Tensor, mu: Tensor, log_var: Tensor, eps: Tensor,
                      log_px_fn=None) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """(log w, log p(x|z), KL terms per layer), the first two [B, c], for the posterior samples of
    noise eps [B, c, J] (the model's one importance weight, ``model.log_weights``).

    log w = log p(x|z) + log p(z) - log q(z|x): the log importance weight of each sample. With
    stacked layers the third value is log q(z_l | .) - log p(z_l | .) per layer [B, c, L] (their
    sum is log q - log p), else None. ``log_px_fn`` replaces
    ``model.likelihood.log_prob_samples`` (e.g. a compiled version of it).
    """
    log_w, log_px_z, s = model.log_weights(x, eps, mu, log_var, batch_first=True, log_px_fn=log_px_fn)
    return log_w, log_px_z, s.kl_layers


# ------------------------------------------------------------------------- the engine
@dataclass
class BatchBounds:
    """One batch's results. ``lk`` and ``log_px_given_z`` [B] float64 (the latter averaged over
    the k samples); ``kl_per_dim`` [B, J] and ``mu`` [B, J] in the model's dtype, on its device
    (``kl_per_dim`` None where the model has no closed-form KL, ``mu`` the codes of
    ``model.codes``); ``lk_se`` [B] float64, the standard error of each datapoint's L_k from the
    spread of its k importance weights (see :func:`lk_standard_error`); ``kl_mc`` [B] float64,
    the Monte Carlo KL over the same k samples where there is no closed form; ``kl_layers``
    [B, L] float64, its share of each stochastic layer (stacked layers only)."""

    lk: Tensor
    log_px_given_z: Tensor
    kl_per_dim: Optional[Tensor]
    mu: Tensor
    lk_se: Optional[Tensor] = None
    kl_mc: Optional[Tensor] = None
    kl_layers: Optional[Tensor] = None

    @property
    def kl(self) -> Tensor:
        """KL(q(z|x) || p(z)) [B]: in closed form (the model's dtype) or, without one, the
        average of log q(z|x) - log p(z) over the k samples (float64)."""
        return self.kl_per_dim.sum(-1) if self.kl_per_dim is not None else self.kl_mc


def batch_bounds(model, x: Union[Split, Tensor], k: int = 1, batch_size: Optional[int] = None,
                 chunk: Optional[int] = None, noise=None, budget: Optional[int] = None,
                 log_px_fn=None, bar=None) -> Iterator[BatchBounds]:
    """:class:`BatchBounds` for each batch of the rows of ``x`` (a Split or a float [N, D]
    tensor), with k samples per datapoint from ``noise`` (default ``SeededNoise(0)``). Runs
    without gradients, in eval mode (restored at the end); ``bar`` (tqdm) counts samples."""
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n = len(x)
    if n == 0:
        raise ValueError("no datapoints to evaluate")
    p = next(model.parameters())
    device, dtype = p.device, p.dtype
    batch_size, chunk = default_sizes(model, n, k, batch_size, chunk, budget)
    if batch_size < 1 or chunk < 1:
        raise ValueError("batch_size and chunk must be at least 1")
    noise = noise if noise is not None else SeededNoise(0)
    linear.fresh_low_copies()  # bfloat16 copies of wide layers' weights: made once per evaluation
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), noise.start(device), model.fixed_prior():
            for xb in as_split(x).batches(batch_size, device):
                xb = noise.prepare(xb.to(dtype))
                b = len(xb)
                mu, log_var = model.encoder_params(xb)
                draw = noise.for_batch(b, model.latent_dim, dtype, device)
                total = torch.full((b,), -math.inf, dtype=torch.float64, device=device)
                total2 = torch.full((b,), -math.inf, dtype=torch.float64, device=device)  # log sum w^2
                spread = k > 1  # one sample has no standard error: the epochs' test bound skips it
                rec_sum = torch.zeros(b, dtype=torch.float64, device=device)
                closed = model.closed_form_kl
                kl_sum = None if closed else torch.zeros(b, dtype=torch.float64, device=device)
                layer_sum = None
                for s0 in range(0, k, chunk):
                    s = min(chunk, k - s0)
                    log_w, log_px_z, kl_layers = chunk_log_weights(model, xb, mu, log_var, draw(s), log_px_fn)
                    if kl_layers is not None:
                        part = kl_layers.double().sum(1)
                        layer_sum = part if layer_sum is None else layer_sum + part
                    total = torch.logaddexp(total, torch.logsumexp(log_w, 1).double())
                    if spread:
                        total2 = torch.logaddexp(total2, torch.logsumexp(2 * log_w.double(), 1))
                    rec_sum += log_px_z.double().sum(1)
                    if not closed:  # log q - log p = log p(x|z) - log w, sample by sample
                        kl_sum += (log_px_z.double() - log_w.double()).sum(1)
                    if bar is not None:
                        bar.update(s * b)
                yield BatchBounds(total - math.log(k), rec_sum / k,
                                  kl_normal_standard(mu, log_var) if closed else None,
                                  mu if closed else model.codes(mu, log_var),
                                  lk_standard_error(total, total2, k), None if closed else kl_sum / k,
                                  None if layer_sum is None else layer_sum / k)
    finally:
        model.train(was_training)


def lk_standard_error(log_sum_w: Tensor, log_sum_w2: Tensor, k: int) -> Tensor:
    """Standard error of L_k = log mean(w) per datapoint, by the delta method: the relative
    standard error of the mean of the k weights, sqrt((k S2 / S1^2 - 1) / (k - 1)) with
    S1 = sum w and S2 = sum w^2 (the unbiased sample variance); NaN for k = 1."""
    if k < 2:
        return torch.full_like(log_sum_w, math.nan)
    ratio = torch.exp(log_sum_w2 - 2 * log_sum_w)  # S2 / S1^2, in [1/k, 1]
    return torch.sqrt(((k * ratio - 1) / (k - 1)).clamp_min(0))


@dataclass
class Bounds:
    """Per-datapoint results over a data set, float64 on the CPU.

    ``lk`` [N]: L_k; ``elbo`` [N] = ``log_px_given_z`` - ``kl``, with E_q[log p(x|z)] averaged over
    the same k samples and the KL in closed form (or, without one, the Monte Carlo KL over the
    same samples); ``kl_per_dim`` [N, J] (None without a closed form); ``mu`` [N, J] the
    posterior means (for active units). ``k``, ``batch_size``, ``chunk``, ``seconds``; ``lk_se``
    [N] the standard error of each datapoint's L_k (from its importance weights; NaN for k = 1);
    ``kl_layers`` [N, L] each stochastic layer's share of the KL (stacked layers only).
    """

    lk: Tensor
    elbo: Tensor
    log_px_given_z: Tensor
    kl: Tensor
    kl_per_dim: Optional[Tensor]
    mu: Tensor
    k: int
    batch_size: int
    chunk: int
    seconds: float
    lk_se: Optional[Tensor] = None
    kl_layers: Optional[Tensor] = None


def evaluate_bounds(model, x: Union[Split, Tensor], k: int = 1, batch_size: Optional[int] = None,
                    chunk: Optional[int] = None, seed: int = 0, progress: bool = False,
                    budget: Optional[int] = None, compile: bool = False, desc: str = "L_k") -> Bounds:
    """L_k, the ELBO and its terms for every row of ``x`` with k samples per datapoint (seeded
    noise, independent of the chunk size).

    ``batch_size`` datapoints at a time, ``chunk`` samples at a time (defaults from ``budget``
    bytes, see :func:`default_sizes`); ``progress`` shows a tqdm bar with the time left;
    ``compile`` compiles the likelihood with torch.compile (pays off for long evaluations).
    """
    n = len(x)
    if int(k) >= 1 and n:
        batch_size, chunk = default_sizes(model, n, int(k), batch_size, chunk, budget)
    log_px_fn = torch.compile(model.likelihood.log_prob_samples, dynamic=True) if compile else None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n * int(k), desc=desc, unit="sample", unit_scale=True, dynamic_ncols=True,
                   disable=None, file=sys.stderr, leave=False)
    lk, rec, kl_dims, kls, mus, ses, layers = [], [], [], [], [], [], []
    t0 = time.perf_counter()
    try:
        for b in batch_bounds(model, x, k, batch_size, chunk, SeededNoise(seed), budget, log_px_fn, bar):
            lk.append(b.lk.cpu())
            rec.append(b.log_px_given_z.cpu())
            if b.kl_per_dim is not None:
                kl_dims.append(b.kl_per_dim.double().cpu())
            else:
                kls.append(b.kl_mc.cpu())
            mus.append(b.mu.double().cpu())
            ses.append(b.lk_se.cpu())
            if b.kl_layers is not None:
                layers.append(b.kl_layers.cpu())
    finally:
        if bar is not None:
            bar.close()
    kl_per_dim = torch.cat(kl_dims) if kl_dims else None
    kl = kl_per_dim.sum(-1) if kl_dims else torch.cat(kls)
    log_px_given_z = torch.cat(rec)
    return Bounds(lk=torch.cat(lk), elbo=log_px_given_z - kl, log_px_given_z=log_px_given_z, kl=kl,
                  kl_per_dim=kl_per_dim, mu=torch.cat(mus), k=int(k), batch_size=batch_size, chunk=chunk,
                  seconds=time.perf_counter() - t0, lk_se=torch.cat(ses),
                  kl_layers=torch.cat(layers) if layers else None)


def elbo_sums(model, x: Union[Split, Tensor], batch_size: Optional[int] = None, dynamic: bool = False,
              seed: int = 0) -> Tensor:
    """Sums over the rows of ``x`` of the one-sample ELBO (closed-form KL), E_q[log p(x|z)] and
    the KL: float64 [3], summed per batch in the model's dtype. The noise (and the binarization
    of dynamically binarized data) comes from torch's global stream seeded with ``seed`` inside
    a fork, so it neither perturbs training nor varies between calls: the epochs' test bound."""
    device = next(model.parameters()).device
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    for b in batch_bounds(model, x, 1, batch_size or eval_rows(model), 1, GlobalNoise(seed, dynamic)):
        log_px_given_z = b.log_px_given_z.to(b.mu.dtype)  # one sample: exactly its value
        kl = b.kl.to(b.mu.dtype)
        sums += torch.stack([(log_px_given_z - kl).sum(), log_px_given_z.sum(), kl.sum()]).double()
    return sums


def dataset_bound(model, x: Union[Split, Tensor], batch_size: Optional[int] = None, dynamic: bool = False,
                  seed: int = 0) -> Dict[str, float]:
    """Mean one-sample ELBO and its two terms over the rows of ``x``, nats (see :func:`elbo_sums`)."""
    s = (elbo_sums(model, x, batch_size, dynamic, seed) / len(x)).tolist()
    return {"bound": s[0], "log_px_given_z": s[1], "kl": s[2]}


# ------------------------------------------------------------------------- posterior statistics
@torch.inference_mode()
def posterior_means(model, x: Union[Split, Tensor], batch_size: Optional[int] = None) -> Tensor:
    """E_q[z|x] [N, J] (float64, CPU) for the rows of ``x``; eval mode, restored."""
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model.codes(*model.encoder_params(xb.to(p.dtype))).double().cpu()
                          for xb in as_split(x).batches(batch_size or eval_rows(model), p.device)])
    finally:
        model.train(was_training)


@torch.inference_mode()
def kl_per_dimension(model, x: Union[Split, Tensor], batch_size: Optional[int] = None) -> Tensor:
    """Mean over the rows of ``x`` of KL(q(z_j|x) || N(0, 1)) per latent dimension, [J] float64
    nats. A diagnostic of how much each unit carries; not the definition of an active unit.
    None for a model without a closed-form KL (a flow or a learned prior): the KL of such a
    model does not split into units."""
    if not model.closed_form_kl:
        return None
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    total = None
    try:
        for xb in as_split(x).batches(batch_size or eval_rows(model), p.device):
            mu, log_var = model.encoder_params(xb.to(p.dtype))
            s = kl_normal_standard(mu, log_var).double().sum(0).cpu()
            total = s if total is None else total + s
    finally:
        model.train(was_training)
    return total / len(x)


def active_unit_variances(mu: Tensor) -> Tensor:
    """Var over the data of E_q[z_j|x], per latent dimension [J] (mu: [N, J] posterior means,
    or the codes of ``VAE.codes`` with a flow)."""
    return mu.double().var(0, unbiased=True) if len(mu) > 1 else torch.zeros(mu.shape[-1], dtype=torch.float64)


def active_mask(variances: Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> Tensor:
    """Which latent units are active (Burda et al. 2016), bool [J]: Var_x(E_q[z_j|x]) > ``threshold``
    for the variances of :func:`active_unit_variances`, the one definition aevb uses everywhere
    (evaluation, the KL figure, the report, the explorer)."""
    return torch.as_tensor(variances) > threshold

