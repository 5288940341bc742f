"""Which default is best for which network: the stabilisers and the batch, one at a time.

Trains one data case of ``bench_defaults.py`` (digits, mnist, frey-face, celeba-64x64, ...) with
the defaults and with one or more choices changed, from several seeds, each run on one thread in
its own process (``--jobs`` at once), and prints one JSON line per run and a table of the mean
test ELBO per variant (nats per datapoint, higher is better).

A variant is ``+``-joined changes to what ``aevb train --dataset NAME`` does:

* ``defaults``: nothing changed; ``before``: the defaults as they were before the stabilisers
  (``aevb.presets.MEASURED_WITH``); ``preset``: the case's tuned preset;
* ``std`` / ``shrink`` / ``none``: ``--input-scale`` (the centred inputs divided by s, by s only
  where s > 1, or not at all); ``nocenter``: ``--no-center-inputs``; ``nobias``:
  ``--no-data-output-bias``; ``nowarm``: ``--lr-warmup-steps 0``;
* ``bN``: ``--batch-size N``; ``eN``: ``--epochs N``; ``tanh``: ``--activation tanh``.

    python benchmarks/bench_default_choices.py --shared DATA_DIR --case digits \\
        --variants b128,defaults,b32,preset --seeds 0,1,2,3,4 --jobs 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def settings(variant: str) -> tuple:
    """(kind of bench_defaults.config, {section: {setting: value}}) of a variant."""
    parts = variant.split("+")
    kind = parts[0] if parts[0] in ("before", "preset") else "defaults"
    over: dict = {"model": {}, "optim": {}, "train": {}}
    for part in parts:
        if part in ("defaults", "before", "preset"):
            continue
        if part in ("std", "shrink", "none"):
            over["model"]["input_scale"] = part
        elif part == "nocenter":
            over["model"]["center_inputs"] = False
        elif part == "nobias":
            over["model"]["output_bias_from_data"] = False
        elif part == "nowarm":
            over["optim"]["warmup_steps"] = 0
        elif part == "tanh":
            over["model"]["activation"] = "tanh"
        elif part[0] in "be" and part[1:].isdigit():
            over["train"]["batch_size" if part[0] == "b" else "epochs"] = int(part[1:])
        else:
            raise SystemExit(f"unknown change {part!r} in variant {variant!r} (see --help)")
    return kind, over


def one_run(shared: str, case: str, variant: str, seed: int) -> dict:
    """Train one run in this process (one thread) and return its row."""
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))
    import bench_defaults as B
    from aevb.config import merge

    kind, over = settings(variant)
    with tempfile.TemporaryDirectory() as tmp:
        cases = {c[0]: c for c in B.cases(Path(shared), Path(tmp))}
        if case not in cases:
            raise SystemExit(f"unknown case {case!r}; choose one of {', '.join(cases)}")
        _, data, preset, epochs, model = cases[case]
        if kind == "preset" and preset is None:
            raise SystemExit(f"the case {case} has no preset")
        cfg = B.config(data, preset, over["train"].pop("epochs", epochs), model, kind)
        over["train"].update({"seed": seed, "threads": 1})
        got = B.run(merge(cfg, over), Path(tmp) / "run")
    return {"case": case, "variant": variant, "seed": seed, "test_elbo": got.get("test_elbo"),
            "diverged": got.get("diverged"), "seconds": got.get("seconds"), "batch": got.get("sizes", {}).get("batch")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", default="../shared/datasets")
    p.add_argument("--case", required=True)
    p.add_argument("--variants", default="defaults")
    p.add_argument("--seeds", default="0")
    p.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each")
    p.add_argument("--out", default=None, help="append the JSON lines to this file too")
    p.add_argument("--one", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one_run(args.shared, args.case, args.one[0], int(args.one[1]))), flush=True)
        return 0
    queue = [(v, s) for s in args.seeds.split(",") for v in args.variants.split(",")]
    for v, _ in queue:
        settings(v)  # refuse a bad variant before any run
    rows, running = [], []

    def collect(proc) -> None:
        out, err = proc.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if proc.returncode or not lines:
            print(f"run {proc.args[-2:]} failed: {err.strip().splitlines()[-1:] if err.strip() else proc.returncode}",
                  file=sys.stderr)
            return
        print(lines[-1], flush=True)
        rows.append(json.loads(lines[-1]))
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(lines[-1] + "\n")

    for variant, seed in queue:
        while len(running) >= args.jobs:
            collect(running.pop(0))
        running.append(subprocess.Popen([sys.executable, __file__, "--shared", args.shared, "--case", args.case,
                                         "--one", variant, seed], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True))
    for proc in running:
        collect(proc)
    print(f"\n{args.case}: mean test ELBO over seeds {args.seeds} (nats per datapoint)")
    for variant in args.variants.split(","):
        got = [r["test_elbo"] for r in rows if r["variant"] == variant and r["test_elbo"] is not None]
        failed = sum(1 for r in rows if r["variant"] == variant and r["test_elbo"] is None)
        if got:
            spread = f" (+- {statistics.stdev(got) / len(got) ** 0.5:.3f})" if len(got) > 1 else ""
            print(f"  {variant:<28s} {statistics.mean(got):10.3f}{spread}  n={len(got)}"
                  + (f", {failed} stopped" if failed else ""))
        elif failed:
            print(f"  {variant:<28s} stopped (diverged) in all {failed} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
