"""What a training run needs in memory, from its settings and the data's shape alone, so that a
run that cannot fit is refused before any cache is built or any file written.

The shape comes without decoding anything: the configured image size and colour of
``folder:`` and ``celeba`` data, the header of an ``array:`` file, the fixed shape of a named
data set. The estimate counts the model's parameters exactly (the networks ``VAE.from_config``
builds), four float32 copies of them (weights, gradients and Adam's two moments), and the
activations of the largest step: a training batch (batch size x samples or k rows through the
decoder, kept for the backward pass) or an evaluation batch (no gradients). It leaves out the
data and PyTorch's own overhead, so it is a lower bound: a refused run would certainly not fit.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import nn

from ..bounds import eval_rows
from ..config import RunConfig
from ..config.rules import sized
from ..convnets import max_stages
from ..data import cache
from ..devices import resolve_device
from ..data.spec import parse_spec
from ..errors import ConfigError, DataError
from ..model import VAE
from ..units import format_bytes

FLOAT = 4  # bytes of a float32
COPIES = 4  # weights, gradients and Adam's two moments


@dataclass
class Estimate:
    """Parameters of the model, and bytes: the parameters' four copies, the largest step's
    activations (``peak``), and their sum."""

    params: int
    param_bytes: int
    peak: int
    what_peaks: str

    @property
    def total(self) -> int:
        return self.param_bytes + self.peak


def _layer_outputs(model, dim: int) -> Tuple[List[int], List[int]]:
    """Values per datapoint that each weight layer (Linear, Conv2d, ConvTranspose2d) of the
    encoder and of the decoder puts out, from one forward pass on the meta device."""
    widths = {"encoder": [], "decoder": []}
    hooks = [mod.register_forward_hook(lambda m, i, o, part=part: widths[part].append(o[0].numel()))
             for part in widths for mod in getattr(model, part).modules()
             if isinstance(mod, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            model.encoder(torch.empty(1, dim, device="meta"))
            model.decoder(torch.empty(1, model.bottom_dim, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return widths["encoder"], widths["decoder"]


def estimate(cfg: RunConfig, image_shape) -> Estimate:
    """The memory a run of ``cfg`` needs on data of ``image_shape`` (C, H, W) (see the module
    docs). The model is the one ``VAE.from_config`` builds, made on the meta device (shapes, no
    memory), so its parameters and layer outputs are counted, not re-derived."""
    cfg = sized(cfg, image_shape)  # the sizes a run on this shape would choose (aevb.sizing)
    m, o, t = cfg.model, cfg.objective, cfg.train
    c, h, w = (int(s) for s in image_shape)
    dim = c * h * w
    # a likelihood the data choose later has the fewest decoder outputs (one per value)
    model_cfg = m if m.likelihood is not None else dataclasses.replace(m, likelihood="bernoulli")
    with torch.device("meta"):
        model = VAE.from_config(model_cfg, dim, (c, h, w))
    enc_widths, dec_widths = _layer_outputs(model, dim)
    params = sum(p.numel() for p in model.parameters())
    samples = o.k if o.objective == "iwae" else o.samples
    # a training step keeps every layer's output for the backward pass and gets a gradient of
    # each: the encoder once per datapoint, the decoder once per sample of z
    train = 2 * FLOAT * t.batch_size * (dim + sum(enc_widths) + samples * (sum(dec_widths) + dim))
    eval_batch = t.eval_batch_size or eval_rows(model)
    evaluate = FLOAT * eval_batch * (dim + sum(enc_widths) + sum(dec_widths) + dim)
    if train >= evaluate:
        peak, what = train, (f"a training step of --batch-size {t.batch_size}"
                             + (f" x {'--k' if o.objective == 'iwae' else '--samples'} {samples}" if samples > 1 else ""))
    else:
        peak, what = evaluate, f"an evaluation batch of --eval-batch-size {eval_batch}"
    return Estimate(params=params, param_bytes=COPIES * FLOAT * params, peak=peak, what_peaks=what)


def _fewer(cfg: RunConfig, est: Estimate, shape) -> str:
    """What to lower, biggest cost first."""
    m, o = cfg.model, cfg.objective
    hints = []
    if est.param_bytes >= est.peak:
        if "conv" in (m.encoder_network, m.decoder_network):
            hints.append("--channels")
        if "mlp" in (m.encoder_network, m.decoder_network):
            hints.append("--hidden")
        if cfg.data.image_size is not None:
            hints.insert(0, "--image-size")
    else:
        hints.append("--eval-batch-size" if est.what_peaks.startswith("an evaluation") else "--batch-size")
        if not est.what_peaks.startswith("an evaluation") and (o.k if o.objective == "iwae" else o.samples) > 1:
            hints.append("--k" if o.objective == "iwae" else "--samples")
        hints.append("--hidden" if m.decoder_network == "mlp" else "--channels")
    return ", ".join(hints)


@dataclass
class Memory:
    """Where a run's model works and how much memory it has there: ``device`` ('cpu', 'cuda:0',
    'mps'); ``device_bytes``, that device's memory (the RAM itself for the CPU and for MPS, which
    shares it); ``host_bytes``, the RAM, which holds the data in memory and the checkpoint's copy
    of the model whatever the device (0: unknown)."""

    device: str
    device_bytes: int
    host_bytes: int
    device_name: str = ""

    @property
    def separate(self) -> bool:
        """Whether the device has memory of its own, apart from the RAM."""
        return self.device.startswith("cuda")


def memory_of(device) -> Memory:
    """The Memory of a resolved torch.device: a CUDA device's total memory as the driver reports
    it (the device ``torch.cuda`` makes current when no index is given, as under torchrun)."""
    ram = cache.physical_memory()
    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return Memory(f"cuda:{index}", int(props.total_memory), ram, str(getattr(props, "name", "")))
    return Memory(dev.type, ram, ram)


def checkpoint_bytes(est: Estimate) -> int:
    """The host copy a checkpoint of the model makes: weights and Adam's two moments."""
    return est.param_bytes * (COPIES - 1) // COPIES


