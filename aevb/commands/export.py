"""`aevb export RUN --format onnx|safetensors`: the model in files other programs read."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_checkpoint_argument, add_parser, add_run_argument

FORMATS = {"onnx": ("encoder.onnx", "decoder.onnx"), "safetensors": ("model.safetensors",)}


def register(sub) -> None:
    p = add_parser(sub, "export", "write a finished run's model as ONNX or safetensors files",
                   "Write the model of a finished run for use outside aevb (default folder: RUN/export).\n\n"
                   "  onnx         encoder.onnx (x [B, D] -> mu, log_var [B, J]) and decoder.onnx\n"
                   "               (z [B, J] -> params, the likelihood's parameters, and mean [B, D]);\n"
                   "               the configuration is in each file's metadata. Needs the export extra:\n"
                   "               pip install \"aevb[export]\"\n"
                   "  safetensors  model.safetensors: every weight, with the configuration as metadata;\n"
                   "               aevb.export.load_safetensors(PATH) gives the VAE back\n\n"
                   "examples:\n"
                   "  aevb export runs/mnist --format onnx\n"
                   "  aevb export runs/mnist --format safetensors --out ~/models/mnist")
    add_run_argument(p)
    p.add_argument("--format", required=True, choices=list(FORMATS), help="what to write%(default).0s")
    p.add_argument("--out", metavar="DIR", help="folder to write into (default: RUN/export)%(default).0s")
    add_checkpoint_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..runs import Run, RunError, check_output

    run_ = Run(args.run)
    run_.require_finished(" (only a finished run is exported)")
    run_.checkpoint_file(args.checkpoint)
    out = check_output(Path(args.out) if args.out else run_.path / "export", "--out", folder=True)
    if args.format == "onnx":
        try:
            import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
        except ImportError:
            raise RunError('ONNX export needs the onnx and onnxscript packages: pip install "aevb[export]"') from None
    loaded = run_.open_model("cpu", args.checkpoint)
    model, shape = loaded.model, loaded.image_shape
    if args.format == "onnx":
        from ..export import export_onnx

        written = list(export_onnx(model, run_.config, shape, out).values())
    else:
        from ..export import save_safetensors

        written = [save_safetensors(model, run_.config, shape, out / FORMATS["safetensors"][0])]
    for path in written:
        print(f"{path}  ({path.stat().st_size / 1e6:.2f} MB, {loaded.describe()})")
    return 0
