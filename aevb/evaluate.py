"""Honest evaluation of a trained VAE: the ELBO, the importance-weighted bound L_k and log p(x).

L_k (Burda, Grosse & Salakhutdinov 2016) for one datapoint is

    L_k = log (1/k) sum_{i=1..k} p(x, z_i) / q(z_i|x),   z_i ~ q(z|x),

computed by log-sum-exp. L_1 is the ELBO, E[L_k] never decreases with k, and L_k -> log p(x) as
k -> infinity, so L_5000 is the usual estimate of the marginal log-likelihood (the IWAE paper's
"test log-likelihood"; the AEVB paper's Appendix D estimator serves the same purpose).

How it is computed: the data are processed in batches of B datapoints, and the k samples of a
batch in chunks of c samples. One chunk is a tensor z [c, B, J] that goes through the decoder as
one [c*B, J] matrix, so the work is a few large matrix products; the per-datapoint log-sum-exp of
the chunks is combined exactly (logaddexp), so memory is bounded by c*B*D whatever k. The noise
eps ~ N(0, I) is drawn from one seeded generator in fixed blocks of ``NOISE_BLOCK`` samples, so
the samples - and therefore L_k - do not depend on the chunk size: chunked and unchunked runs
differ only by floating-point rounding.

The ELBO reported alongside uses the same k samples: E_q[log p(x|z)] is their average and the KL
is in closed form (SGVB estimator B), so the ELBO becomes more precise as k grows.

All values are nats per datapoint (summed over the D data dimensions).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data.base import Split, as_split, binarized
from .distributions import Bernoulli, kl_normal_standard

# Samples per block of noise: eps is drawn in blocks of this many samples per batch.
NOISE_BLOCK = 64
# Default memory budget: floats in the widest decoder activation of one chunk, c * B * width.
# 1M floats (4 MB per full-width temporary) keeps the element-wise work near the CPU caches;
# on a 2-core EPYC it was faster than 8M (see benchmarks/RESULTS.md).
DEFAULT_BUDGET = 1_000_000
# The IWAE paper's criterion for an active latent unit: Var_x(E_q[z_j | x]) > 0.01.
ACTIVE_UNIT_THRESHOLD = 0.01
LN2 = math.log(2.0)


# ------------------------------------------------------------------------- sizes
def decoder_width(model) -> int:
    """The widest activation the decoder produces per sample (the largest Linear output, and
    at least the likelihood's n_params * D); used to size chunks against a memory budget."""
    widths = [m.out_features for m in model.decoder.modules() if isinstance(m, nn.Linear)]
    widths.append(int(getattr(model.decoder, "widest", 0)))  # conv decoders say theirs
    return max(widths + [model.likelihood.n_params * model.data_dim])


def default_sizes(model, n: int, k: int, batch_size: Optional[int] = None, chunk: Optional[int] = None,
                  budget: int = DEFAULT_BUDGET) -> Tuple[int, int]:
    """(batch_size, chunk) keeping chunk * batch * width within ``budget`` floats.

    Without a batch size, a batch holds as many datapoints as fit with all k samples at once
    (at least 1, at most n); without a chunk, a chunk holds as many samples as fit.
    """
    rows = max(1, int(budget) // decoder_width(model))
    if batch_size is None:
        batch_size = max(1, min(n, rows // k if k <= rows else 1))
    if chunk is None:
        chunk = max(1, min(k, rows // batch_size))
    return int(batch_size), int(min(int(chunk), k))


def memory_need(model, n: int, k: int, batch_size: Optional[int] = None, chunk: Optional[int] = None,
                budget: int = DEFAULT_BUDGET) -> int:
    """Bytes the largest chunk of an evaluation of n datapoints with k samples needs (a few
    temporaries of chunk x batch x decoder width)."""
    bs, c = default_sizes(model, n, k, batch_size, chunk, budget)
    return 4 * next(model.parameters()).element_size() * c * bs * decoder_width(model)


def estimate_seconds(model, x: Union[Split, Tensor], k: int, budget: int = DEFAULT_BUDGET) -> float:
    """How long evaluating every row of ``x`` (a Split or a float [N, D] tensor) with ``k``
    samples will take on this machine, extrapolated from a short timed probe (a few datapoints,
    a chunk within ``budget``)."""
    n = len(x)
    rows = max(1, int(budget) // decoder_width(model))
    pb = max(1, min(n, 64, rows))
    ps = max(1, min(k, rows // pb))
    probe = as_split(x).rows(0, pb, next(model.parameters()).device)
    evaluate_bounds(model, probe, k=ps, batch_size=pb, chunk=ps)  # warm-up
    t0 = time.perf_counter()
    evaluate_bounds(model, probe, k=ps, batch_size=pb, chunk=ps)
    return (time.perf_counter() - t0) / (pb * ps) * n * k


# ------------------------------------------------------------------------- noise
class _NoiseStream:
    """eps ~ N(0, I) for the samples of one batch, handed out as [B, n, J] (batch first).

    Drawn from ``generator`` in blocks of ``NOISE_BLOCK`` samples, so the values handed out do
    not depend on how the k samples are split into chunks. Unused samples of the last block are
    dropped at the end of the batch, so every batch consumes the same amount of the stream.
    """

    def __init__(self, generator: torch.Generator, batch: int, latent: int, dtype, device):
        self.g, self.batch, self.latent, self.dtype, self.device = generator, batch, latent, dtype, device
        self.buf: Optional[Tensor] = None

    def take(self, n: int) -> Tensor:
        parts, need = [], n
        while need > 0:
            if self.buf is None or self.buf.shape[1] == 0:
                self.buf = torch.randn((self.batch, NOISE_BLOCK, self.latent), generator=self.g,
                                       dtype=self.dtype, device=self.device)
            part, self.buf = self.buf[:, :need], self.buf[:, need:]
            parts.append(part)
            need -= part.shape[1]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


# ------------------------------------------------------------------------- one chunk
def _log_px_given_z(model, x: Tensor, params: Tensor) -> Tensor:
    """log p(x|z) [B, c] for decoder output ``params`` [B, c, n*D] and x [B, D].

    For the Bernoulli likelihood, sum_d x_d l_d - softplus(l_d) is computed as a batched
    matrix-vector product (x . l, no [B, c, D] temporary) minus the sum of softplus(l): the same
    number as ``Bernoulli.log_prob`` in fewer passes over memory. Other likelihoods use their own
    ``log_prob`` (x broadcast over the samples)."""
    if type(model.likelihood) is Bernoulli:
        xl = torch.bmm(params, x.unsqueeze(-1)).squeeze(-1)
        return xl - F.softplus(params).sum(-1)
    return model.likelihood.log_prob(x.unsqueeze(1), params)


def chunk_log_weights(model, x: Tensor, mu: Tensor, log_var: Tensor, eps: Tensor,
                      log_px_fn=None) -> Tuple[Tensor, Tensor]:
    """(log w, log p(x|z)), each [B, c], for z = mu + sigma * eps with eps [B, c, J].

    log w = log p(x|z) + log p(z) - log q(z|x): the log importance weight of each sample.
    Inside a chunk the samples are laid out batch first, [B, c, ...] (the transpose of the
    package's [samples, batch] convention), so that the decoder output [B, c, D] meets x [B, D]
    in one batched matrix product without a copy.
    """
    mu1, log_var1 = mu.unsqueeze(1), log_var.unsqueeze(1)
    z = mu1 + torch.exp(0.5 * log_var1) * eps
    params = model.decode(z)
    log_px_z = (log_px_fn or _log_px_given_z)(model, x, params)
    log_w = log_px_z + model.log_p_z(z) - model.log_q_z_given_x(z, mu1, log_var1)
    return log_w, log_px_z


# ------------------------------------------------------------------------- a whole data set
@dataclass
class Bounds:
    """Per-datapoint results over a data set, float64 on the CPU.

    ``lk`` [N]: L_k; ``elbo`` [N] = ``log_px_given_z`` - ``kl``, with E_q[log p(x|z)] averaged over
    the same k samples and the KL in closed form; ``kl_per_dim`` [N, J]; ``mu`` [N, J] the
    posterior means (for active units). ``k``, ``batch_size``, ``chunk``, ``seconds``.
    """

    lk: Tensor
    elbo: Tensor
    log_px_given_z: Tensor
    kl: Tensor
    kl_per_dim: Tensor
    mu: Tensor
    k: int
    batch_size: int
    chunk: int
    seconds: float


def _compiled_bernoulli():
    """A torch.compile'd fused Bernoulli log-likelihood (one pass over the logits)."""
    def f(x, params):
        return (x * params - F.softplus(params)).sum(-1)

    compiled = torch.compile(f, dynamic=True)
    return lambda model, x, params: compiled(x.unsqueeze(1), params)


@torch.inference_mode()
def evaluate_bounds(model, x: Union[Split, Tensor], k: int = 1, batch_size: Optional[int] = None,
                    chunk: Optional[int] = None, seed: int = 0, progress: bool = False,
                    budget: int = DEFAULT_BUDGET, compile: bool = False, desc: str = "L_k") -> Bounds:
    """L_k, the ELBO and its terms for every row of ``x`` (a Split, or a float [N, D] tensor),
    with k samples per datapoint.

    ``batch_size`` datapoints at a time, ``chunk`` samples at a time (defaults from ``budget``,
    see :func:`default_sizes`); ``seed`` fixes the samples; ``progress`` shows a tqdm bar with the
    time left; ``compile`` fuses the Bernoulli likelihood with torch.compile (pays off for long
    evaluations). The model is put in eval mode and restored.
    """
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
    log_px_fn = _compiled_bernoulli() if compile and type(model.likelihood) is Bernoulli else None
    gen = torch.Generator(device=device).manual_seed(int(seed))
    lk = torch.empty(n, dtype=torch.float64)
    rec = torch.empty(n, dtype=torch.float64)
    kl_dims, mus = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n * k, desc=desc, unit="sample", unit_scale=True, dynamic_ncols=True,
                   disable=None, file=sys.stderr, leave=False)
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    try:
        for i, xb in enumerate(as_split(x).batches(batch_size, device)):
            start, xb, b = i * batch_size, xb.to(dtype), len(xb)
            mu, log_var = model.encode(xb)
            noise = _NoiseStream(gen, b, mu.shape[-1], dtype, device)
            total = torch.full((b,), -math.inf, dtype=torch.float64, device=device)
            rec_sum = torch.zeros(b, dtype=torch.float64, device=device)
            for s0 in range(0, k, chunk):
                s = min(chunk, k - s0)
                log_w, log_px_z = chunk_log_weights(model, xb, mu, log_var, noise.take(s), log_px_fn)
                total = torch.logaddexp(total, torch.logsumexp(log_w, 1).double())
                rec_sum += log_px_z.double().sum(1)
                if bar is not None:
                    bar.update(s * b)
            lk[start:start + b] = (total - math.log(k)).cpu()
            rec[start:start + b] = (rec_sum / k).cpu()
            kl_dims.append(kl_normal_standard(mu, log_var).double().cpu())
            mus.append(mu.double().cpu())
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    kl_per_dim = torch.cat(kl_dims)
    kl = kl_per_dim.sum(-1)
    return Bounds(lk=lk, elbo=rec - kl, log_px_given_z=rec, kl=kl, kl_per_dim=kl_per_dim, mu=torch.cat(mus),
                  k=k, batch_size=batch_size, chunk=chunk, seconds=time.perf_counter() - t0)


def iw_bound_dataset(model, x: Union[Split, Tensor], k: int, batch_size: Optional[int] = None, chunk: Optional[int] = None,
                     seed: int = 0, progress: bool = False, budget: int = DEFAULT_BUDGET) -> Tensor:
    """L_k per datapoint [N] (float64, nats) for the rows of ``x``; see :func:`evaluate_bounds`."""
    return evaluate_bounds(model, x, k, batch_size, chunk, seed, progress, budget).lk


@torch.inference_mode()
def posterior_means(model, x: Union[Split, Tensor], batch_size: int = 1000) -> Tensor:
    """E_q[z|x] [N, J] for the rows of ``x`` (a Split or a float [N, D] tensor)."""
    p = next(model.parameters())
    return torch.cat([model.encode(xb.to(p.dtype))[0].double().cpu()
                      for xb in as_split(x).batches(batch_size, p.device)])


def active_unit_variances(mu: Tensor) -> Tensor:
    """Var over the data of E_q[z_j|x], per latent dimension [J] (mu: [N, J] posterior means)."""
    return mu.double().var(0, unbiased=True) if len(mu) > 1 else torch.zeros(mu.shape[-1], dtype=torch.float64)


def active_units(model_or_mu, x: Optional[Tensor] = None, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Number of active latent units (Burda et al. 2016): Var_x(E_q[z_j|x]) > ``threshold``.

    ``active_units(model, x)`` encodes ``x``; ``active_units(mu)`` takes posterior means [N, J].
    """
    mu = posterior_means(model_or_mu, x) if x is not None else model_or_mu
    return int((active_unit_variances(mu) > threshold).sum())


@torch.inference_mode()
def kl_per_dimension(model, x: Union[Split, Tensor], batch_size: int = 1000) -> Tensor:
    """Mean over the rows of ``x`` of KL(q(z_j|x) || N(0, 1)), per latent dimension [J] nats."""
    p = next(model.parameters())
    total = None
    for xb in as_split(x).batches(batch_size, p.device):
        mu, log_var = model.encode(xb.to(p.dtype))
        s = kl_normal_standard(mu, log_var).double().sum(0).cpu()
        total = s if total is None else total + s
    return total / len(x)


# ------------------------------------------------------------------------- bits per dimension
def bits_per_dim(log_px_nats, dim: int, offset_bits: float = 0.0):
    """Bits per dimension from a log-likelihood in nats per datapoint over ``dim`` values:
    -log p(x) / (dim ln 2) + ``offset_bits`` (the offset turns a density into bin probabilities,
    see :func:`bpd_convention`). Works on floats, arrays and tensors."""
    return -log_px_nats / (dim * LN2) + offset_bits


def bpd_convention(kind: str, levels: Optional[int], likelihood: str) -> Tuple[Optional[float], str]:
    """(offset in bits, explanation) for bits per dimension, or (None, why not) when the bound is
    not a likelihood of discrete data.

    - binary data with a Bernoulli likelihood: the bound is a log-probability; bpd = -L/(D ln 2).
    - data on a grid of ``levels`` values scaled to [0, 1] (8-bit images: 256 levels, spacing
      1/255) under a density (gaussian likelihoods): the probability of a value's bin is taken as
      density x bin width, so bpd = -L/(D ln 2) + log2(levels - 1). This is the usual convention
      for continuous models of quantised data; it bounds the discrete likelihood strictly only for
      models trained on uniformly dequantised data.
    - 8-bit data under the discretized logistic: the bound is already a log-probability of the
      levels; bpd = -L/(D ln 2), no offset.
    - a Bernoulli likelihood on grey levels is a cross-entropy, not a distribution over the
      levels; real-valued data have no bins: no bits per dimension.
    """
    binary = kind == "binary" or levels == 2
    if likelihood == "discretized-logistic":
        if levels == 256:
            return 0.0, ("8-bit data, discretized logistic: a probability mass on each of the 256 levels, so "
                         "bits/dim = -L / (D ln 2) exactly (the convention of published CIFAR-10 / CelebA numbers)")
        return None, f"not reported: the discretized logistic needs data on 256 levels, these have {levels}"
    if likelihood == "bernoulli":
        if binary:
            return 0.0, "binary data, Bernoulli likelihood: bits/dim = -L / (D ln 2) (exact log-probability)"
        return None, ("not reported: a Bernoulli likelihood on non-binary values is a cross-entropy, "
                      "not a normalised distribution over the data's values")
    if levels and levels > 2 and kind in ("unit", "binary"):
        off = math.log2(levels - 1)
        return off, (f"values on a grid of {levels} levels in [0, 1] (spacing 1/{levels - 1}) under a density: "
                     f"bits/dim = -L / (D ln 2) + log2({levels - 1}) = -L / (D ln 2) + {off:.4f} "
                     "(bin probability = density x bin width; a strict bound only for dequantised training)")
    return None, "not reported: the data are not discrete (no quantisation levels known)"


# ------------------------------------------------------------------------- a run
def _stats(v: Tensor) -> Dict[str, float]:
    v = v.double()
    se = float(v.std(unbiased=True) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "se": se}


def summarize(b: Bounds, dim: int, kind: str, levels: Optional[int], likelihood: str,
              threshold: float = ACTIVE_UNIT_THRESHOLD) -> dict:
    """The JSON-able summary of :class:`Bounds` (means, standard errors, bpd, diagnostics)."""
    elbo = _stats(b.elbo)
    lk = _stats(b.lk)
    offset, convention = bpd_convention(kind, levels, likelihood)
    var = active_unit_variances(b.mu)
    out = {
        "se_meaning": "standard error of the mean over the datapoints (std / sqrt(n))",
        "n": int(len(b.lk)), "dim": int(dim), "latent_dim": int(b.mu.shape[-1]), "k": b.k,
        "elbo": {**elbo, "log_px_given_z": float(b.log_px_given_z.mean()), "kl": float(b.kl.mean()),
                 "estimator": f"E_q[log p(x|z)] averaged over the same {b.k} sample(s) per datapoint, "
                              "KL(q(z|x) || p(z)) in closed form"},
        "lk": {**lk, "k": b.k, "gap_to_elbo": lk["mean"] - elbo["mean"]},
        "loss": -elbo["mean"],
        "iw_bound": lk["mean"] if b.k > 1 else None,  # headline scalar for `aevb report`
        "bits_per_dim": None if offset is None else {
            "elbo": bits_per_dim(elbo["mean"], dim, offset), "lk": bits_per_dim(lk["mean"], dim, offset),
            "lk_se": lk["se"] / (dim * LN2)},
        "bits_per_dim_convention": convention,
        "kl_per_dim": [float(v) for v in b.kl_per_dim.mean(0)],
        "active_units": int((var > threshold).sum()),
        "active_unit_threshold": threshold,
        "active_unit_variance": [float(v) for v in var],
        "batch_size": b.batch_size, "chunk": b.chunk, "seconds": b.seconds,
    }
    return out


def split_data(run, split: str, seed: int, data=None):
    """(x, y, kind, levels, note) of a run's split, binarized once with ``seed`` when the data set
    uses dynamic binarization (one fixed draw, the same for every k, so bounds are comparable)."""
    data = data if data is not None else run.load_data()
    s = data.split(split)
    x, kind, levels, note = s, data.kind, data.levels, None
    if data.dynamic_binarization:
        x = binarized(s, torch.Generator().manual_seed(int(seed)))
        kind, levels = "binary", 2
        note = (f"dynamically binarized data: the {split} split was binarized once, x ~ Bernoulli(x) with "
                f"seed {seed}, and that fixed draw is used for every sample and every k")
    return x, s.y, kind, levels, note


def evaluate_run(run, split: str = "test", k: int = 1, batch_size: Optional[int] = None,
                 chunk: Optional[int] = None, seed: int = 0, device: Union[str, torch.device] = "cpu",
                 progress: bool = False, budget: int = DEFAULT_BUDGET, compile: bool = False,
                 per_datapoint: bool = False, data=None, check=None, limit: Optional[int] = None) -> dict:
    """Evaluate a run (``aevb.runs.Run`` or its folder) on one split (its first ``limit``
    datapoints when given: a quicker estimate, said in the result); returns the summary dict.

    ``check(model, x)``, if given, is called once the model and data are loaded and before the
    evaluation starts (e.g. to print an estimate of its cost, or to refuse it by raising).

    With ``per_datapoint=True`` the dict also holds ``"per_datapoint"``: numpy arrays ``index``,
    ``label`` (or None), ``elbo``, ``log_px_given_z``, ``kl``, ``lk`` (not JSON; pop it first).
    """
    from .version import __version__
    from .model import VAE
    from .runs import Run, resolve_device

    run = run if isinstance(run, Run) else Run(run)
    dev = resolve_device(device) if isinstance(device, str) else device
    state = run.checkpoint(map_location=dev)
    model = VAE.from_config(run.config.model, int(state["data_dim"]), state.get("image_shape"))
    model.load_state_dict(state["model"])
    model.to(dev).eval()
    x, y, kind, levels, note = split_data(run, split, seed, data)
    n_split = len(x)
    if limit is not None and limit < n_split:
        x, y = x.subset(np.arange(int(limit))), None if y is None else y[:int(limit)]
    if x.dim != model.data_dim:
        from .runs import RunError

        raise RunError(f"the {split} split has {x.dim} values per datapoint but the run's model "
                       f"expects {model.data_dim}; check the run's data set and --data-dir")
    if check is not None:
        check(model, x)
    b = evaluate_bounds(model, x, k, batch_size, chunk, seed, progress, budget, compile,
                        desc=f"L_{k} on {split}")
    out = {"format": "aevb-evaluation", "version": 1, "aevb_version": __version__, "run": str(run.path),
           "split": split, "datapoints": len(x), "split_datapoints": n_split,
           "dataset": run.config.data.dataset, "epoch": int(state["epoch"]),
           "likelihood": run.config.model.likelihood, "seed": int(seed), "device": str(dev),
           "torch_version": torch.__version__,
           "units": "nats per datapoint (summed over the data dimensions); loss = -ELBO"}
    out.update(summarize(b, x.dim, kind, levels, run.config.model.likelihood))
    out["binarization"] = note
    if per_datapoint:
        out["per_datapoint"] = {
            "index": np.arange(len(x), dtype=np.int64),
            "label": None if y is None else y.cpu().numpy().astype(np.int64),
            "elbo": b.elbo.numpy(), "log_px_given_z": b.log_px_given_z.numpy(), "kl": b.kl.numpy(),
            "lk": b.lk.numpy()}
    return out


def write_per_datapoint(path: Union[str, Path], rows: dict) -> Path:
    """Write per-datapoint rows atomically: ``.csv`` (a header line, one row per datapoint) or
    ``.npy`` (a structured array with the same fields). Other extensions raise ValueError."""
    from .io import atomic_path, atomic_write_text

    path = Path(path)
    fields = [f for f in ("index", "label", "elbo", "log_px_given_z", "kl", "lk") if rows.get(f) is not None]
    ext = path.suffix.lower()
    if ext == ".csv":
        cols = [rows[f] for f in fields]
        lines = [",".join(fields)]
        for vals in zip(*cols):
            lines.append(",".join(str(int(v)) if f in ("index", "label") else repr(float(v))
                                  for f, v in zip(fields, vals)))
        atomic_write_text(path, "\n".join(lines) + "\n")
    elif ext == ".npy":
        dt = [(f, np.int64 if f in ("index", "label") else np.float64) for f in fields]
        arr = np.empty(len(rows["index"]), dtype=dt)
        for f in fields:
            arr[f] = rows[f]
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, arr)
    else:
        raise ValueError(f"--per-datapoint {path}: use a .csv or .npy file name")
    return path


def default_output(run_path: Union[str, Path], split: str, k: int, limit: Optional[int] = None) -> Path:
    """RUN/evaluation[-SPLIT][-kK][-firstN].json: the split is named unless it is 'test', k unless
    it is 1, N when only the first N datapoints were evaluated."""
    name = ("evaluation" + ("" if split == "test" else f"-{split}") + ("" if k == 1 else f"-k{k}")
            + ("" if limit is None else f"-first{limit}"))
    return Path(run_path) / f"{name}.json"
