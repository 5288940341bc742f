"""Log-densities of the posterior, the prior and the likelihoods, in nats.

Conventions: every ``log_*`` function returns one value per datapoint (summed over the data or
latent dimensions, i.e. over the last axis). Leading axes are free, so the same code handles
[batch, D] and [samples, batch, D].

Likelihoods are chosen by name (``bernoulli``, ``gaussian``, ``gaussian-fixed``,
``discretized-logistic``). A decoder emits
``n_params * D`` numbers per datapoint: the distribution's *parameters* (Bernoulli logits;
Gaussian mean and log-variance), never probabilities squashed for a loss. Normalising constants
are included, so bounds of different likelihoods are comparable densities.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .linear import traced

LOG_2PI = math.log(2.0 * math.pi)
# what a Gaussian likelihood's mean may pass through
MEAN_ACTIVATIONS = ("identity", "sigmoid")


# ---------------------------------------------------------------- Gaussian posterior and prior
def log_normal(x: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """log N(x; mean, diag(exp(log_var))), summed over the last axis. Shapes broadcast."""
    return -0.5 * (LOG_2PI + log_var + (x - mean).pow(2) * torch.exp(-log_var)).sum(-1)


def log_standard_normal(z: Tensor) -> Tensor:
    """log N(z; 0, I), summed over the last axis: the prior log p(z)."""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


def kl_normal_standard(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, diag exp(log_var)) || N(0, I)) per latent dimension, [..., J] (Appendix B).

    -KL = 1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).
    """
    return 0.5 * (mu.pow(2) + torch.exp(log_var) - 1.0 - log_var)


