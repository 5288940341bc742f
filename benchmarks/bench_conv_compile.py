"""Training step of the conv-celeba64 network (batch 64, 3x64x64), eager against torch.compile,
in float32 and under bf16 autocast: compile time and median step time. The variants alternate in
rounds, so their ratios are taken under the same load. Random pixels: the step's cost does not
depend on them.

    python benchmarks/bench_conv_compile.py [--threads 2] [--rounds 3] [--steps 5]
"""
import argparse
import time

import torch

from aevb.config import RunConfig
from aevb.model import VAE
from aevb.config import apply_preset

SHAPE = (3, 64, 64)
VARIANTS = [("eager-fp32", False, False), ("compiled-fp32", True, False),
            ("eager-bf16", False, True), ("compiled-bf16", True, True)]


def training_step(cfg: RunConfig, x: torch.Tensor, compiled: bool, bf16: bool):
    """A function doing one Adam step of the negative ELBO on x [64, D] (returns the loss)."""
    torch.manual_seed(0)
    model = VAE.from_config(cfg.model, x.shape[1], SHAPE).train()
    opt = torch.optim.Adam(model.parameters(), cfg.optim.lr, fused=True)

    def loss(xb):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return -model.elbo(xb).bound.mean()

    f = torch.compile(loss) if compiled else loss

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        value = f(x)
        value.backward()
        opt.step()
        return float(value.detach())

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5, help="steps per variant per round")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = apply_preset(RunConfig(), "conv-celeba64")
    x = torch.randint(0, 256, (64, SHAPE[0] * SHAPE[1] * SHAPE[2])).float() / 255
    steps = {}
    for name, compiled, bf16 in VARIANTS:
        steps[name] = training_step(cfg, x, compiled, bf16)
        t0 = time.perf_counter()
        steps[name]()
        steps[name]()
        print(f"{name}: first two steps (compilation included) {time.perf_counter() - t0:.1f} s", flush=True)
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - t0) / args.steps)
    median = {name: sorted(v)[len(v) // 2] for name, v in times.items()}
    for name, v in times.items():
        print(f"{name}: median step {median[name] * 1e3:.0f} ms ({', '.join(f'{t * 1e3:.0f}' for t in v)})")
    for prec in ("fp32", "bf16"):
        print(f"compiled / eager step time, {prec}: {median[f'compiled-{prec}'] / median[f'eager-{prec}']:.2f}")


if __name__ == "__main__":
    main()
