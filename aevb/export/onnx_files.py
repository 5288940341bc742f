"""A VAE as two ONNX files that other frameworks run (onnxruntime, ...).

    encoder.onnx   x [B, D] float32 -> mu [B, J], log_var [B, J]     (q(z|x) = N(mu, exp(log_var)))
    decoder.onnx   z [B, J] float32 -> params [B, n_params * D]      (the likelihood's parameters:
                                       Bernoulli logits; Gaussian mean and log-variance, in that order)
                                    -> mean [B, D]                   (E[x|z], as aevb's likelihood.mean)

B is dynamic. Each file carries the run's configuration, the likelihood and the image shape in
its metadata (``metadata_props``: aevb_config, likelihood, image_shape, data_dim, latent_dim).
Needs the ``export`` extra: ``pip install "aevb[export]"`` (onnx, onnxscript; onnxruntime to run them).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Dict, Sequence, Union

import torch
from torch import nn

from ..version import __version__
from ..config import RunConfig
from ..io import atomic_path

OPSET = 18


class _Encoder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        mu, log_var = self.model.encoder_params(x)
        if self.model.flow is not None or len(self.model.layer_sizes) > 1:
            return mu, log_var, self.model.codes(mu, log_var)  # the code: f(mu), or every layer's mean
        return mu, log_var


class _Decoder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, z):
        params = self.model.decoder_params(z)
        return params, self.model.likelihood.mean(params)


@contextlib.contextmanager
def _quiet():
    """The exporter's progress lines, warnings about optional packages and deprecations are not
    the user's business: keep them off the terminal."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _export(module: nn.Module, example: torch.Tensor, input_name: str, output_names: Sequence[str],
            metadata: Dict[str, str], path: Path) -> Path:
    with _quiet():
        program = torch.onnx.export(module.eval(), (example,), dynamo=True, input_names=[input_name],
                                    output_names=list(output_names), opset_version=OPSET, verbose=False,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
    program.model.metadata_props.update(metadata)
    program.model.producer_name = "aevb"
    program.model.producer_version = __version__
    with atomic_path(path) as tmp:
        program.save(str(tmp), external_data=False)
    return path


def export_onnx(model, config: RunConfig, image_shape: Sequence[int], out_dir: Union[str, Path]) -> Dict[str, Path]:
    """Write ``encoder.onnx`` and ``decoder.onnx`` into ``out_dir``: {name: path}."""
    model = model.cpu().float().eval()
    out_dir = Path(out_dir)
    meta = {"aevb_config": json.dumps(config.to_dict()), "likelihood": str(model.likelihood.name),
            "image_shape": json.dumps([int(s) for s in image_shape]), "data_dim": str(int(model.data_dim)),
            "latent_dim": str(int(model.latent_dim)), "aevb_version": __version__,
            "prior": str(config.model.prior), "flow": str(config.model.flow),
            "latent_layers": json.dumps(list(model.layer_sizes))}
    x = torch.zeros(2, model.data_dim)
    z = torch.zeros(2, model.latent_dim)
    # with a flow, mu and log_var are the base Gaussian's (before the flow) and "code" is f(mu);
    # with stacked layers they are z_1's and "code" is every layer's mean
    encoder_outputs = ("mu", "log_var", "code") if model.flow is not None or len(model.layer_sizes) > 1 \
        else ("mu", "log_var")
    return {
        "encoder": _export(_Encoder(model), x, "x", encoder_outputs, meta, out_dir / "encoder.onnx"),
        "decoder": _export(_Decoder(model), z, "z", ("params", "mean"), meta, out_dir / "decoder.onnx"),
    }