# ---------------------------------------------------------------- likelihoods p(x|z)
class Likelihood:
    """A factorised likelihood p(x|z) = prod_d p(x_d | params_d(z)).

    ``n_params``: how many numbers the decoder emits per data dimension.
    ``log_prob(x, params)``: x [..., D], params [..., n_params*D] -> [...] nats.
    ``mean(params)``: E[x|z] [..., D]; ``sample(params)``: a draw [..., D].
    ``data_kinds``: which data kinds (see aevb.data.base) the likelihood is a density for.
    """

    name = "likelihood"
    n_params = 1
    data_kinds = ("binary", "unit", "real")
    # whether log_prob takes the decoder's parameters in a lower precision (bfloat16) and computes
    # in float32 itself; otherwise the VAE converts them to float32 first
    takes_low_precision = False

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        raise NotImplementedError

    def sample(self, params: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        raise NotImplementedError

    def output_bias(self, mean: Tensor, var: Tensor) -> Optional[Tensor]:
        """Decoder outputs [n_params * D] that make p(x|z) match data with per-value ``mean`` and
        ``var`` ([D] each): the decoder's starting bias (see VAE.fit_to_data); None: no
        opinion."""
        return None

    def log_prob_samples(self, x: Tensor, params: Tensor) -> Tensor:
        """log p(x|z) for c samples of each datapoint laid out batch first: x [B, D], params
        [B, c, n_params*D] -> [B, c] nats (the layout of aevb.bounds' chunks)."""
        return self.log_prob(x.unsqueeze(1), params)

    def check_data(self, x: Tensor, what: str = "the data") -> None:
        """Raise ValueError with a fix when ``x`` holds values the likelihood cannot model."""
        if not torch.isfinite(x).all():
            raise ValueError(f"{what} contains NaN or infinite values; clean the data first")

    def check_levels(self, levels: Optional[int], kind: str, dynamic_binarization: bool = False,
                     what: str = "the data") -> None:
        """Raise ValueError with a fix when the data's quantisation does not suit the likelihood
        (only discrete likelihoods care)."""

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def _logit(p: Tensor, eps: float = 1e-3) -> Tensor:
    p = p.clamp(eps, 1.0 - eps)
    return torch.log(p) - torch.log1p(-p)


def _spread(var: Tensor) -> Tensor:
    """Per-value variances floored at 1 % of their mean (a value constant in the training data
    must not start with a near-zero variance, or the first unseen value costs thousands of nats)."""
    return var.clamp(min=max(1e-2 * float(var.mean()), 1e-8))


# values per slice of the Bernoulli terms (1 MB in float32): a slice's temporaries stay in the
# CPU's caches, where whole-batch temporaries (60 MB for 128 full-size photos) are new memory
# at every step, and the page faults of new memory cost more than the arithmetic
BERNOULLI_SLICE = 1 << 18
# logits of fewer values (an MNIST batch's 100,352) take the plain element-wise form: their
# temporaries are reused memory already, and the slices' own calls would cost more than they save
SLICED_FROM = 4 * BERNOULLI_SLICE


def _slices(rows: int, d: int, device: torch.device):
    """(start, end) of row slices of about BERNOULLI_SLICE values on the CPU; one slice elsewhere
    (a GPU's kernels want the whole batch)."""
    step = max(1, BERNOULLI_SLICE // max(d, 1)) if device.type == "cpu" else max(rows, 1)
    return [(a, min(a + step, rows)) for a in range(0, rows, step)]


class _BernoulliLogProb(torch.autograd.Function):
    """sum_d x_d l_d - softplus(l_d) for x [M, D] and logits [K, M, D] -> [K, M], computed in
    ``dtype`` (float32 or wider) slice by slice, with the gradient g (x - sigmoid(l)) written in
    the logits' dtype: no temporary as large as the batch, and bfloat16 logits need no float32
    copy of the whole batch, nor their gradient a conversion back."""

    @staticmethod
    def forward(x: Tensor, logits: Tensor, dtype: torch.dtype) -> Tensor:
        k, m, d = logits.shape
        out = torch.empty(k, m, dtype=dtype, device=logits.device)
        for i in range(k):  # (no operation here is one autocast lowers: all stay in dtype)
            for a, b in _slices(m, d, logits.device):
                l = logits[i, a:b].to(dtype)
                t = torch.mul(x[a:b].to(dtype), l)
                out[i, a:b] = t.sub_(F.softplus(l)).sum(-1)
        return out

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, logits, dtype = inputs
        ctx.save_for_backward(x, logits)
        ctx.dtype = dtype

    @staticmethod
    def backward(ctx, g: Tensor):
        x, logits = ctx.saved_tensors
        k, m, d = logits.shape
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
        minus_g = g.to(ctx.dtype).neg().unsqueeze(-1)
        for i in range(k):
            for a, b in _slices(m, d, logits.device):
                s = torch.sigmoid(logits[i, a:b].to(ctx.dtype))
                grad[i, a:b] = s.sub_(x[a:b]).mul_(minus_g[i, a:b])
        return None, grad, None


def _float_dtype(x: Tensor, params: Tensor) -> torch.dtype:
    """The dtype a likelihood computes in: x's and the parameters' promoted, float32 at least."""
    return torch.promote_types(torch.promote_types(x.dtype, params.dtype), torch.float32)


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """log Bernoulli(x | sigmoid(l)) = sum_d x_d l_d - softplus(l_d) for x [..., D] and logits
    [..., D] (broadcast) -> [...] nats, in float32 at least whatever the logits' dtype (bfloat16
    logits from an autocast decoder are converted slice by slice). Where x's shape is the
    trailing part of the logits' (x [B, D] against [S, B, D], the training layout), it runs by
    slices of the batch with its own gradient (see _BernoulliLogProb); other layouts, traces and
    compilations, and logits of fewer than SLICED_FROM values take the plain element-wise form."""
    dtype = _float_dtype(x, logits)
    n = x.dim()
    if (logits.numel() < SLICED_FROM or n == 0 or x.shape[-1] == 0 or logits.dim() < n
            or tuple(logits.shape[logits.dim() - n:]) != tuple(x.shape) or x.requires_grad or traced()
            or x.device != logits.device):
        logits = logits.to(dtype)  # (once: both terms' gradients then add up in float32)
        out = x.to(dtype) * logits  # x * l, then softplus(l) subtracted in place: one temporary fewer
        return out.sub_(F.softplus(logits)).sum(-1)
    d = x.shape[-1]
    lead = logits.shape[:-1]
    flat = _BernoulliLogProb.apply(x.reshape(-1, d), logits.reshape(-1, x.numel() // d, d), dtype)
    return flat.reshape(lead)


class Bernoulli(Likelihood):
    """p(x_d|z) = Bernoulli(sigmoid(logit_d)). log p = x*logit - softplus(logit) (stable).

    For grey levels in [0, 1] this is the negative binary cross-entropy (as in the PyTorch VAE
    example); it is a proper density only for binary data.
    """

    name = "bernoulli"
    n_params = 1
    data_kinds = ("binary", "unit")

    # the decoder's logits may come in bfloat16: bernoulli_log_prob computes in float32 slice by
    # slice, so the VAE need not convert the whole batch of logits first (VAE.log_p_x_given_z)
    takes_low_precision = True

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return bernoulli_log_prob(x, params)

    def log_prob_samples(self, x: Tensor, params: Tensor) -> Tensor:
        """The same density with sum_d x_d l_d as one matrix-vector product per datapoint (no
        [B, c, D] temporary for x * l: about 4x faster at c = 51, D = 784). One sample gains
        nothing from it and takes the element-wise form."""
        if params.shape[1] == 1:
            return self.log_prob(x.unsqueeze(1), params)
        params = params.to(_float_dtype(x, params))
        return torch.bmm(params, x.to(params.dtype).unsqueeze(-1)).squeeze(-1) - F.softplus(params).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    def output_bias(self, mean: Tensor, var: Tensor) -> Tensor:
        return _logit(mean)

    def sample(self, params, generator=None):
        return torch.bernoulli(torch.sigmoid(params), generator=generator)

    def check_data(self, x: Tensor, what: str = "the data") -> None:
        super().check_data(x, what)
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{what} has values in [{lo:g}, {hi:g}], but the Bernoulli likelihood needs values in "
                "[0, 1]; scale the data to [0, 1] or choose --likelihood gaussian")


class Gaussian(Likelihood):
    """p(x_d|z) = N(mean_d, exp(log_var_d)), both emitted by the decoder.

    ``mean_activation='sigmoid'`` squashes the mean into (0, 1) (the AEVB paper's Frey Face
    decoder). ``min_log_var`` floors the log-variance (softly, via softplus) so that the density of
    data on a grid cannot diverge.
    """

    name = "gaussian"
    n_params = 2

    def __init__(self, mean_activation: str = "identity", min_log_var: Optional[float] = None):
        if mean_activation not in MEAN_ACTIVATIONS:
            raise ValueError(f"mean_activation must be one of {', '.join(MEAN_ACTIVATIONS)}, not {mean_activation!r}")
        self.mean_activation = mean_activation
        self.min_log_var = min_log_var

    def split(self, params: Tensor):
        mean, log_var = params.chunk(2, dim=-1)
        if self.mean_activation == "sigmoid":
            mean = torch.sigmoid(mean)
        if self.min_log_var is not None:
            log_var = self.min_log_var + F.softplus(log_var - self.min_log_var)
        return mean, log_var

    def log_prob(self, x, params):
        mean, log_var = self.split(params)
        return log_normal(x, mean, log_var)

    def mean(self, params):
        return self.split(params)[0]

    def output_bias(self, mean: Tensor, var: Tensor) -> Tensor:
        loc = _logit(mean) if self.mean_activation == "sigmoid" else mean
        log_var = _spread(var).log()
        if self.min_log_var is not None:  # invert the soft floor of split()
            log_var = self.min_log_var + torch.log(torch.expm1((log_var - self.min_log_var).clamp(min=1e-3)))
        return torch.cat([loc, log_var])

    def sample(self, params, generator=None):
        mean, log_var = self.split(params)
        eps = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device, generator=generator)
        return mean + torch.exp(0.5 * log_var) * eps

    def extra_repr(self):
        return f"mean_activation={self.mean_activation!r}, min_log_var={self.min_log_var}"


class GaussianFixed(Likelihood):
    """p(x_d|z) = N(mean_d, sigma^2) with a given sigma. With sigma = 1 the negative
    log-likelihood is half the squared error plus D/2 log(2 pi): the MSE tutorial's loss."""

    name = "gaussian-fixed"
    n_params = 1

    def __init__(self, sigma: float = 1.0, mean_activation: str = "identity"):
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        if mean_activation not in MEAN_ACTIVATIONS:
            raise ValueError(f"mean_activation must be one of {', '.join(MEAN_ACTIVATIONS)}, not {mean_activation!r}")
        self.sigma = float(sigma)
        self.mean_activation = mean_activation
        self._log_var = 2.0 * math.log(self.sigma)

    def mean(self, params):
        return torch.sigmoid(params) if self.mean_activation == "sigmoid" else params

    def output_bias(self, mean: Tensor, var: Tensor) -> Tensor:
        return _logit(mean) if self.mean_activation == "sigmoid" else mean

    def log_prob(self, x, params):
        d = x.shape[-1]
        sq = (x - self.mean(params)).pow(2).sum(-1)
        return -0.5 * (d * (LOG_2PI + self._log_var) + sq / self.sigma ** 2)

    def sample(self, params, generator=None):
        mean = self.mean(params)
        eps = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device, generator=generator)
        return mean + self.sigma * eps

    def extra_repr(self):
        return f"sigma={self.sigma}, mean_activation={self.mean_activation!r}"


LEVELS = 256  # 8-bit data: values k / 255, k = 0..255
HALF_BIN = 0.5 / (LEVELS - 1)  # half the spacing of the levels in [0, 1] units
# PixelCNN++'s floor on the log-scale, -7 on its [-1, 1] scale, in aevb's [0, 1] units.
MIN_LOG_SCALE = -7.0 - math.log(2.0)


def log_logistic_bin(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log P(value = x) of a logistic(mean, exp(log_scale)) discretized to the 256 levels
    x = k/255 of [0, 1]: the mass of [x - 1/510, x + 1/510], the edge levels 0 and 1 taking the
    tails (-inf, 1/510] and [1 - 1/510, inf). Element-wise, shapes broadcast, nats.

    With a = (x - mean + 1/510)/s and b = (x - mean - 1/510)/s the mass of an inner level is
    sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a)), computed in logs: stable
    for every mean and scale (the terms never cancel), so PixelCNN++'s fallback to density x
    bin width for tiny bins is not needed.
    """
    inv_s = torch.exp(-log_scale)
    centred = x - mean
    a = inv_s * (centred + HALF_BIN)
    b = inv_s * (centred - HALF_BIN)
    log_delta = -log_scale - math.log(LEVELS - 1)  # log(a - b)
    # log(1 - exp(-delta)); for delta < e^-60 (where exp would underflow in float32) it is
    # log(delta) to within delta / 2
    tiny = log_delta < -60.0
    safe = torch.exp(torch.where(tiny, torch.zeros_like(log_delta), log_delta))  # finite gradients in both branches
    log_width = torch.where(tiny, log_delta, torch.log(-torch.expm1(-safe)))
    lower_edge, upper_edge = F.logsigmoid(a), F.logsigmoid(-b)
    inner = lower_edge + upper_edge + log_width
    return torch.where(x < HALF_BIN, lower_edge, torch.where(x > 1.0 - HALF_BIN, upper_edge, inner))


class DiscretizedLogistic(Likelihood):
    """A probability mass on the 256 levels of 8-bit data (Salimans et al. 2017, PixelCNN++),
    per value (pixel and channel), optionally a mixture of ``components`` logistics.

    Data are k/255 in [0, 1]. Parameters per value: mean and log-scale (one component), or
    mixture logits, means and log-scales (K components: 3K), as n_params blocks of D. The masses
    of the 256 levels sum to 1, so log p(x|z) is a log-probability and bits/dim are exact.
    ``mean`` is E[x|z] of this discrete distribution and ``sample`` draws from it.
    """

    name = "discretized-logistic"
    data_kinds = ("unit", "binary")

    def __init__(self, components: int = 1):
        if int(components) < 1:
            raise ValueError(f"components must be at least 1, got {components}")
        self.components = int(components)
        self.n_params = 2 if self.components == 1 else 3 * self.components

    def split(self, params: Tensor):
        """params [..., n_params*D] -> (log mixture weights or None, means, log-scales), each
        [..., K, D], in [0, 1] units. The decoder's numbers are PixelCNN++'s parameters on its
        [-1, 1] scale (mean m, log-scale l, floored at -7), so an untrained decoder (outputs near
        0) starts at mean 0.5: mean = (m + 1) / 2, log-scale = max(l, -7) - ln 2."""
        k = self.components
        p = params.unflatten(-1, (self.n_params, -1))
        logits, m, l = (None, p[..., :1, :], p[..., 1:, :]) if k == 1 else \
            (torch.log_softmax(p[..., :k, :], dim=-2), p[..., k:2 * k, :], p[..., 2 * k:, :])
        return logits, 0.5 * m + 0.5, l.clamp(min=MIN_LOG_SCALE + math.log(2.0)) - math.log(2.0)

    def output_bias(self, mean: Tensor, var: Tensor) -> Tensor:
        """Every component at the data's mean with the logistic scale of their variance
        (var = s^2 pi^2 / 3), on PixelCNN++'s [-1, 1] scale; equal mixture weights."""
        log_s = 0.5 * torch.log(3.0 * _spread(var)) - math.log(math.pi)
        raw_l = (log_s + math.log(2.0)).clamp(min=MIN_LOG_SCALE + math.log(2.0))
        k = self.components
        blocks = [2.0 * mean - 1.0, raw_l] if k == 1 else \
            [torch.zeros_like(mean)] * k + [2.0 * mean - 1.0] * k + [raw_l] * k
        return torch.cat(blocks)

    def log_prob_values(self, x: Tensor, params: Tensor) -> Tensor:
        """log P(x_d | z) per value: x [..., D], params [..., n_params*D] -> [..., D]."""
        log_w, mean, log_scale = self.split(params)
        lp = log_logistic_bin(x.unsqueeze(-2), mean, log_scale)
        return lp[..., 0, :] if log_w is None else torch.logsumexp(log_w + lp, dim=-2)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return self.log_prob_values(x, params).sum(-1)

    def mean(self, params: Tensor, chunk_elements: int = 1 << 22) -> Tensor:
        """E[x|z] = (1/255) sum_{j=0}^{254} P(x > (j + 1/2)/255): [..., D], exact."""
        log_w, mean, log_scale = self.split(params)
        inv_s = torch.exp(-log_scale)
        thresholds = (torch.arange(LEVELS - 1, dtype=mean.dtype, device=mean.device) + 0.5) / (LEVELS - 1)
        step = max(1, chunk_elements // max(1, mean.numel()))
        total = torch.zeros_like(mean)
        for i in range(0, LEVELS - 1, step):
            t = thresholds[i:i + step]
            total += torch.sigmoid((mean.unsqueeze(-1) - t) * inv_s.unsqueeze(-1)).sum(-1)
        per_component = total / (LEVELS - 1)
        return per_component[..., 0, :] if log_w is None else (log_w.exp() * per_component).sum(-2)

    def sample(self, params: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """One draw per value: a component (mixtures), a logistic draw, rounded to the nearest
        level and clamped into [0, 1] (so the edge levels take the tails): [..., D]."""
        log_w, mean, log_scale = self.split(params)

        def uniform(shape):
            u = torch.rand(shape, dtype=mean.dtype, device=mean.device, generator=generator)
            return u.clamp(1e-6, 1.0 - 1e-6)

        if log_w is None:
            mean, log_scale = mean[..., 0, :], log_scale[..., 0, :]
        else:  # Gumbel-max picks a component per value
            pick = (log_w - torch.log(-torch.log(uniform(log_w.shape)))).argmax(-2, keepdim=True)
            mean, log_scale = mean.gather(-2, pick)[..., 0, :], log_scale.gather(-2, pick)[..., 0, :]
        u = uniform(mean.shape)
        x = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
        return torch.round(x * (LEVELS - 1)).clamp(0, LEVELS - 1) / (LEVELS - 1)

    def check_levels(self, levels, kind, dynamic_binarization=False, what="the data"):
        if dynamic_binarization:
            raise ValueError(f"{what} is binarized dynamically (binary values), but the discretized logistic "
                             "models 8-bit values on 256 levels; drop --binarize or choose --likelihood bernoulli")
        if levels != LEVELS:
            fix = ("choose --likelihood bernoulli" if levels == 2 else
                   "store the data as 8-bit images (PNG/JPEG via folder:, uint8 arrays via array:) "
                   "or choose --likelihood gaussian")
            raise ValueError(f"{what} is not 8-bit data on 256 levels (it has levels={levels}, kind {kind!r}), "
                             f"but the discretized logistic puts a mass on each of 256 levels k/255; {fix}")

    def check_data(self, x: Tensor, what: str = "the data") -> None:
        super().check_data(x, what)
        if x.numel() == 0:
            return
        off, lo, hi = 0.0, math.inf, -math.inf
        rows = max(1, (1 << 22) // max(1, x.shape[-1]))  # bounded temporaries for big splits
        for i in range(0, len(x), rows):
            scaled = x[i:i + rows] * (LEVELS - 1)
            off = max(off, float((scaled - scaled.round()).abs().max()))
            lo, hi = (min(lo, float(scaled.min()) / (LEVELS - 1)), max(hi, float(scaled.max()) / (LEVELS - 1)))
        if lo < 0.0 or hi > 1.0 or off > 1e-3:
            raise ValueError(
                f"{what} has values that are not levels k/255 of [0, 1] (range [{lo:g}, {hi:g}], largest "
                f"distance from a level {off / (LEVELS - 1):.3g}); the discretized logistic needs 8-bit data "
                "scaled to [0, 1]: store it as uint8 (array:) or 8-bit images (folder:), or choose "
                "--likelihood gaussian")

    def extra_repr(self):
        return f"components={self.components}"


LIKELIHOODS = {"bernoulli": Bernoulli, "gaussian": Gaussian, "gaussian-fixed": GaussianFixed,
               "discretized-logistic": DiscretizedLogistic}


def mean_activation_likelihoods() -> list:
    """The likelihoods that take a mean activation (their constructor has ``mean_activation``)."""
    import inspect

    return [name for name, cls in LIKELIHOODS.items() if "mean_activation" in inspect.signature(cls).parameters]


def likelihood_of(settings) -> "Likelihood":
    """The likelihood a model's settings name (an aevb.config.ModelConfig: ``likelihood``,
    ``sigma``, ``mean_activation``, ``min_log_var``, ``components``)."""
    return get_likelihood(settings.likelihood, sigma=settings.sigma, mean_activation=settings.mean_activation,
                          min_log_var=settings.min_log_var, components=settings.components)


def get_likelihood(name: str, sigma: float = 1.0, mean_activation: str = "identity",
                   min_log_var: Optional[float] = None, components: int = 1) -> Likelihood:
    """Build a likelihood by name; unknown names raise ValueError listing the valid ones."""
    if name == "bernoulli":
        return Bernoulli()
    if name == "gaussian":
        return Gaussian(mean_activation=mean_activation, min_log_var=min_log_var)
    if name == "gaussian-fixed":
        return GaussianFixed(sigma=sigma, mean_activation=mean_activation)
    if name == "discretized-logistic":
        return DiscretizedLogistic(components=components)
    raise ValueError(f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}")


class DataDistribution(torch.distributions.Distribution):
    """p(x|z) for decoder outputs ``params`` [..., n_params * D], as ``VAE.decode(z)`` returns
    it: ``.mean`` [..., D] in data space (e.g. probabilities for Bernoulli data, not logits),
    ``.log_prob(x)`` [...] nats summed over the D values, ``.sample()`` a draw [..., D], and
    ``.params`` the decoder's raw outputs (logits for Bernoulli)."""

    arg_constraints: dict = {}

    def __init__(self, likelihood: Likelihood, params: Tensor):
        self.likelihood, self.params = likelihood, params
        dim = params.shape[-1] // likelihood.n_params
        super().__init__(batch_shape=params.shape[:-1], event_shape=(dim,), validate_args=False)

    @property
    def mean(self) -> Tensor:
        return self.likelihood.mean(self.params)

    def log_prob(self, value: Tensor) -> Tensor:
        return self.likelihood.log_prob(value, self.params)

    def sample(self, sample_shape=torch.Size(), generator: Optional[torch.Generator] = None) -> Tensor:
        if tuple(sample_shape):
            params = self.params.expand(tuple(sample_shape) + tuple(self.params.shape))
            return self.likelihood.sample(params, generator)
        return self.likelihood.sample(self.params, generator)
