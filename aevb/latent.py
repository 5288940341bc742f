"""The latent side of a VAE: a stack of latent cells, bottom (next to x) first.

Each cell is one stochastic layer z_l with its two densities:

- inference, q(z_l | .): a diagonal Gaussian whose parameters come from the layer below (the
  model's encoder for the bottom cell, the cell's ``q_net`` above it), optionally followed by a
  normalising flow (aevb.flows) on the bottom cell;
- generation, p(z_l | .): the prior (aevb.priors) for the top cell, a conditional Gaussian
  ``p_net(z_{l+1})`` for every cell below it.

One Gaussian layer (the AEVB paper) is one cell with the N(0, I) prior; a flow or a learned prior
is a part of that cell; stacked layers (Burda et al. 2016; Sønderby et al. 2016) are more cells.
:meth:`LatentStack.sample` is the one function that draws z and gives log q(z|x) and log p(z)
for every kind of latents, for training and evaluation alike (aevb.model.VAE.log_weights).

Inference through the stack is ``bottom-up`` (IWAE: each q(z_l | z_{l-1}) reads the sample
below) or ``top-down`` (ladder VAE: a deterministic bottom-up pass gives every layer's data term,
then sampling runs from the top and each lower layer combines its data term with p(z_l | z_{l+1})
by precision weighting, see aevb.stacked).

Shapes: noise eps [..., J] with J = the sum of the layer sizes (layer by layer, bottom first);
the encoder's (mu, log_var) broadcast against it; log-densities [...] in nats.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .distributions import kl_normal_standard, log_normal
from .flows import Flow
from .priors import Prior, StandardNormal
from .stacked import INFERENCE, precision_weighted

Encode = Optional[Callable[[Tensor], Tuple[Tensor, Tensor]]]


@dataclass
class LatentSample:
    """One draw of every layer. ``z`` [..., J] (all layers, bottom first); ``log_q`` and ``log_p``
    [...]: log q(z|x) and log p(z) (with stacked layers the products over layers; None when only
    z was asked for);
    ``kl_layers`` [..., L]: log q(z_l | .) - log p(z_l | .) per layer with more than one layer
    (their sum is log q - log p), else None."""

    z: Tensor
    log_q: Optional[Tensor]
    log_p: Optional[Tensor]
    kl_layers: Optional[Tensor] = None


class LatentCell(nn.Module):
    """One stochastic layer of ``size`` latents.

    ``q_net``: the layer below -> (mu, log_var) of this layer's q (None for the bottom cell, whose
    parameters are the model's encoder output); ``p_net``: z_{l+1} -> (mu, log_var) of
    p(z_l | z_{l+1}) (None for the top cell); ``prior``: p(z_L) of the top cell; ``flow``: a
    normalising flow on q (bottom cell of a one-layer model)."""

    def __init__(self, size: int, q_net: Optional[nn.Module] = None, p_net: Optional[nn.Module] = None,
                 prior: Optional[Prior] = None, flow: Optional[Flow] = None):
        super().__init__()
        self.size = int(size)
        # registration order fixes the order of parameters (and of a checkpoint's optimizer state)
        self.q_net = q_net
        self.p_net = p_net
        self.prior = prior
        self.flow = flow

    def q_sample(self, eps: Tensor, mu: Tensor, log_var: Tensor, density: bool = True):
        """(z, log q(z | .)) for noise eps: z = mu + sigma * eps, then the flow if any:
        log q = log N(z_0; mu, sigma^2) - log |det dz/dz_0| (None without ``density``)."""
        z0 = mu + torch.exp(0.5 * log_var) * eps
        log_q = log_normal(z0, mu, log_var) if density else None
        if self.flow is None:
            return z0, log_q
        z, log_det = self.flow(z0, torch.cat([mu, log_var], -1))
        return z, (log_q - log_det) if density else None


class LatentStack(nn.Module):
    """The cells of a model, bottom first, and how they are inferred (``inference``)."""

    def __init__(self, cells: Sequence[LatentCell], inference: str = "bottom-up"):
        super().__init__()
        if inference not in INFERENCE:
            raise ValueError(f"unknown inference {inference!r}; choose one of {', '.join(INFERENCE)}")
        if not cells:
            raise ValueError("a model needs at least one latent cell")
        if cells[-1].prior is None:
            raise ValueError("the top latent cell needs a prior")
        self.cells = nn.ModuleList(cells)
        self.inference = inference
        self.sizes = [c.size for c in cells]

    # ---------------------------------------------------------------- sizes and parts
    @property
    def total(self) -> int:
        """J: the full latent vector's size (every layer)."""
        return sum(self.sizes)

    @property
    def prior(self) -> Prior:
        return self.cells[-1].prior

    @property
    def flow(self) -> Optional[Flow]:
        return self.cells[0].flow

    @property
    def closed_form_kl(self) -> bool:
        """KL(q(z|x) || p(z)) in closed form: one Gaussian cell (no flow) with the N(0, I) prior."""
        return len(self.cells) == 1 and self.flow is None and self.prior.closed_form_kl

    def split(self, z: Tensor) -> List[Tensor]:
        """[z_1, ..., z_L] of a full latent vector [..., J]."""
        return list(torch.split(z, self.sizes, dim=-1)) if len(self.sizes) > 1 else [z]

    # ---------------------------------------------------------------- inference
    def _walk(self, eps: Optional[Tensor], mu: Tensor, log_var: Tensor, given: Optional[Tensor] = None,
              densities: bool = True):
        """Every layer's (z_l, log q_l, mu_l, log_var_l) for noise eps [..., J] and the bottom
        layer's data term (mu, log_var): the one pass that sampling, the mean path and the
        density of ``given`` latents [..., J] (instead of noise; no flow) share. Without
        ``densities`` log q_l is None (nothing computes it)."""
        noise = self.split(eps if given is None else given)
        cells = self.cells

        def draw(cell, l, mu_l, lv_l):
            if given is None:
                return cell.q_sample(noise[l], mu_l, lv_l, densities)
            return noise[l], log_normal(noise[l], mu_l, lv_l)

        if self.inference == "bottom-up" or len(cells) == 1:
            out, below, params = [], None, (mu, log_var)
            for l, cell in enumerate(cells):
                if l:
                    params = cell.q_net(below)
                z, log_q = draw(cell, l, *params)
                out.append((z, log_q) + tuple(params))
                below = z
            return out
        terms = [(mu, log_var)]  # top-down: the deterministic bottom-up pass, then sample from the top
        for cell in cells[1:]:
            terms.append(cell.q_net(terms[-1][0]))
        out: list = [None] * len(cells)
        above = None
        for l in range(len(cells) - 1, -1, -1):
            params = terms[l] if above is None else precision_weighted(*terms[l], *cells[l].p_net(above))
            z, log_q = draw(cells[l], l, *params)
            out[l] = (z, log_q) + tuple(params)
            above = z
        return out

    def sample(self, eps: Tensor, mu: Tensor, log_var: Tensor, encode: Encode = None,
               densities: bool = True) -> LatentSample:
        """z ~ q(z|x) for noise eps [..., J], with log q(z|x) and log p(z) [...]: the latent side
        of an importance weight. ``encode`` is the model's encoder (a VampPrior reads it). Without
        ``densities`` only z is drawn (log q and log p are None): the SGVB estimator with the KL
        in closed form needs no more."""
        layers = self._walk(eps, mu, log_var, densities=densities)
        if not densities:
            return LatentSample(torch.cat([t[0] for t in layers], -1) if len(layers) > 1 else layers[0][0], None, None)
        if len(layers) == 1:
            z, log_q = layers[0][:2]
            return LatentSample(z, log_q, self.prior.log_prob(z, encode))
        z = torch.cat([t[0] for t in layers], -1)
        log_q_layers = torch.stack([t[1] for t in layers], -1)
        log_p_layers = self.log_p_layers(z, encode)
        return LatentSample(z, log_q_layers.sum(-1), log_p_layers.sum(-1), log_q_layers - log_p_layers)

    def mean_path(self, mu: Tensor, log_var: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(code, means, log-variances) [..., J] along q's mean path (every noise 0): the code of
        a datapoint (with a flow, the flow applied to the mean) and the Gaussian parameters of
        each layer there (before any flow)."""
        zero = torch.zeros(*mu.shape[:-1], self.total, dtype=mu.dtype, device=mu.device)
        layers = self._walk(zero, mu, log_var, densities=False)
        if len(layers) == 1:
            return layers[0][0], layers[0][2], layers[0][3]
        return tuple(torch.cat([t[i] for t in layers], -1) for i in (0, 2, 3))

    def log_q(self, z: Tensor, mu: Tensor, log_var: Tensor) -> Tensor:
        """log q(z|x) [...] of given latents z [..., J] (without a flow, whose density is known
        only at its own draws)."""
        if self.flow is not None:
            raise ValueError("a flow posterior's density is known at its own draws only: use "
                             "rsample_and_log_prob()")
        return torch.stack([t[1] for t in self._walk(None, mu, log_var, given=z)], -1).sum(-1)

    def kl_per_dim(self, mu: Tensor, log_var: Tensor) -> Optional[Tensor]:
        """Closed-form KL per latent [..., J] where there is one (:attr:`closed_form_kl`), else None."""
        return kl_normal_standard(mu, log_var) if self.closed_form_kl else None

    # ---------------------------------------------------------------- generation
    def log_p_layers(self, z: Tensor, encode: Encode = None) -> Tensor:
        """log p per layer [..., L]: p(z_l | z_{l+1}) below the top and p(z_L) at the top."""
        zs = self.split(z)
        parts = [log_normal(zs[l], *cell.p_net(zs[l + 1])) for l, cell in enumerate(self.cells[:-1])]
        parts.append(self.prior.log_prob(zs[-1], encode))
        return torch.stack(parts, -1)

    def log_p(self, z: Tensor, encode: Encode = None) -> Tensor:
        """log p(z) [...] for z [..., J]."""
        if len(self.cells) == 1:
            return self.prior.log_prob(z, encode)
        return self.log_p_layers(z, encode).sum(-1)

    def draw_prior(self, n: int, generator: Optional[torch.Generator], encode: Encode,
                   device, dtype) -> Tensor:
        """``n`` draws z ~ p(z), [n, J] float32 on the CPU: the top from the prior, each lower
        layer from p(z_l | z_{l+1}) with noise from the CPU ``generator``."""
        top = self.prior.sample(n, generator, encode)
        if len(self.cells) == 1:
            return top
        z = [top.to(device, dtype)]
        for cell in reversed(self.cells[:-1]):
            mu, lv = cell.p_net(z[0])
            eps = torch.randn(mu.shape, generator=generator, dtype=torch.float32).to(mu)
            z.insert(0, mu + torch.exp(0.5 * lv) * eps)
        return torch.cat(z, -1).float().cpu()


def assemble(sizes: Sequence[int], q_nets: Sequence[nn.Module] = (), p_nets: Sequence[nn.Module] = (),
             prior: Optional[Prior] = None, flow: Optional[Flow] = None, inference: str = "bottom-up") -> LatentStack:
    """The cells of layers of ``sizes`` (bottom first) from their parts: ``q_nets[l]`` infers
    layer l + 1 from layer l, ``p_nets[l]`` gives p(z_l | z_{l+1}) (aevb.stacked.stacked_networks),
    ``prior`` over the top layer (N(0, I) when None), ``flow`` on the bottom one."""
    sizes = [int(s) for s in sizes]
    if flow is not None and len(sizes) > 1:
        raise ValueError("a flow applies to one stochastic layer")
    cells = []
    for l, size in enumerate(sizes):
        top = l == len(sizes) - 1
        cells.append(LatentCell(size, q_net=q_nets[l - 1] if l else None, p_net=None if top else p_nets[l],
                                prior=(prior if prior is not None else StandardNormal(size)) if top else None,
                                flow=flow if l == 0 else None))
    return LatentStack(cells, inference)


class Posterior(torch.distributions.Distribution):
    """q(z|x) of a batch, as ``VAE.encode(x)`` returns it: a torch Distribution over the full
    latent vector z [B, J].

    ``.rsample(shape)`` draws z [*shape, B, J] with gradients (the reparameterisation trick);
    ``.rsample_and_log_prob(shape)`` also gives log q(z|x) [*shape, B]; ``.log_prob(z)`` is the
    density of given latents (not with a flow); ``.code`` is the deterministic code used for
    reconstructions and figures (the mean, or with a flow or stacked layers the mean path);
    ``.mean`` and ``.stddev`` exist where they are exact (one Gaussian layer without a flow);
    ``.loc`` and ``.log_var`` [B, J_1] are the encoder's outputs (the bottom layer's Gaussian).
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, latents: LatentStack, mu: Tensor, log_var: Tensor, encode: Encode = None):
        self.latents, self.loc, self.log_var, self._encode = latents, mu, log_var, encode
        super().__init__(batch_shape=mu.shape[:-1], event_shape=(latents.total,), validate_args=False)

    @property
    def gaussian(self) -> bool:
        """Whether q(z|x) is one diagonal Gaussian (no flow, no stacked layers)."""
        return len(self.latents.cells) == 1 and self.latents.flow is None

    def _exact(self, what: str) -> None:
        if not self.gaussian:
            raise ValueError(f"this posterior (a flow or stacked layers) has no closed-form {what}; "
                             "use .code for the code of a datapoint, or draws from .rsample()")

    @property
    def mean(self) -> Tensor:
        self._exact("mean")
        return self.loc

    @property
    def stddev(self) -> Tensor:
        self._exact("standard deviation")
        return torch.exp(0.5 * self.log_var)

    @property
    def variance(self) -> Tensor:
        self._exact("variance")
        return torch.exp(self.log_var)

    @property
    def code(self) -> Tensor:
        """[B, J]: z along q's mean path (the mean itself for one Gaussian layer)."""
        return self.latents.mean_path(self.loc, self.log_var)[0]

    def rsample_and_log_prob(self, sample_shape=torch.Size()) -> Tuple[Tensor, Tensor]:
        """(z [*shape, B, J], log q(z|x) [*shape, B])."""
        eps = torch.randn(tuple(sample_shape) + tuple(self.batch_shape) + (self.latents.total,),
                          dtype=self.loc.dtype, device=self.loc.device)
        s = self.latents.sample(eps, self.loc, self.log_var, self._encode)
        return s.z, s.log_q

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def log_prob(self, value: Tensor) -> Tensor:
        return self.latents.log_q(value, self.loc, self.log_var)

    def entropy(self) -> Tensor:
        self._exact("entropy")
        return 0.5 * (self.log_var + math.log(2 * math.pi) + 1.0).sum(-1)