def refusal(cfg: RunConfig, est: Estimate, shape, data_name: str, memory: Memory, data_bytes: int = 0) -> Optional[str]:
    """Why a run with estimate ``est`` cannot fit ``memory`` (None when it can). The model's
    parameters and activations are compared with the device's memory; on a device with memory of
    its own (CUDA) the host must still hold ``data_bytes`` (the data held in memory) and the
    checkpoint's copy of the model, on the others all of it shares the RAM."""
    model = (f"the model on {data_name} ({'x'.join(map(str, shape))} values) has {est.params:,} parameters, "
             f"{format_bytes(est.param_bytes)} with gradients and Adam's moments, and {est.what_peaks} needs {format_bytes(est.peak)}")
    lower = f"lower {_fewer(cfg, est, shape)}"
    if memory.separate:
        if memory.device_bytes and est.total > memory.device_bytes:
            name = f" ({memory.device_name})" if memory.device_name else ""
            return (f"this run needs at least {format_bytes(est.total)} of GPU memory but {memory.device}{name} has "
                    f"{format_bytes(memory.device_bytes)}: {model}; {lower}")
        host = data_bytes + checkpoint_bytes(est)
        if memory.host_bytes and host > memory.host_bytes:
            return (f"this run needs at least {format_bytes(host)} of RAM beside the GPU's memory but the machine has "
                    f"{format_bytes(memory.host_bytes)}: the data held in memory take {format_bytes(data_bytes)} and a checkpoint's "
                    f"copy of the model {format_bytes(checkpoint_bytes(est))}; lower --memory-budget (data beyond it are "
                    f"streamed from the cache) or {_fewer(cfg, est, shape)}")
        return None
    need = est.total + data_bytes
    if memory.host_bytes and need > memory.host_bytes:
        data = f", and the data held in memory take {format_bytes(data_bytes)}" if data_bytes else ""
        return (f"this run needs at least {format_bytes(need)} of memory but the machine has {format_bytes(memory.host_bytes)}: "
                f"{model}{data}; {lower}" + (" or --memory-budget" if data_bytes else ""))
    return None


def check_memory(cfg: RunConfig, image_shape, data_name: str = "the data", memory: Optional[Memory] = None,
                 data_bytes: int = 0, n_train: Optional[int] = None) -> Optional[Estimate]:
    """Refuse (ConfigError) a run whose estimate exceeds the memory of the device it trains on
    (``memory``, by default that of its --device, resolved) or whose host side exceeds the RAM,
    naming the numbers and what to lower; returns the estimate (None for conv networks that do
    not fit the shape at all: check_fits says why). ``data_bytes``: the data held in memory.
    ``n_train``: the training datapoints, which can lower an unset batch size (aevb.sizing)."""
    shape = tuple(int(s) for s in image_shape)
    cfg = sized(cfg, shape, n_train)
    if "conv" in (cfg.model.encoder_network, cfg.model.decoder_network):
        if len(cfg.model.channels) > max_stages(shape[1], shape[2], cfg.model.kernel_size):
            return None  # the conv check says why it does not fit at all
    if "custom" in (cfg.model.encoder_network, cfg.model.decoder_network):
        return None  # a model of the user's own modules: its size is theirs, not the config's
    est = estimate(cfg, shape)
    if memory is None:
        memory = memory_of(resolve_device(cfg.train.device))
    why = refusal(cfg, est, shape, data_name, memory, data_bytes)
    if why:
        raise ConfigError(why)
    return est


def shape_from_config(cfg: RunConfig) -> Optional[Tuple[int, int, int]]:
    """The data's image shape (C, H, W) as far as it is known without decoding or loading the
    data (None when only the data can say): the configured size of pictures (grey unless rgb is
    asked), the header of an array file, the fixed shape of a named data set."""
    d = cfg.data
    try:
        spec = parse_spec(d.dataset)
    except DataError:
        return None  # the loader says why
    return spec.shape(d.image_size, d.crop, d.color)
