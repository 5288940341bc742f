"""Benchmark: the latent explorer's file size and decode time per frame in headless Chromium, for
the pytorch-example model (784-400-20 ReLU, Bernoulli), a celeba-mlp-size decoder
(10-116-1164-116412 ReLU, Bernoulli, 3x218x178 images) and the conv presets' decoders
(conv-mnist: 50 -> 64x7x7 -> 32x14x14 -> 1x28x28, kernel 3, ReLU, Bernoulli; conv-celeba64:
100 -> 256x4x4 -> 128 -> 64 -> 32 -> 6x64x64, kernel 4, LeakyReLU, discretized logistic), each
against PyTorch's decoder on the same z in the same process (one thread), as a ratio.

    python benchmarks/bench_explorer.py --run runs/mnist          # a trained pytorch-example run
    python benchmarks/bench_explorer.py --data-dir ../shared/datasets/mnist   # trains 1 epoch first
    python benchmarks/bench_explorer.py --run runs/mnist --conv-mnist-run runs/conv-mnist \
        --conv-celeba64-run runs/celeba64                        # trained conv-preset runs too
    python benchmarks/bench_explorer.py --data-dir ../shared/datasets/mnist \
        --celeba-dir ../shared/datasets/celeba                   # trains every model 1 epoch first

What is timed (mean over ``--frames`` after ``--warmup`` frames):
  * frame: one slider move in the page (an ``input`` event: decode, draw the image, redraw the
    scatter), as a person sees it;
  * decode: ``decoder.decode(z)`` alone (the JavaScript matrix-vector products);
  * PyTorch: ``likelihood.mean(decode(z))`` for one z, ``torch.set_num_threads(1)``;
  * per layer kind (conv runs): the decode split by layer kind (linear, conv-transpose, mean ...).

The celeba-mlp-size decoder is never embedded in a page (724 MB as base64 float32, 362 MB as
float16; ``aevb explore`` writes its page without live decoding); its decode time is measured on
random weights made in the page,
and its page size is computed by the same function the command uses. Needs Chromium and
Playwright (bash .ci/browser-setup.sh).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aevb.config import ModelConfig  # noqa: E402
from aevb.explorer import write_explorer  # noqa: E402
from aevb.explorer.program import decoder_program, decoder_size, encoded_chars  # noqa: E402
from aevb.model import VAE  # noqa: E402

CHROMIUM = os.environ.get("AEVB_CHROMIUM", "/usr/bin/chromium")
DECODER_JS = Path(__file__).resolve().parents[1] / "aevb" / "explorer" / "static" / "decoder.js"
CELEBA = dict(latent_dim=10, encoder_hidden=[1164, 116], likelihood="bernoulli", data_dim=3 * 218 * 178)


def torch_ms(model, frames: int, warmup: int) -> float:
    """Mean ms of PyTorch's decoder mean for one z, over ``frames`` after ``warmup``."""
    z = torch.full((1, model.latent_dim), 0.3)
    with torch.no_grad():
        for _ in range(warmup):
            model.likelihood.mean(model.decoder_params(z))
        t0 = time.perf_counter()
        for _ in range(frames):
            model.likelihood.mean(model.decoder_params(z))
    return (time.perf_counter() - t0) * 1e3 / frames


# performance.now() is coarse in a file:// page (0.1 ms), so frames are timed as a block: mean
# over ``frames`` after ``warmup``
PAGE_TIMING = """([frames, warmup]) => {
  const E = aevbExplorer, j = E.order[0], el = document.getElementById('z' + j), z = E.z;
  const move = (k) => { el.value = String(((k % 40) - 20) / 10); el.dispatchEvent(new Event('input')); };
  for (let k = 0; k < warmup; k++) { move(k); E.decoder.decode(z); }
  let t0 = performance.now();
  for (let k = 0; k < frames; k++) move(k);
  const frame = (performance.now() - t0) / frames;
  t0 = performance.now();
  for (let k = 0; k < frames; k++) E.decoder.decode(z);
  return {frame, decode: (performance.now() - t0) / frames};
}"""

# the decode split by layer kind: ms per frame summed over the layers of each kind
LAYER_TIMING = """([frames]) => {
  const d = aevbExplorer.decoder, z = aevbExplorer.z, ms = {};
  for (let k = 0; k < frames; k++) {
    let x = Float64Array.from(z);
    for (const l of d.layers) {
      const t0 = performance.now();
      x = AevbDecoder.LAYERS[l.kind](l, x, d.weights);
      ms[l.kind] = (ms[l.kind] || 0) + (performance.now() - t0) / frames;
    }
  }
  return ms;
}"""

RANDOM_DECODE = """([layers, n, frames, warmup]) => {
  const w = new Float32Array(n); let s = 1;
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1103515245) + 12345) >>> 0; w[i] = (s / 4294967296 - 0.5) * 0.02; }
  const d = new AevbDecoder.Decoder({layers}, w), z = new Array(layers[0].in).fill(0.3);
  for (let k = 0; k < warmup; k++) d.decode(z);
  const t0 = performance.now();
  for (let k = 0; k < frames; k++) d.decode(z);
  return (performance.now() - t0) / frames;
}"""


def trained_run(preset: str, dataset: dict) -> Path:
    """A new run of ``preset`` trained 1 epoch on ``dataset`` (data config fields), one thread."""
    from aevb.config import RunConfig, merge
    from aevb.config import apply_preset
    from aevb.training import Trainer

    cfg = merge(apply_preset(RunConfig(), preset), {"data": {**dataset, "download": False}})
    cfg.train.epochs, cfg.train.progress, cfg.train.tensorboard, cfg.train.threads = 1, False, False, 1
    out = Path(tempfile.mkdtemp(prefix=f"aevb-bench-explorer-{preset}-")) / "run"
    Trainer.new(cfg, out).fit()
    return out


def runs_to_measure(args) -> dict:
    """{name: run folder} of the models to write pages for: given runs, or 1-epoch runs trained
    on the given data folders; a conv preset with neither is left out."""
    mnist = {"dataset": "mnist", "data_dir": args.data_dir}
    runs = {"pytorch-example": Path(args.run) if args.run else trained_run("pytorch-example", mnist)}
    if args.conv_mnist_run or args.data_dir:
        runs["conv-mnist"] = Path(args.conv_mnist_run) if args.conv_mnist_run else trained_run("conv-mnist", mnist)
    if args.conv_celeba64_run or args.celeba_dir:
        runs["conv-celeba64"] = (Path(args.conv_celeba64_run) if args.conv_celeba64_run else
                                 trained_run("conv-celeba64", {"dataset": "celeba", "data_dir": args.celeba_dir}))
    return runs


def measure_page(page, name: str, run_dir: Path, tmp: str, encoding: str, frames: int, warmup: int) -> dict:
    """Write ``run_dir``'s explorer in ``encoding``, open it and time it against PyTorch."""
    from aevb.runs import Run

    res = write_explorer(run_dir, out=Path(tmp) / f"explorer-{name}-{encoding}.html", encoding=encoding)
    t0 = time.perf_counter()
    page.goto(res.path.resolve().as_uri(), wait_until="load")
    page.wait_for_function("window.aevbExplorer !== undefined")
    load_s = time.perf_counter() - t0
    t = page.evaluate(PAGE_TIMING, [frames, warmup])
    model = Run(run_dir).load_model("cpu").eval()
    ref = torch_ms(model, frames, warmup)
    out = {"file_MB": round(res.size_bytes / 1e6, 2), "weights": res.n_weights, "load_s": round(load_s, 2),
           "max_mean_error": res.max_mean_error, "frame_ms": round(t["frame"], 3), "decode_ms": round(t["decode"], 3),
           "pytorch_ms": round(ref, 3), "decode_over_pytorch": round(t["decode"] / ref, 2)}
    if any(l["kind"] == "conv-transpose" for l in page.evaluate("aevbExplorer.decoder.layers")):
        out["decode_ms_by_layer_kind"] = {k: round(v, 3) for k, v in page.evaluate(LAYER_TIMING, [frames]).items()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a trained run of the pytorch-example preset on MNIST")
    src.add_argument("--data-dir", help="MNIST folder: train the pytorch-example (and conv-mnist) model for 1 epoch first")
    ap.add_argument("--conv-mnist-run", help="a trained run of the conv-mnist preset")
    ap.add_argument("--conv-celeba64-run", help="a trained run of the conv-celeba64 preset")
    ap.add_argument("--celeba-dir", help="CelebA folder: train conv-celeba64 for 1 epoch first (without --conv-celeba64-run)")
    ap.add_argument("--frames", type=int, default=200, help="timed frames (celeba sizes: a tenth)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from playwright.sync_api import sync_playwright

    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "load_average_at_start": [round(v, 2) for v in os.getloadavg()], "torch": torch.__version__}
    runs = runs_to_measure(args)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        results["chromium"] = browser.version
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        for name, run_dir in runs.items():
            frames, warmup = (args.frames, args.warmup) if name != "conv-celeba64" else \
                (max(10, args.frames // 10), max(2, args.warmup // 10))
            for enc in ("float32", "float16"):
                results[f"{name} {enc}"] = measure_page(page, name, run_dir, tmp, enc, frames, warmup)
        # celeba-mlp size: layers from a model on the meta device (no 1.3 GB allocation in Python)
        with torch.device("meta"):
            big = VAE.from_config(ModelConfig(latent_dim=CELEBA["latent_dim"], encoder_hidden=CELEBA["encoder_hidden"],
                                              likelihood=CELEBA["likelihood"]), CELEBA["data_dim"])
        layers, n = decoder_program(big, with_weights=False).layers, decoder_size(big)
        page.set_content(f"<script>{DECODER_JS.read_text()}</script>")
        frames = max(5, args.frames // 10)
        js = page.evaluate(RANDOM_DECODE, [layers, n, frames, max(2, args.warmup // 10)])
        real = VAE.from_config(ModelConfig(latent_dim=CELEBA["latent_dim"], encoder_hidden=CELEBA["encoder_hidden"],
                                           likelihood=CELEBA["likelihood"]), CELEBA["data_dim"]).eval()
        ref = torch_ms(real, frames, 2)
        results["celeba-mlp size"] = {
            "weights": n, "file_MB_float32": round(encoded_chars(n, "float32") / 1e6), "file_MB_float16":
            round(encoded_chars(n, "float16") / 1e6), "decode_ms": round(js, 1), "pytorch_ms": round(ref, 1),
            "decode_over_pytorch": round(js / ref, 2)}
        browser.close()
    results["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
