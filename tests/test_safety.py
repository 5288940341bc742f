"""Nothing a user types can lose a run: bad input ends as one line and exit status 2 with every
file unchanged; run folders have one writer; crashes, kills, full disks and divergence leave a
run that can be continued or was never touched."""
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from aevb import load_run
from aevb.cli import main
from aevb.data.cache import physical_memory
from aevb.errors import CheckpointError
from aevb.io import load_checkpoint
from aevb.lock import LOCK_NAME, process_start
from aevb.runs import Run, read_marker
from aevb.training import Callback, Trainer

from conftest import train_tiny_run, tiny_config
from helpers import REPO, WriteInterrupted, live_process, lock_holder, read_only, snapshot
NO_CUDA = not torch.cuda.is_available()


# ------------------------------------------------------------------ one shared workspace
def _write(path: Path, text) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture(scope="session")
def ws(tmp_path_factory):
    """A folder with one small finished run (digits, 1 epoch), damaged copies of it, a folder
    that only looks like a run, config files with bad values, and data files."""
    root = tmp_path_factory.mktemp("ws")
    train_tiny_run(root / "run")
    run = root / "run"
    ckpt = Path("checkpoints") / "last.pt"

    def copy(name):
        shutil.copytree(run, root / name)
        return root / name

    (copy("zero") / ckpt).write_bytes(b"")
    torch.save({"format": "aevb-checkpoint", "version": 1}, copy("keyless") / ckpt)

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(root / "pwned"),))

    torch.save({"format": "aevb-checkpoint", "model": Payload()}, copy("pickled") / ckpt)
    t = copy("truncated") / ckpt
    t.write_bytes(t.read_bytes()[:2000])
    (copy("finished_no_ckpt") / ckpt).unlink()
    _write(copy("bad_config") / "config.json", '{"model": {"latent_dim": "abc"}}')
    _write(copy("bad_marker") / "run.json", '{"format": "something-else", "status": "finished"}')
    failed = copy("failed_early")
    (failed / ckpt).unlink()
    m = json.loads((failed / "run.json").read_text())
    m["status"] = "failed"
    _write(failed / "run.json", json.dumps(m))
    stopped = copy("interrupted")  # stopped by Ctrl-C after its one epoch of a configured three
    m = json.loads((stopped / "run.json").read_text())
    m["status"] = "interrupted"
    _write(stopped / "run.json", json.dumps(m))
    c = json.loads((stopped / "config.json").read_text())
    c["train"]["epochs"] = 3
    _write(stopped / "config.json", json.dumps(c))
    static = copy("static")  # a run whose data are prepared otherwise (binarized): no background of "run"
    c = json.loads((static / "config.json").read_text())
    c["data"]["binarize"] = "static"
    _write(static / "config.json", json.dumps(c))
    np.save(root / "small.npy", (np.random.default_rng(0).random((40, 4, 4)) * 255).astype(np.uint8))
    train_tiny_run(root / "small_run", data={"dataset": f"array:{root / 'small.npy'}"})  # 4x4 images
    holder = lock_holder(copy("locked"))  # a live writer on this host, for as long as the workspace is used

    proj = root / "project"  # a user's folder that merely holds a file named run.json
    _write(proj / "run.json", '{"name": "my project"}')
    _write(proj / "notes.txt", "precious")
    (root / "empty").mkdir()
    (root / "celeba_dir_partition" / "list_eval_partition.txt").mkdir(parents=True)  # a folder, not the file
    _write(root / "file.txt", "a file")
    np.save(root / "real.npy", (np.random.default_rng(0).normal(size=(40, 6)) * 3).astype(np.float32))
    c = root / "cfg"
    for name, text in {
        "latent_abc.yaml": "model:\n  latent_dim: abc\n",
        "epochs_str.yaml": "train:\n  epochs: \"3\"\n",
        "batch_float.yaml": "train:\n  batch_size: 64.5\n",
        "epochs_float.yaml": "train:\n  epochs: 1.5\n",
        "batch_bool.yaml": "train:\n  batch_size: true\n",
        "unknown_key.yaml": "model:\n  latent_size: 3\n",
        "unknown_section.yaml": "foo:\n  bar: 1\n",
        "section_scalar.yaml": "model: 3\n",
        "list.yaml": "- a\n- b\n",
        "syntax.yaml": "model: [1, 2\n",
        "lr_str.yaml": "optim:\n  lr: fast\n",
        "hidden_str.yaml": "model:\n  encoder_hidden: \"400\"\n",
        "hidden_neg.yaml": "model:\n  encoder_hidden: [400, -1]\n",
        "preset_bad.yaml": "preset: nope\n",
        "grad_clip.json": '{"optim": {"grad_clip": -1}}',
        "lr_nan.json": '{"optim": {"lr": NaN}}',
        "threads_float.json": '{"train": {"threads": 2.0}}',
        "syntax.json": '{"optim": ',
        "device_int.yaml": "train:\n  device: 0\n",
        "gamma_big.yaml": "optim:\n  schedule: step\n  gamma: 3\n",
    }.items():
        _write(c / name, text)
    _write(c / "binary.yaml", b"\xff\xfe\x00garbage")
    (c / "a_folder.yaml").mkdir()
    # new data for encode / score / reconstruct --data / decode
    np.save(root / "codes_wide.npy", np.zeros((4, 5), np.float32))
    _write(root / "codes_nan.csv", "mu_0,mu_1,mu_2\n0.1,0.2,0.3\n0.1,nan,0.3\n")
    _write(root / "imgs" / "broken.png", b"")
    for i in range(3):  # three tiny pictures, to be asked for at an impossible size
        _write(root / "pics" / f"{i}.png", _png(4, 4, i))
        _write(root / "mixed" / f"{i}.png", _png(4, 4, i))  # and pictures of two sizes
    _write(root / "mixed" / "tall.png", _png(5, 4, 3))
    with open(root / "huge.npy", "wb") as f:  # only the header of a [10, 50_000_000] float32 array
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10, 50_000_000)})
    _write(root / "imgs" / "notes" / "half.png", b"\x89PNG\r\n\x1a\n")
    yield root
    holder.kill()
    holder.wait()


def _png(h: int, w: int, value: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((h, w), value * 60, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# (argv with {ws} for the workspace, expected exit status, text the one-line message must hold)
T = "train --no-progress --no-tensorboard --threads 1 --epochs 1"
CASES = [
    # train: values of options
    (f"{T} --grad-clip -1", 2, "optim.grad_clip = -1.0 (from option --grad-clip) is out of range"),
    (f"{T} --grad-clip nan", 2, "optim.grad_clip = nan (from option --grad-clip) is not finite"),
    (f"{T} --grad-clip 0", 2, "optim.grad_clip"),
    (f"{T} --lr nan", 2, "optim.lr = nan"),
    (f"{T} --lr inf", 2, "optim.lr = inf"),
    (f"{T} --lr 0", 2, "must be a number > 0"),
    (f"{T} --lr -1", 2, "optim.lr = -1.0"),
    (f"{T} --momentum -1", 2, "optim.momentum"),
    (f"{T} --momentum 1", 2, ">= 0 and < 1"),
    (f"{T} --momentum 0.9", 2, "momentum applies to the sgd optimizer only"),
    (f"{T} --step-epochs 0", 2, "optim.step_epochs = 0"),
    (f"{T} --schedule exponential --gamma -1", 2, "optim.gamma = -1.0"),
    (f"{T} --gamma 0", 2, "optim.gamma"),
    (f"{T} --gamma 2", 2, "> 0 and <= 1"),
    (f"{T} --threads -1", 2, "train.threads = -1"),
    (f"{T} --threads 0", 2, "train.threads"),
    (f"{T} --device tpu", 2, "train.device = 'tpu'"),
    (f"{T} --device cuda:-1", 2, "train.device"),
    (f"{T} --device gpu0", 2, "auto, cpu, cuda, cuda:N or mps"),
    (f"{T} --init-std -1", 2, "model.init_std = -1.0"),
    (f"{T} --init-std 0", 2, "model.init_std"),
    (f"{T} --init-std nan", 2, "model.init_std"),
    (f"{T} --latent-dim 0", 2, "model.latent_dim = 0"),
    (f"{T} --latent-dim -3", 2, "model.latent_dim"),
    (f"{T} --hidden 0", 2, "model.encoder_hidden = [0]"),
    (f"{T} --hidden 16 -5", 2, "model.encoder_hidden"),
    (f"{T} --decoder-hidden 0", 2, "model.decoder_hidden"),
    (f"{T} --activation swish", 2, "model.activation = 'swish'"),
    (f"{T} --epochs 0", 2, "train.epochs = 0"),
    (f"{T} --epochs -1", 2, "train.epochs"),
    (f"{T} --batch-size 0", 2, "train.batch_size = 0"),
    (f"{T} --eval-batch-size 0", 2, "train.eval_batch_size"),
    (f"{T} --seed -1", 2, "train.seed = -1"),
    (f"{T} --seed 99999999999999999999", 2, "train.seed"),
    (f"{T} --limit-batches 0", 2, "train.limit_batches = 0 (from option --limit-batches) is out of range"),
    (f"{T} --limit-batches two", 2, "invalid int value: 'two'"),
    (f"{T} --logger neptune", 2, "invalid choice: 'neptune'"),
    (f"{T} --data-seed -1", 2, "data.seed"),
    (f"{T} --samples 0", 2, "objective.samples"),
    (f"{T} --k 0", 2, "objective.k"),
    (f"{T} --beta -1", 2, "objective.beta"),
    (f"{T} --beta nan", 2, "objective.beta"),
    (f"{T} --warmup-epochs -1", 2, "objective.warmup_epochs"),
    (f"{T} --objective iwae --beta 0.5", 2, "applies to the elbo objective only"),
    (f"{T} --weight-decay -1", 2, "optim.weight_decay"),
    (f"{T} --sigma 0", 2, "model.sigma"),
    (f"{T} --sigma -1", 2, "model.sigma"),
    (f"{T} --min-log-var nan", 2, "model.min_log_var"),
    (f"{T} --validation -1", 2, "data.validation"),
    (f"{T} --validation 1.5", 2, "data.validation = 1.5"),
    (f"{T} --validation 100000", 2, "leaves nothing to train on"),
    (f"{T} --images-every -1", 2, "train.images_every"),
    (f"{T} --image-size 0 0", 2, "data.image_size"),
    (f"{T} --image-size 8 8", 2, "apply to folder:PATH and celeba data only"),
    (f"{T} --crop 4 4", 2, "apply to folder:PATH and celeba data only"),
    (f"{T} --color rgb", 2, "applies to folder:PATH data only"),
    (f"{T} --dataset celeba --data-dir NOPE --color grey", 2, "applies to folder:PATH data only"),
    (f"{T} --memory-budget lots", 2, "data.memory_budget = 'lots' (from option --memory-budget)"),
    (f"{T} --classes -1", 2, "data.classes = [-1] (from option --classes) is not valid"),
    (f"{T} --classes 3 3", 2, "a list of distinct class labels"),
    (f"{T} --classes 42", 2, "no datapoint in the train and test split of digits has one of these labels"),
    (f"{T} --memory-budget=-5GB", 2, "data.memory_budget"),
    (f"{T} --memory-budget 1{'0' * 400}GB", 2, "(403 characters) (from option --memory-budget) is out of range"),
    (f"{T} --memory-budget 2000000TB", 2, "is out of range: must be a size such as 500MB, 8GB or 1.5GiB up to 1 EB"),
    # train: work that cannot fit in memory, refused before any data are cached or files written
    (f"{T} --dataset folder:{{ws}}/pics --image-size 16384 16384 --batch-size 64", 2,
     "(1x16384x16384 values) has 275,146,487,104 parameters, 4.4 TB with gradients and Adam's moments, and a "
     "training step of --batch-size 64 needs 412.3 GB; lower --image-size, --hidden"),
    (f"{T} --network conv --channels 65536 65536 --batch-size 128", 2, "has 137,457,238,057 parameters, 2.2 TB "
     "with gradients and Adam's moments, and a training step of --batch-size 128 needs 2.7 GB; lower --channels"),
    (f"{T} --kl mc --samples 100000 --batch-size 128", 2, "a training step of --batch-size 128 x --samples 100000 needs 54.1 GB; "
     "lower --batch-size, --samples, --hidden"),
    (f"{T} --objective iwae --k 100000 --batch-size 128", 2, "x --k 100000 needs"),
    (f"{T} --dataset array:{{ws}}/huge.npy", 2, "(1x1x50000000 values) has 51,250,144,704 parameters"),
    (f"{T} --crop 0 148 --dataset celeba", 2, "data.crop = [0, 148]"),
    (f"{T} --lr-warmup-steps -1", 2, "optim.warmup_steps = -1"),
    (f"{T} --dataset celeba --data-dir NOPE", 2, "list_eval_partition.txt"),
    (f"{T} --likelihood bernoulli --mean-activation sigmoid", 2, "gaussian likelihoods only"),
    (f"{T} --likelihood discretized-logistic --mean-activation sigmoid", 2, "gaussian likelihoods only"),
    (f"{T} --dataset celeba --data-dir {{ws}}/file.txt", 2, "/file.txt is a file, not a folder"),
    (f"{T} --dataset mnist --data-dir {{ws}}/file.txt", 2, "/file.txt is a file, not a folder"),
    (f"{T} --dataset celeba --data-dir {{ws}}/celeba_dir_partition", 2, "list_eval_partition.txt is a folder, not a file"),
    (f"{T} --cache-dir {{ws}}/zero/checkpoints", 2, "--cache-dir"),
    (f"{T} --cache-dir {{ws}}/zero/checkpoints/cache", 2, "would write into checkpoints/cache of the run"),
    ("train --resume {ws}/run --epochs 3 --cache-dir {ws}/zero/tensorboard", 2, "would write into tensorboard"),
    (f"{T} --dataset imagenet", 2, "unknown data set 'imagenet'"),
    (f"{T} --dataset array:{{ws}}/missing.npy", 2, "file not found"),
    (f"{T} --dataset folder:{{ws}}/missing", 2, "is not a folder"),
    (f"{T} --dataset folder:{{ws}}/empty", 2, "no images"),
    (f"{T} --dataset folder:{{ws}}/mixed", 2, "0.png is 4x4 but "),
    (f"{T} --dataset array:{{ws}}/real.npy --likelihood bernoulli", 2, "[0, 1]"),
    (f"{T} --dataset ' '", 2, "data.dataset"),
    (f"{T} --epochs abc", 2, "invalid int value: 'abc'"),
    (f"{T} --lr abc", 2, "invalid float value: 'abc'"),
    (f"{T} --no-such-option", 2, "unrecognized arguments: --no-such-option"),
    (f"{T} --binarize maybe", 2, "invalid choice: 'maybe'"),
    (f"{T} --preset nope", 2, "unknown preset 'nope'"),
    # train: config files
    (f"{T} --config {{ws}}/cfg/missing.yaml", 2, "does not exist"),
    (f"{T} --config {{ws}}/cfg/a_folder.yaml", 2, "is not a file"),
    (f"{T} --config {{ws}}/cfg/binary.yaml", 2, "could not be read"),
    (f"{T} --config {{ws}}/cfg/syntax.yaml", 2, "could not be parsed"),
    (f"{T} --config {{ws}}/cfg/syntax.json", 2, "could not be parsed"),
    (f"{T} --config {{ws}}/cfg/list.yaml", 2, "must hold a mapping of sections"),
    (f"{T} --config {{ws}}/cfg/latent_abc.yaml", 2, "latent_abc.yaml, key model.latent_dim) has the wrong type"),
    (f"{T} --config {{ws}}/cfg/epochs_str.yaml", 2, "train.epochs = '3' (a string)"),
    (f"{T} --config {{ws}}/cfg/batch_float.yaml", 2, "train.batch_size = 64.5"),
    (f"{T} --config {{ws}}/cfg/epochs_float.yaml", 2, "train.epochs = 1.5"),
    (f"{T} --config {{ws}}/cfg/batch_bool.yaml", 2, "train.batch_size = True (a boolean)"),
    (f"{T} --config {{ws}}/cfg/unknown_key.yaml", 2, "unknown option model.latent_size"),
    (f"{T} --config {{ws}}/cfg/unknown_section.yaml", 2, "unknown section 'foo'"),
    (f"{T} --config {{ws}}/cfg/section_scalar.yaml", 2, "section 'model' must be a mapping"),
    (f"{T} --config {{ws}}/cfg/lr_str.yaml", 2, "optim.lr = 'fast'"),
    (f"{T} --config {{ws}}/cfg/hidden_str.yaml", 2, "model.encoder_hidden = '400'"),
    (f"{T} --config {{ws}}/cfg/hidden_neg.yaml", 2, "model.encoder_hidden = [400, -1]"),
    (f"{T} --config {{ws}}/cfg/preset_bad.yaml", 2, "preset = 'nope'"),
    (f"{T} --config {{ws}}/cfg/grad_clip.json", 2, "grad_clip.json, key optim.grad_clip) is out of range"),
    (f"{T} --config {{ws}}/cfg/lr_nan.json", 2, "optim.lr = nan"),
    (f"{T} --config {{ws}}/cfg/threads_float.json", 2, "train.threads = 2.0"),
    (f"{T} --config {{ws}}/cfg/device_int.yaml", 2, "train.device = 0"),
    (f"{T} --config {{ws}}/cfg/gamma_big.yaml", 2, "optim.gamma = 3"),
    # train: output folders
    (f"{T} --out {{ws}}/run", 2, "already holds a run; use `aevb train --resume"),
    (f"{T} --out {{ws}}/project", 2, "neither an empty folder nor an aevb run"),
    (f"{T} --out {{ws}}/project --overwrite", 2, "neither an empty folder nor an aevb run"),
    (f"{T} --out {{ws}}/file.txt", 2, "is a file, not a folder"),
    (f"{T} --out {{ws}}/file.txt/sub", 2, "is a file, so nothing can be created"),
    (f"{T} --out /proc/aevb-run", 2, "cannot write into /proc"),
    (f"{T} --out {{ws}}/run/checkpoints/new", 2, "would write into checkpoints"),
    (f"{T} --out {{ws}}/run --overwrite --init-std -1", 2, "model.init_std"),
    (f"{T} --out {{ws}}/run --overwrite --dataset array:{{ws}}/real.npy --likelihood bernoulli", 2, "[0, 1]"),
    (f"{T} --out {{ws}}/run --overwrite --validation 100000", 2, "leaves nothing to train on"),
    (f"{T} --out {{ws}}/locked", 2, "is being written by process"),
    (f"{T} --out {{ws}}/locked --overwrite", 2, "would destroy a run that is still training"),
    # train --resume
    ("train --resume {ws}/missing", 2, "does not exist"),
    ("train --resume {ws}/empty", 2, "not an aevb run folder"),
    ("train --resume {ws}/project", 2, "not an aevb run folder"),
    ("train --resume {ws}/bad_marker", 2, "not an aevb run folder"),
    ("train --resume {ws}/file.txt", 2, "file.txt is a file, not a run folder; give the folder that"),
    ("train --resume {ws}/run/config.json", 2, "config.json is a file, not a run folder; it is inside the run"),
    ("train --resume {ws}/run --latent-dim 7", 2, "model.latent_dim: run has 3, asked 7"),
    ("train --resume {ws}/run --out {ws}/other", 2, "drop --out"),
    ("train --resume {ws}/run --preset digits", 2, "drop --preset/--config"),
    ("train --resume {ws}/run --overwrite", 2, "give only one of them"),
    ("train --resume {ws}/run --epochs 0", 2, "train.epochs = 0"),
    ("train --resume {ws}/run --device tpu", 2, "train.device"),
    ("train --resume {ws}/run --epochs 1", 0, "nothing was changed"),
    ("train --resume {ws}/zero --epochs 3", 2, "is empty (0 bytes)"),
    ("train --resume {ws}/keyless --epochs 3", 2, "lacks epoch, step, data_dim"),
    ("train --resume {ws}/pickled --epochs 3", 2, "it can result in arbitrary code execution"),
    ("train --resume {ws}/truncated --epochs 3", 2, "truncated, corrupted"),
    ("train --resume {ws}/finished_no_ckpt --epochs 3", 2, "says it finished but its checkpoint"),
    ("train --resume {ws}/bad_config", 2, "config.json could not be read"),
    ("train --resume {ws}/locked --epochs 3", 2, "cannot resume it now"),
    # evaluate
    ("evaluate {ws}/missing", 2, "does not exist"),
    ("evaluate {ws}/empty", 2, "not an aevb run folder"),
    ("evaluate {ws}/project", 2, "not an aevb run folder"),
    ("evaluate {ws}/run --k 0", 2, "--k must be a positive number"),
    ("evaluate {ws}/run --k -5", 2, "--k must be a positive number"),
    ("evaluate {ws}/run --k 1000000000", 2, "that is over a day"),
    ("evaluate {ws}/run --k 10000000 --chunk 10000000 --batch-size 400", 2, "more than this machine's"),
    ("evaluate {ws}/run --batch-size 0", 2, "--batch-size must be at least 1"),
    ("evaluate {ws}/run --chunk 0", 2, "--chunk must be at least 1"),
    ("evaluate {ws}/run --threads 0", 2, "--threads must be in 1..4096; got 0"),
    ("score {ws}/run --data digits:test --out {ws}/s.csv --threads 5000", 2, "--threads must be in 1..4096; got 5000"),
    ("sample {ws}/run --out {ws}/s.png --threads -1", 2, "--threads must be in 1..4096; got -1"),
    ("evaluate {ws}/run --memory-budget 0", 2, "--memory-budget"),
    ("evaluate {ws}/run --memory-budget nan", 2, "--memory-budget"),
    ("evaluate {ws}/run --memory-budget 1.0", 2, "--memory-budget 1.0 is 1 B"),
    ("evaluate {ws}/run --seed -1", 2, "--seed"),
    ("evaluate {ws}/run --split valid", 2, "no 'valid' split"),
    ("evaluate {ws}/run --split bogus", 2, "invalid choice: 'bogus'"),
    ("explore {ws}/run --out {ws}/run/checkpoints/last.pt", 2, "which only its training writes"),
    ("evaluate {ws}/run --out {ws}/run", 2, "is a folder; give a file name"),
    ("evaluate {ws}/run --out {ws}/run/checkpoints/last.pt", 2, "would write into checkpoints"),
    ("evaluate {ws}/run --out {ws}/run/config.json", 2, "would write into config.json"),
    ("evaluate {ws}/run --out {ws}/file.txt/x.json", 2, "is a file, so nothing can be created"),
    ("evaluate {ws}/run --out /proc/x.json", 2, "cannot write into /proc"),
    ("evaluate {ws}/run --per-datapoint {ws}/x.txt", 2, "must end in .csv or .npy"),
    ("evaluate {ws}/run --per-datapoint {ws}/run/checkpoints/x.csv", 2, "would write into checkpoints"),
    ("evaluate {ws}/run --out {ws}/same.csv --per-datapoint {ws}/same.csv", 2, "are the same file"),
    ("evaluate {ws}/run --device tpu", 2, "not a device name"),
    ("evaluate {ws}/zero", 2, "is empty (0 bytes)"),
    ("evaluate {ws}/keyless", 2, "lacks"),
    ("evaluate {ws}/pickled", 2, "weights_only"),
    ("evaluate {ws}/truncated", 2, "truncated"),
    ("evaluate {ws}/failed_early", 2, "aevb train --resume"),
    ("evaluate {ws}/finished_no_ckpt", 2, "is a finished run whose checkpoint"),
    ("evaluate {ws}/bad_marker", 2, "not an aevb run folder"),
    # sample
    ("sample {ws}/missing", 2, "does not exist"),
    ("sample {ws}/run -n 0", 2, "-n must be in 1..10000"),
    ("sample {ws}/run -n -1", 2, "-n must be in 1..10000"),
    ("sample {ws}/run -n 1000000", 2, "-n must be in 1..10000"),
    ("sample {ws}/run --ncol 0", 2, "--ncol"),
    ("sample {ws}/run --seed -1", 2, "--seed"),
    ("sample {ws}/run --out {ws}/run/checkpoints/last.pt", 2, "must end in .png"),
    ("sample {ws}/run --out {ws}/run/checkpoints/x.png", 2, "would write into checkpoints"),
    ("sample {ws}/run --out {ws}/run", 2, "is a folder"),
    ("sample {ws}/run --device tpu", 2, "not a device name"),
    ("sample {ws}/run -n abc", 2, "invalid int value"),
    ("sample {ws}/keyless", 2, "lacks"),
    ("sample {ws}/failed_early", 2, "before its first epoch ended"),
    # reconstruct
    ("reconstruct {ws}/run -n 0", 2, "-n must be in 1..10000"),
    ("reconstruct {ws}/run --ncol 0", 2, "--ncol"),
    ("reconstruct {ws}/run --start 99999", 2, "--start 99999 is outside the test split"),
    ("reconstruct {ws}/run --start -1", 2, "--start -1 is outside"),
    ("reconstruct {ws}/run --out {ws}/run/config.json", 2, "must end in .png"),
    ("reconstruct {ws}/run --out {ws}/x.jpg", 2, "must end in .png"),
    ("reconstruct {ws}/run --split valid", 2, "no 'valid' split"),
    ("reconstruct {ws}/truncated", 2, "truncated"),
    ("reconstruct {ws}/empty", 2, "not an aevb run folder"),
    # plot
    ("plot {ws}/run all --out {ws}/file.txt", 2, "is a file; give a folder"),
    ("plot {ws}/run all --out {ws}/run/checkpoints", 2, "would write into checkpoints"),
    ("plot {ws}/run all --out {ws}/run/tensorboard/figs", 2, "would write into tensorboard"),
    ("plot {ws}/run nothing", 2, "invalid choice: 'nothing'"),
    ("plot {ws}/run manifold -n 0", 2, "-n/--grid-size must be in 1..200"),
    ("plot {ws}/run manifold -n 100000", 2, "-n/--grid-size must be in 1..200"),
    ("plot {ws}/run all --seed -1", 2, "--seed"),
    ("plot {ws}/run latent --method umap", 2, "invalid choice: 'umap'"),
    ("plot {ws}/run all --device tpu", 2, "not a device name"),
    ("plot {ws}/empty all", 2, "not an aevb run folder"),
    ("plot {ws}/zero samples --out {ws}/figs", 2, "is empty (0 bytes)"),
    ("plot {ws}/finished_no_ckpt samples --out {ws}/figs", 2, "restore it from a copy, or train the run again"),
    # explore, export
    ("explore {ws}/finished_no_ckpt --out {ws}/x.html", 2, "is a finished run whose checkpoint"),
    ("export {ws}/finished_no_ckpt --format safetensors --out {ws}/exp", 2, "is a finished run whose checkpoint"),
    ("export {ws}/run --format safetensors --out {ws}/zero/checkpoints", 2, "would write into checkpoints of the run"),
    ("export {ws}/run --format safetensors --out {ws}/run/tensorboard", 2, "would write into tensorboard"),
    ("export {ws}/run --format safetensors --out {ws}/file.txt", 2, "is a file; give a folder"),
    # report
    ("report {ws}/run --out {ws}/run/run.json", 2, "must end in .html"),
    ("report {ws}/run --out {ws}/run", 2, "is a folder"),
    ("report {ws}/run -n 0", 2, "-n/--grid-size"),
    ("report {ws}/empty", 2, "not an aevb run folder"),
    ("report {ws}/missing", 2, "does not exist"),
    # reproduce
    ("reproduce figure9", 2, "invalid choice: 'figure9'"),
    ("reproduce figure4 --budget huge", 2, "invalid choice: 'huge'"),
    ("reproduce figure4 --dataset digits --out {ws}/file.txt", 2, "is a file; give a folder"),
    ("reproduce figure4 --dataset digits --out {ws}/run", 2, "is a training run folder"),
    ("reproduce figure4 --dataset digits --out {ws}/run/checkpoints/f4", 2, "would write into checkpoints"),
    ("reproduce figure4 --dataset digits --threads 0", 2, "--threads must be in 1..4096"),
    ("reproduce figure4 --dataset digits --device tpu", 2, "not a device name"),
    ("reproduce figure4 --dataset digits --seed -1", 2, "--seed"),
    ("reproduce figure4 --dataset digits --seed 4294967296", 2, "--seed must be in 0..4294967295"),
    ("reproduce all --out {ws}/x", 2, "give it with a single experiment"),
    ("reproduce figure4 --data-dir {ws}/file.txt --out {ws}/f4", 2, "is a file, not a folder"),
    # data prepare
    ("data prepare digits --workers 100000", 2, "--workers 100000 is out of range: use 0 (one per core) to"),
    ("data prepare digits --workers -1", 2, "per core"),
    ("data prepare digits --cache-dir {ws}/zero/checkpoints", 2, "would write into checkpoints of the run"),
    # the command itself
    ("bogus", 2, "invalid choice: 'bogus'"),
    # a file where a run folder is expected: said so, with what to give instead
    *[(f"{cmd.format(run=path)}", 2, needle) for cmd in (
        "evaluate {run}", "sample {run}", "plot {run} all --out {{ws}}/figs", "explore {run} --out {{ws}}/x.html",
        "export {run} --format safetensors --out {{ws}}/exp", "report {run} --out {{ws}}/r.html",
        "encode {run} --data digits:test --out {{ws}}/e.npz", "score {run} --data digits:test --out {{ws}}/s.csv",
        "reconstruct {run}", "reconstruct {run} --data digits:test --out {{ws}}/rec",
        "decode {run} --z {{ws}}/codes_wide.npy --out {{ws}}/dec")
      for path, needle in (("{ws}/file.txt", "file.txt is a file, not a run folder; give the folder that `aevb train` "
                                              "wrote (the one holding run.json)"),
                           ("{ws}/run/checkpoints/last.pt", "last.pt is a file, not a run folder; it is inside the "
                                                            "run "))],
    # new data: encode, score, decode, reconstruct --data
    ("encode {ws}/run --data digits:test --out {ws}/run/config.json", 2, "must end in .npz or .npy or .csv"),
    ("encode {ws}/run --data digits:test --out {ws}/e.npz --seed 4294967296", 2, "--seed must be in 0..4294967295"),
    ("encode {ws}/run --data digits:test --out {ws}/run/checkpoints/codes.npz", 2, "would write into checkpoints"),
    ("encode {ws}/run --data digits:test --out {ws}/run", 2, "is a folder; give a file name"),
    ("encode {ws}/finished_no_ckpt --data digits:test --out {ws}/e.npz", 2, "is a finished run whose checkpoint"),
    ("encode {ws}/project --data digits:test --out {ws}/e.npz", 2, "is not an aevb run folder"),
    ("encode {ws}/run --data digits:test --out {ws}/e.npz --samples -1", 2, "--samples must be in 0..10000"),
    ("encode {ws}/run --data digits --out {ws}/e.npz", 2, "neither a file nor a folder nor NAME:SPLIT"),
    ("encode {ws}/run --data digits:tset --out {ws}/e.npz", 2, "give a split after the data set's name"),
    ("encode {ws}/run --data nosuch:test --out {ws}/e.npz", 2, "unknown data set 'nosuch'"),
    ("encode {ws}/run --data folder:{ws}/empty --out {ws}/e.npz", 2, "no images (.png, .jpg, .jpeg) found"),
    ("encode {ws}/run --data folder:{ws}/nowhere --out {ws}/e.npz", 2, "is not a folder"),
    ("encode {ws}/run --data folder:{ws}/imgs --out {ws}/e.npz", 2, "2 image file(s) could not be read"),
    ("encode {ws}/run --data folder:{ws}/imgs --out {ws}/e.npz --skip-bad-images", 2, "none of the 2 image files"),
    ("encode {ws}/run --data {ws}/file.txt --out {ws}/e.npz", 2, "not an image file"),
    ("encode {ws}/run --data array:{ws}/real.npy --out {ws}/e.npz", 2,
     "gives vectors of 6 values but the run"),
    ("encode {ws}/run --data array:{ws}/codes_wide.npy --out {ws}/e.npz", 2, "rows of 64 values"),
    ("encode {ws}/run --data digits:test --out {ws}/e.npz --device cuda:x", 2, "cuda:x"),
    ("score {ws}/run --data digits:test --out {ws}/s.csv --k 0", 2, "--k must be a positive number"),
    ("score {ws}/run --data digits:test --out {ws}/s.csv --flag-above 99", 2, "--flag-above needs --reference"),
    ("score {ws}/run --data digits:test --out {ws}/s.csv --reference test --flag-above 150", 2,
     "--flag-above is a percentile in 0..100"),
    ("score {ws}/run --data digits:test --out {ws}/s.txt", 2, "must end in .npz or .npy or .csv"),
    ("score {ws}/run --data digits:test --out {ws}/s.csv --reference train", 2, "invalid choice: 'train'"),
    ("score {ws}/finished_no_ckpt --data digits:test --out {ws}/s.csv", 2, "is a finished run whose checkpoint"),
    ("score {ws}/run --data array:{ws}/real.npy --out {ws}/s.csv", 2, "gives vectors of 6 values"),
    ("score {ws}/run --data digits:test --out {ws}/s.csv --reference test --rank-by lr", 2,
     "--rank-by lr is the likelihood ratio against a background run: give one with --background RUN"),
    ("score {ws}/run --data digits:test --out {ws}/s.csv --rank-by lk", 2, "--rank-by chooses the score of the "
     "percentile; give --reference test or valid"),
    ("score {ws}/run --data digits:test --out {ws}/s.csv --reference test --rank-by novelty --no-novelty", 2,
     "--rank-by novelty needs the novelty column, which --no-novelty leaves out"),
    ("score {ws}/run --data digits:test --out {ws}/s.csv --reference test --rank-by bits", 2, "invalid choice: 'bits'"),
    ("score {ws}/run --data digits:test --out {ws}/s.csv --compressor gzip", 2, "invalid choice: 'gzip'"),
    ("score {ws}/run --data digits:test --out {ws}/s.csv --background {ws}/run", 2, "/run is the run itself; give "
     "a run of the same network trained on perturbed data"),
    ("score {ws}/run --data digits:test --out {ws}/s.csv --background {ws}/interrupted", 2,
     "/interrupted is not finished (status 'interrupted') after epoch 1 of 3"),
    ("score {ws}/run --data digits:test --out {ws}/s.csv --background {ws}/small_run", 2,
     "/small_run takes grey 4x4 images (1x4x4 = 16 values) but "),
    ("score {ws}/run --data digits:test --out {ws}/s.csv --background {ws}/static", 2,
     "(binarize 'static' there, None here), so their bounds are not of the same values"),
    ("score {ws}/run --data digits:test --out {ws}/s.csv --background {ws}/project", 2,
     "/project is not an aevb run folder"),
    ("train --background-of {ws}/run --resume {ws}/run", 2, "--background-of takes the run's own settings"),
    ("train --background-of {ws}/nowhere", 2, "nowhere does not exist"),
    ("train --background-of {ws}/run --perturb 1", 2, "--perturb"),
    ("decode {ws}/run --z {ws}/codes_wide.npy --out {ws}/dec", 2,
     "codes_wide.npy has shape (4, 5) but the run's codes are [N, 3]"),
    ("decode {ws}/run --z {ws}/codes_nan.csv --out {ws}/dec", 2, "codes_nan.csv has 1 NaN or infinite value(s)"),
    ("decode {ws}/run --z {ws}/missing.npz --out {ws}/dec", 2, "missing.npz: file not found"),
    ("decode {ws}/run --z {ws}/file.txt --out {ws}/dec", 2, "use a .npz, .npy or .csv file"),
    ("decode {ws}/run --z {ws}/codes_nan.csv --out {ws}/project", 2, "exists and is not empty"),
    ("decode {ws}/run --z {ws}/codes_nan.csv --out {ws}/run/checkpoints", 2, "would write into checkpoints"),
    ("decode {ws}/run --z {ws}/codes_nan.csv --out {ws}/file.txt", 2, "is a file; give a folder"),
    ("decode {ws}/finished_no_ckpt --z {ws}/codes_nan.csv --out {ws}/dec", 2, "is a finished run whose checkpoint"),
    ("reconstruct {ws}/run --data digits:test", 2, "--data needs --out DIR"),
    ("reconstruct {ws}/run --data digits:test --out {ws}/project", 2, "exists and is not empty"),
    ("reconstruct {ws}/run --data digits:test --out {ws}/rec.png", 2, "is a folder (one PNG per item)"),
    ("reconstruct {ws}/run --data folder:{ws}/empty --out {ws}/rec", 2, "no images"),
    ("reconstruct {ws}/run --data array:{ws}/real.npy --out {ws}/rec", 2, "gives vectors of 6 values"),
    ("reconstruct {ws}/run --data digits:test --out {ws}/rec -n 4 --split train", 2, "-n, --split choose images of the run's split"),
    ("reconstruct {ws}/finished_no_ckpt --data digits:test --out {ws}/rec", 2, "is a finished run whose checkpoint"),
    # a run being trained, or stopped before it finished, only with --allow-unfinished
    *[(f"{cmd.format(run=path)}", 2, needle) for cmd in (
        "encode {run} --data digits:test --out {{ws}}/e.npz", "score {run} --data digits:test --out {{ws}}/s.csv",
        "reconstruct {run} --data digits:test --out {{ws}}/rec", "decode {run} --z {{ws}}/codes_nan.csv --out {{ws}}/dec")
      for path, needle in (("{ws}/locked", "locked is still training, its checkpoint changing every epoch (written by "
                                          "process "),
                           ("{ws}/interrupted", "interrupted is not finished (status 'interrupted') after epoch 1 "
                                                "of 3; finish it with `aevb train --resume "))],
    ("score {ws}/interrupted --data digits:test --out {ws}/s.csv", 2,
     "or pass --allow-unfinished to use the checkpoint it holds now"),
    ("export {ws}/locked --format safetensors --out {ws}/exp", 2, "wait until it finishes (only a finished run is "
                                                                  "exported)"),
]
if NO_CUDA:  # an unavailable device must not cost the old run
    CASES += [(f"{T} --out {{ws}}/run --overwrite --device cuda", 2, "CUDA is not available"),
              (f"{T} --device cuda:0", 2, "CUDA is not available"),
              ("sample {ws}/run --device cuda", 2, "CUDA is not available"),
              ("reproduce figure4 --dataset digits --device cuda --out {ws}/f4", 2, "CUDA is not available")]


def test_there_are_over_a_hundred_cases_across_every_command():
    commands = {argv.split()[0] for argv, _, _ in CASES}
    assert len(CASES) >= 100
    assert {"train", "evaluate", "sample", "reconstruct", "plot", "report", "reproduce"} <= commands
    assert sum("--resume" in argv for argv, _, _ in CASES) >= 15


@pytest.mark.parametrize("argv,code,needle", CASES, ids=[c[0][:70] for c in CASES])
def test_bad_input_ends_in_one_line_and_changes_no_file(ws, argv, code, needle, capsys, monkeypatch, one_thread):
    import shlex

    monkeypatch.chdir(ws)
    # a machine of at most 16 GB, so that what it cannot hold is refused on larger ones too
    monkeypatch.setattr("aevb.data.cache.physical_memory", lambda real=physical_memory(): min(real, 16 * 10 ** 9))
    cache = ws.parent / f"{ws.name}-cache"  # where a data cache would appear
    monkeypatch.setenv("AEVB_CACHE", str(cache))
    before = snapshot(ws)
    args = [a.replace("{ws}", str(ws)) for a in shlex.split(argv)]
    try:
        got = main(args)
    except SystemExit as e:  # argparse
        got = e.code
    out, err = capsys.readouterr()
    assert got == code, (got, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err + out
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]
    if code:
        assert "error:" in lines[0]
    assert snapshot(ws) == before, "files changed"
    assert not cache.exists(), "a data cache was built"
    assert not (ws / "pwned").exists()


# ------------------------------------------------------------------ two writers, kill -9
WRITER = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from conftest import tiny_config
    from aevb.training import Callback, Trainer

    torch.set_num_threads(1)
    class Hold(Callback):
        def on_epoch_end(self, trainer, record):
            print("epoch", trainer.epoch, flush=True)
            time.sleep(600)

    trainer = Trainer.new(tiny_config(train={{"epochs": 3}}), {out!r}, callbacks=[Hold()])
    if {before_checkpoint}:
        print("started", flush=True)
        time.sleep(600)
    trainer.fit()
""")


def _writer(out: Path, before_checkpoint: bool) -> subprocess.Popen:
    code = WRITER.format(tests=str(REPO / "tests"), out=str(out), before_checkpoint=before_checkpoint)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = p.stdout.readline()  # the writer is in the state we want once it says so
    assert line.strip() in ("started", "epoch 1"), line
    return p


@pytest.mark.parametrize("before_checkpoint", [True, False], ids=["killed-before-checkpoint", "killed-after"])
def test_a_second_writer_is_refused_and_a_killed_run_can_be_continued(tmp_path, capsys, before_checkpoint,
                                                                       one_thread):
    out = tmp_path / "run"
    writer = _writer(out, before_checkpoint)
    try:
        snap = snapshot(out)
        for argv, needle in [(["train", "--out", str(out), "--no-progress"], "still training"),
                             (["train", "--out", str(out), "--overwrite", "--no-progress"], "would destroy"),
                             (["train", "--resume", str(out), "--no-progress"], "cannot resume it now")]:
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"is being written by process {writer.pid}" in err and needle in err, err
        assert snapshot(out) == snap
        if before_checkpoint:  # readers say why there is nothing to read yet
            assert main(["evaluate", str(out)]) == 2
            assert "still training its first epoch" in capsys.readouterr().err
    finally:
        writer.kill()  # kill -9
        writer.wait()
    assert read_marker(out)["status"] == "running"  # what a killed writer leaves
    assert Run(out).status == "stopped"  # what every command reports: its writer is gone
    stale = json.loads((out / LOCK_NAME).read_text())
    assert stale["pid"] == writer.pid  # the killed writer's record is left, and holds nothing
    python = live_process()
    try:  # a live process with the recorded pid and start time, but without the lock, holds nothing
        (out / LOCK_NAME).write_text(json.dumps({**stale, "pid": python.pid,
                                                 "start_ticks": process_start(python.pid)}))
        assert Run(out).status == "stopped"
    finally:
        python.kill()
        python.wait()
    (out / LOCK_NAME).write_text(json.dumps(stale))
    (out / "checkpoints").mkdir(exist_ok=True)
    orphan = out / "checkpoints" / ".last.pt.abc123.tmp"  # a write cut short by the kill
    orphan.write_bytes(b"half a checkpoint")
    if before_checkpoint:
        assert main(["evaluate", str(out)]) == 2
        assert f"aevb train --resume {out}" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0  # stale lock taken over
    err = capsys.readouterr().err
    assert ("again from scratch" in err) == before_checkpoint, err
    assert read_marker(out)["status"] == "finished"
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 2
    assert [r["epoch"] for r in load_run(out).metrics()] == [1, 2]
    assert not orphan.exists() and not (out / LOCK_NAME).exists()


def test_two_writers_started_together_one_wins(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "aevb", "train", "--out", str(out), "--preset", "digits", "--epochs", "1",
           "--hidden", "16", "--no-progress", "--no-tensorboard", "--threads", "1"]
    procs = [subprocess.Popen(cmd + ["--latent-dim", str(j)], stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}) for j in (2, 3)]
    results = [(p.wait(timeout=240), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    winner = [j for (c, _), j in zip(results, (2, 3)) if c == 0][0]
    loser_err = [e for c, e in results if c == 2][0]
    assert "Traceback" not in loser_err and ("being written by" in loser_err or "already holds a run" in loser_err)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["latent_dim"] == winner  # config, model and metrics of the same run
    assert load_run(out).load_model().latent_dim == winner


_RACER = textwrap.dedent("""
    import os, random, sys, time
    from aevb.lock import LockedError, RunLock
    folder, start, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    inside = os.path.join(folder, "inside")
    rng = random.Random(os.getpid())
    held = refused = 0
    while time.time() < start:
        time.sleep(0.001)
    while held < n:
        try:
            lock = RunLock(folder).acquire()
        except LockedError:
            refused += 1
            time.sleep(rng.random() * 0.002)
            continue
        try:  # nobody else may be here now
            os.close(os.open(inside, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            print("two holders at once", file=sys.stderr)
            sys.exit(1)
        held += 1
        time.sleep(rng.random() * 0.002)
        os.unlink(inside)
        if held % 2:  # half the time "crash" as kill -9 does: the file stays, the lock goes
            os.close(lock._fd)
            lock._fd, lock.held = None, False
        else:
            lock.release()
        time.sleep(rng.random() * 0.001)
    print(held, refused)
""")


def test_processes_racing_for_one_lock_never_hold_it_together(tmp_path):
    """Two writers (one per core) take the same lock 300 times each, alternately releasing it
    (which deletes the lock file) and "crashing" (leaving the file): never are both inside at
    once. A lock taken on a file that its holder's release had just deleted let two writers in."""
    script = tmp_path / "racer.py"
    script.write_text(_RACER)
    folder = tmp_path / "run"
    folder.mkdir()
    start = time.time() + 3
    procs = [subprocess.Popen([sys.executable, str(script), str(folder), str(start), "300"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    refused = sum(int(o.split()[1]) for o, _ in outs)
    assert refused > 0, outs  # they did contend


def _take(folder: Path, lock=None):
    """Acquire ``folder``'s lock (over a lock file holding ``lock``, a dict or text, if given): the
    RunLock, or the LockedError."""
    from aevb.lock import LockedError, RunLock

    if lock is not None:
        (folder / LOCK_NAME).write_text(lock if isinstance(lock, str) else json.dumps(lock))
    try:
        return RunLock(folder).acquire()
    except LockedError as e:
        return e


def _mine(folder: Path) -> bool:
    """Whether the lock file of ``folder`` records this process, as it records a writer."""
    info = json.loads((folder / LOCK_NAME).read_text())
    return (info["pid"], info["host"], info["start_ticks"]) == (os.getpid(), socket.gethostname(),
                                                                 process_start(os.getpid()))


_FLOCK = ("import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
          "fcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, sys.argv[2].encode())\nprint('held', flush=True)\n"
          "time.sleep(3600)\n")


def _flock_holder(path: Path, content: str) -> subprocess.Popen:
    """A process that is no aevb writer but holds the flock of ``path``, having written ``content``."""
    proc = subprocess.Popen([sys.executable, "-c", _FLOCK, str(path), content], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process start times from /proc")
def test_a_lock_is_held_by_its_live_writer_only_and_kill_9_frees_it(tmp_path):
    from aevb.lock import LockedError, RunLock

    writer = lock_holder(tmp_path)
    try:
        got = _take(tmp_path)
        assert isinstance(got, LockedError), got
        text = str(got)
        assert f"is being written by process {writer.pid} on {socket.gethostname()} since " in text, text
        assert f"cannot write it now: wait for it to finish or stop it (kill {writer.pid}); the lock is freed " \
               "when that process ends" in text, text
        assert "delete" not in text  # its lock goes with it: nothing to clear by hand
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == writer.pid  # the refusal changed nothing
    finally:
        writer.kill()  # kill -9
        writer.wait()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == writer.pid  # the file stays, unheld
    lock = _take(tmp_path)
    assert isinstance(lock, RunLock) and _mine(tmp_path)
    again = _take(tmp_path)  # a second lock of the same process is refused like any other writer
    assert isinstance(again, LockedError) and f"process {os.getpid()}" in str(again), again
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    # a record naming a live process, with its very start time, holds nothing without the lock:
    # a reused pid, or a writer's record copied, cannot keep the folder
    others = [live_process(), live_process(["sleep", "3600"])]
    try:
        for pid, ticks in [(p.pid, process_start(p.pid)) for p in others] + [(os.getpid(), process_start(os.getpid())),
                                                                             (1, process_start(1)), (10**30, None),
                                                                             (-5, None), (0, None)]:
            got = _take(tmp_path, {"pid": pid, "host": socket.gethostname(), "start_ticks": ticks})
            assert isinstance(got, RunLock) and _mine(tmp_path), (pid, got)
            got.release()
        assert all(p.poll() is None for p in others)  # and nothing was done to them
    finally:
        for p in others:
            p.kill()
            p.wait()


def test_a_refusal_never_says_to_kill_a_process_that_did_not_write_the_lock(tmp_path):
    """The flock held by a process that is no aevb writer, its file naming pid 1 (with pid 1's
    real start time), a live process of another program, or no one readable: the refusal names
    no kill command, only how to wait or stop what holds it."""
    from aevb.lock import LockedError

    sleeper = live_process(["sleep", "3600"])
    records = [{"pid": 1, "host": socket.gethostname(), "start_ticks": process_start(1)},
               {"pid": sleeper.pid, "host": socket.gethostname()},  # no start time: cannot be told
               {"pid": sleeper.pid, "host": socket.gethostname(), "start_ticks": -1}]
    try:
        for record in records:
            holder = _flock_holder(tmp_path / LOCK_NAME, json.dumps(record))
            try:
                got = _take(tmp_path)
                assert isinstance(got, LockedError), got
                text = str(got)
                assert f"being written by process {record['pid']}" in text and "kill" not in text, text
                assert "stop the aevb command that holds it; the lock is freed when that process ends" in text, text
            finally:
                holder.kill()
                holder.wait()
            (tmp_path / LOCK_NAME).unlink()
        holder = _flock_holder(tmp_path / LOCK_NAME, "{not json")  # held, and unreadable
        try:
            t0 = time.monotonic()
            got = _take(tmp_path)
            assert time.monotonic() - t0 >= 0.9  # its holder was given time to finish writing it
            assert "whose lock file cannot be read (being written right now, or damaged)" in str(got), got
            assert "kill" not in str(got)
        finally:
            holder.kill()
            holder.wait()
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_unheld_lock_file_is_taken_over_whatever_it_holds(tmp_path):
    """Without its flock a lock file is what a writer that ended left: empty (killed between
    creating and writing it), damaged or naming no process, it is taken at once."""
    from aevb.lock import RunLock

    for text in ("", "{half", "[1, 2]", '{"pid": "abc"}', "\\x00\\xff"):
        t0 = time.monotonic()
        got = _take(tmp_path, text)
        assert isinstance(got, RunLock) and _mine(tmp_path), (text, got)
        assert time.monotonic() - t0 < 0.5  # no waiting for a writer
        got.release()


def test_a_lock_written_on_another_host_is_refused_naming_that_host(tmp_path, capsys):
    """A folder shared between machines, where flock may not reach: another host's lock file is
    never taken over; the message names the host and the file to delete once that run stopped."""
    from aevb.lock import LockedError, is_locked

    record = {"pid": 1, "host": "gpu-node-7", "started": "2026-01-02T03:04:05", "command": "aevb train --out r"}
    got = _take(tmp_path, record)
    assert str(got) == (f"{tmp_path} is being written by process 1 on gpu-node-7 since 2026-01-02T03:04:05 "
                        f"(aevb train --out r); cannot write it now: wait for it to finish or stop it on gpu-node-7; "
                        f"if that process is no longer running, delete {tmp_path / LOCK_NAME}")
    assert isinstance(got, LockedError) and is_locked(tmp_path)
    assert json.loads((tmp_path / LOCK_NAME).read_text()) == record  # left as it was


def test_a_read_only_run_folder_is_refused_in_one_line(tmp_path, capsys):
    """The lock file cannot be created in a read-only folder: said in one line (exit status 2),
    with nothing changed, and readers still read the run."""
    run = tmp_path / "run"
    train_tiny_run(run)
    before = snapshot(run)
    with read_only(run):
        assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        why = "Read-only file system" if os.geteuid() == 0 else "Permission denied"  # (see read_only)
        assert err.startswith(f"aevb train: error: {run}: cannot resume it: its lock file {run / LOCK_NAME} "
                              f"cannot be created ({why}"), err
        assert err.endswith("); make the folder writable first") and len(err.splitlines()) == 1, err
        assert main(["evaluate", str(run), "--k", "5", "--limit", "20", "--out", str(tmp_path / "e.json")]) == 0
        capsys.readouterr()
    assert snapshot(run) == before


def test_without_flock_a_lock_file_holds_its_folder_until_released_or_deleted(tmp_path, monkeypatch):
    """Where the system has no flock (Windows), the lock file itself is the lock: refused while
    it exists, with the file to delete once no aevb command works on the folder."""
    from aevb import lock as lock_module

    monkeypatch.setattr(lock_module, "fcntl", None)
    lock = _take(tmp_path)
    assert isinstance(lock, lock_module.RunLock) and _mine(tmp_path) and lock_module.is_locked(tmp_path)
    refused = _take(tmp_path)
    assert isinstance(refused, lock_module.LockedError), refused
    assert str(refused).endswith(f"cannot write it now: wait for it to finish; if no aevb command is working on "
                                 f"this folder, delete {tmp_path / LOCK_NAME}"), refused
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists() and not lock_module.is_locked(tmp_path)
    (tmp_path / LOCK_NAME).write_text("")  # created, never written: its creator was killed
    got = _take(tmp_path)
    assert isinstance(got, lock_module.RunLock), got
    got.release()


def test_a_lock_goes_with_its_folder_when_renamed(tmp_path):
    """--overwrite renames a locked run aside: the lock stays held at the new name, and its
    release deletes only its own file."""
    from aevb.lock import RunLock, is_locked

    (tmp_path / "a").mkdir()
    lock = RunLock(tmp_path / "a").acquire()
    os.rename(tmp_path / "a", tmp_path / "b")
    lock.moved(tmp_path / "b")
    assert is_locked(tmp_path / "b") and not is_locked(tmp_path / "a")
    (tmp_path / "a").mkdir()
    other = RunLock(tmp_path / "a").acquire()  # a new folder at the old name has its own lock
    lock.release()
    assert not (tmp_path / "b" / LOCK_NAME).exists() and is_locked(tmp_path / "a")
    other.release()
    assert not is_locked(tmp_path / "a")


# ------------------------------------------------------------------ --overwrite
def test_overwrite_keeps_the_old_run_until_the_new_one_has_trained_an_epoch(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    Trainer.new(tiny_config(train={"epochs": 1}), out).fit()
    old = snapshot(tmp_path)
    base = ["train", "--out", str(out), "--overwrite", "--no-progress", "--no-tensorboard", "--epochs", "1",
            "--latent-dim", "2", "--hidden", "16"]
    # diverges in its first epoch: the old run stays byte for byte, the new one is gone
    assert main(base + ["--optimizer", "sgd", "--lr", "1e30"]) == 3
    err = capsys.readouterr().err
    assert "The new run was discarded" in err and "unchanged" in err, err
    assert snapshot(tmp_path) == old
    assert main(base) == 0
    capsys.readouterr()
    assert json.loads((out / "config.json").read_text())["model"]["latent_dim"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging or trash folder left


# ------------------------------------------------------------------ divergence, faults
def test_divergence_in_the_first_epoch_of_a_new_run_says_what_works(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--no-progress", "--no-tensorboard", "--epochs", "2", "--hidden", "16",
            "--optimizer", "sgd", "--lr", "1e30"]
    assert main(argv) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert "before any checkpoint" in err[-1] and f"aevb train --out {out} --overwrite" in err[-1], err
    assert read_marker(out)["status"] == "failed"
    assert not (out / "checkpoints" / "last.pt").exists()
    assert main(["train", "--out", str(out), "--overwrite", "--no-progress", "--no-tensorboard", "--epochs", "1",
                 "--hidden", "16"]) == 0
    assert read_marker(out)["status"] == "finished"


def test_an_unexpected_error_is_one_line_pointing_to_the_log(tmp_path, capsys, monkeypatch, one_thread):
    from aevb.training import loggers  # what the command adds to the library's callbacks: --logger
    from aevb.training import Callback

    class Boom(Callback):
        def on_epoch_end(self, trainer, record):
            raise ZeroDivisionError("a bug")

    monkeypatch.setattr(loggers, "build_loggers", lambda names: [Boom()])
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--no-progress", "--no-tensorboard", "--epochs", "2",
                 "--hidden", "16"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert "Traceback" not in "\n".join(err)
    assert "internal error: ZeroDivisionError: a bug" in err[-1] and str(out / "error.log") in err[-1]
    assert "Traceback" in (out / "error.log").read_text()
    info = read_marker(out)
    assert info["status"] == "failed" and info["epoch"] == 1
    assert main(["train", "--resume", str(out), "--no-progress"]) == 1  # the same bug again, still one line
    monkeypatch.setattr(loggers, "build_loggers", lambda names: [])
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0  # continues from epoch 1
    assert read_marker(out)["status"] == "finished"


@pytest.mark.parametrize("where", ["torch.save", "os.replace"])
def test_ctrl_c_during_the_checkpoint_write_interrupts_and_keeps_the_last_checkpoint(tmp_path, capsys,
                                                                                     monkeypatch, where,
                                                                                     one_thread):
    """Ctrl-C inside torch.save used to surface as the RuntimeError of torch's clean-up: an
    internal error and status 'failed'. The run must end 'interrupted', with epoch 1's
    checkpoint, and a resume must give the numbers of a run never stopped."""
    argv = ["--no-progress", "--no-tensorboard", "--epochs", "3", "--hidden", "16", "--latent-dim", "2",
            "--images-every", "0"]
    assert main(["train", "--out", str(tmp_path / "whole")] + argv) == 0
    out = tmp_path / "run"
    saves = []
    real_save, real_replace = torch.save, os.replace

    def save(obj, f, *a, **k):
        saves.append(1)
        return real_save(obj, WriteInterrupted(f) if len(saves) == 2 else f, *a, **k)

    def replace(src, dst, *a, **k):
        if str(dst).endswith("last.pt"):
            saves.append(1)
            if len(saves) == 2:
                raise KeyboardInterrupt
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(torch, "save", save) if where == "torch.save" else monkeypatch.setattr(os, "replace", replace)
    capsys.readouterr()
    assert main(["train", "--out", str(out)] + argv) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "internal error" not in err, err
    monkeypatch.undo()
    info = read_marker(out)
    assert (info["status"], info["epoch"]) == ("interrupted", 1), info
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1
    assert not list(out.rglob("*.tmp")) and not (out / "error.log").exists()
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in rows]
    assert strip(load_run(out).metrics()) == strip(load_run(tmp_path / "whole").metrics())
    assert read_marker(out)["status"] == "finished"


def test_a_full_disk_message_tells_the_needed_and_free_sizes_apart(tmp_path, monkeypatch):
    from collections import namedtuple

    from aevb.errors import DiskFullError

    usage = namedtuple("usage", "total used free")
    for needed, free, want in [(912_345, 905_000, "about 912.3 kB needed, 905.0 kB free"),
                               (912_345, 912_300, "about 912.35 kB needed, 912.30 kB free"),
                               (999_960_000, 999_000_000, "about 1.0 GB needed, 999.0 MB free"),
                               (50_000_000, 1_200_000, "about 50.0 MB needed, 1.2 MB free")]:
        monkeypatch.setattr(shutil, "disk_usage", lambda p, free=free: usage(10**9, 10**9 - free, free))
        assert want in str(DiskFullError(tmp_path / "x.pt", needed))


def _tmpfs(path: Path, size: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk needs a small tmpfs, which only root can mount")
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"could not mount a tmpfs for the full-disk test: {r.stderr.strip()}")


def test_a_full_disk_says_so_fails_the_run_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch,
                                                                         one_thread):
    from aevb.training import loggers  # what the command adds to the library's callbacks: --logger
    from aevb.training import Callback

    disk = tmp_path / "disk"
    _tmpfs(disk, "8m")
    try:
        class Fill(Callback):  # after epoch 1, leave less room than a checkpoint needs
            def on_epoch_end(self, trainer, record):
                if trainer.epoch == 1:
                    free = shutil.disk_usage(disk).free
                    (disk / "filler").write_bytes(b"\0" * max(0, free - 64_000))

        monkeypatch.setattr(loggers, "build_loggers", lambda names: [Fill()])
        out = disk / "run"
        assert main(["train", "--out", str(out), "--no-progress", "--no-tensorboard", "--epochs", "3",
                     "--hidden", "1000", "--images-every", "0"]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert err[-1].startswith("aevb train: error: disk full: could not write "), err
        assert "checkpoints/last.pt" in err[-1] and "MB needed" in err[-1]
        assert "the last checkpoint (epoch 1) is kept" in err[-1] and f"aevb train --resume {out}" in err[-1]
        info = read_marker(out)
        assert info["status"] == "failed" and info["epoch"] == 1 and "disk full" in info["reason"]
        assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1
        assert not list(disk.rglob("*.tmp"))
        with open(disk / "filler2", "wb", buffering=0) as f:  # now leave no room at all
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        snap = snapshot(out)
        for argv in (["sample", str(out), "--out", str(disk / "s.png")],
                     ["evaluate", str(out), "--out", str(disk / "e.json")],
                     ["train", "--resume", str(out), "--no-progress"]):  # fails before it trains: nothing changes
            assert main(argv) == 2
            err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
            assert "disk full: could not write" in err[-1] and "Traceback" not in "".join(err), err
        assert snapshot(out) == snap and sorted(p.name for p in disk.iterdir()) == ["filler", "filler2", "run"]
        (disk / "filler").unlink()
        (disk / "filler2").unlink()
        monkeypatch.setattr(loggers, "build_loggers", lambda names: [])
        assert main(["train", "--resume", str(out), "--no-progress"]) == 0
        assert read_marker(out)["status"] == "finished"
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)  # lazy: even if a file is still open


# ------------------------------------------------------------------ data that changed or repeats
def test_resume_on_changed_array_data_is_refused(tmp_path, capsys, one_thread):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).random((60, 6)).astype(np.float32))
    out = tmp_path / "run"
    argv = ["train", "--dataset", f"array:{path}", "--out", str(out), "--epochs", "1", "--hidden", "8",
            "--latent-dim", "2", "--no-progress", "--no-tensorboard"]
    assert main(argv) == 0
    assert read_marker(out)["data_fingerprint"]["files"] == 1
    np.save(path, np.random.default_rng(1).random((60, 6)).astype(np.float32))
    snap = snapshot(out)
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 2
    assert "changed since the run started" in capsys.readouterr().err
    assert snapshot(out) == snap


def test_a_symlink_loop_and_linked_duplicates_are_loaded_once(tmp_path):
    from PIL import Image

    from aevb.data import load_dataset

    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray((rng.random((6, 6)) * 255).astype(np.uint8)).save(root / "a" / f"{i}.png")
    os.symlink("..", root / "a" / "loop")  # a loop
    os.symlink("a", root / "b")  # every image a second time
    os.link(root / "a" / "0.png", root / "a" / "zz.png")  # one image under two names
    ds = load_dataset(f"folder:{root}")
    assert len(ds.train) + len(ds.test) == 20
    from aevb.data.fingerprint import fingerprint

    assert fingerprint(f"folder:{root}")["duplicates"] == 0
    shutil.copy(root / "a" / "1.png", root / "a" / "copy.png")  # a real copy is reported, not hidden
    assert fingerprint(f"folder:{root}")["duplicates"] == 1
    rows = {tuple(r.tolist()) for r in torch.cat([ds.train.materialize(), ds.test.materialize()])}
    assert len(rows) == 20  # no test row is a copy of a training row


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_one_file_under_two_names_in_two_splits_is_refused(tmp_path, capsys, monkeypatch, link, one_thread):
    """A folder's train/ and test/, or a CelebA partition, where a test image is a link to (or
    another name of) a training image: refused before anything is read or written, naming both."""
    from PIL import Image

    from helpers import write_celeba

    make = (lambda src, dst: os.symlink(src, dst)) if link == "symlink" else os.link
    rng = np.random.default_rng(0)
    pics = tmp_path / "pics"
    for split in ("train", "test"):
        (pics / split).mkdir(parents=True)
        for i in range(4):
            Image.fromarray((rng.random((6, 6)) * 255).astype(np.uint8)).save(pics / split / f"{split}{i}.png")
    make(pics / "train" / "train2.png", pics / "test" / "renamed.png")
    celeba = tmp_path / "celeba"
    write_celeba(celeba, {f"{i:06d}.jpg": p for i, p in enumerate([0, 0, 0, 1, 2, 2], 1)}, absent=0)
    make(celeba / "img_align_celeba" / "000002.jpg", celeba / "img_align_celeba" / "000099.jpg")
    with open(celeba / "list_eval_partition.txt", "a") as f:
        f.write("000099.jpg 2\n")  # another name of a training image, as a test image
    cache = tmp_path / "cache"
    monkeypatch.setenv("AEVB_CACHE", str(cache))
    for argv, first, second in [
        (["--dataset", f"folder:{pics}"], pics / "train" / "train2.png", pics / "test" / "renamed.png"),
        (["--dataset", "celeba", "--data-dir", str(celeba)], celeba / "img_align_celeba" / "000002.jpg",
         celeba / "img_align_celeba" / "000099.jpg")]:
        before = snapshot(tmp_path)
        assert main(["train", *argv, "--out", str(tmp_path / "run"), "--epochs", "1", "--no-progress"]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and "1 image(s) are in two splits under two names of one file" in err[0], err
        assert f"{first} (train) and {second} (test)" in err[0], err
        assert snapshot(tmp_path) == before and not (tmp_path / "run").exists() and not cache.exists()
    (pics / "test" / "renamed.png").unlink()  # without the link both load
    from aevb.data import load_dataset

    assert len(load_dataset(f"folder:{pics}").test) == 4


def test_pictures_of_different_sizes_are_refused_from_their_headers(tmp_path, capsys, monkeypatch, one_thread):
    """Without --image-size, pictures of two sizes are found from the headers alone (nothing is
    decoded, no cache is built) and refused in one line naming a file of each size."""
    from aevb.data import decode

    pics = tmp_path / "pics"
    for i in range(40):
        _write(pics / f"{i:02d}.png", _png(8, 8, i % 4))
    _write(pics / "30b.png", _png(9, 8, 1))
    _write(pics / "31b.png", _png(8, 7, 1))
    decoded = []
    real = decode.decode
    monkeypatch.setattr(decode, "decode", lambda *a, **k: decoded.append(a) or real(*a, **k))
    cache = tmp_path / "cache"
    monkeypatch.setenv("AEVB_CACHE", str(cache))
    argv = ["train", "--dataset", f"folder:{pics}", "--out", str(tmp_path / "run"), "--epochs", "1", "--no-progress"]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert (f"{pics / '00.png'} is 8x8 but {pics / '30b.png'} is 9x8 (height x width) (and 1 more differ from the "
            "first); give an image size to resize them all to (e.g. --image-size 8 8; image_size=(8, 8) in Python)") in err[0], err
    assert not decoded and not cache.exists() and not (tmp_path / "run").exists()
    assert main(argv + ["--image-size", "8", "8", "--hidden", "8", "--no-tensorboard"]) == 0  # resized: accepted
    assert decoded


# ------------------------------------------------------------------ checkpoints that prove themselves
def _invert_64_bytes(path: Path, tensor: torch.Tensor) -> None:
    """Invert 64 bytes of ``tensor``'s data where they lie in the checkpoint file ``path`` (as a
    failing disk or a bad copy would), leaving the zip archive itself readable."""
    raw = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    data = bytearray(path.read_bytes())
    at = data.find(raw[:64])
    assert at >= 0 and data.find(raw[:64], at + 1) < 0, "the tensor's bytes are not found once in the file"
    data[at + 8:at + 72] = bytes(b ^ 0xFF for b in data[at + 8:at + 72])
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def proofs(tmp_path_factory):
    """A finished run with a validation split (last.pt and best.pt), a second run of the same
    settings (the same weights, another run id), and copies of the first with one checkpoint
    damaged, made non-finite, taken from the second run, or missing."""
    from aevb.io import save_checkpoint

    root = tmp_path_factory.mktemp("proofs")
    settings = dict(data={"validation": 100})
    run = train_tiny_run(root / "run", **settings)
    train_tiny_run(root / "other", **settings)
    ckpt = run / "checkpoints"

    def copy(name):
        shutil.copytree(run, root / name, symlinks=True)
        return root / name / "checkpoints"

    def weights(path):
        return next(v for v in torch.load(path, weights_only=True)["model"].values() if v.numel() >= 64)

    _invert_64_bytes(copy("bad_last") / "last.pt", weights(ckpt / "last.pt"))
    _invert_64_bytes(copy("bad_best") / "best.pt", weights(ckpt / "best.pt"))
    moments = torch.load(ckpt / "last.pt", weights_only=True)["optimizer"]["state"][0]["exp_avg_sq"]
    _invert_64_bytes(copy("bad_moments") / "last.pt", moments)
    state = torch.load(ckpt / "last.pt", weights_only=True)
    next(iter(state["model"].values())).view(-1)[0] = float("nan")
    save_checkpoint(state, copy("nan") / "last.pt")  # sealed as written: only the finiteness check refuses it
    shutil.copy(root / "other" / "checkpoints" / "best.pt", copy("copied_best") / "best.pt")
    (copy("linked_best") / "best.pt").unlink()
    (root / "linked_best" / "checkpoints" / "best.pt").symlink_to(root / "other" / "checkpoints" / "best.pt")
    (copy("best_only") / "last.pt").unlink()
    return root


INTACT_BEST = "the run's other checkpoint {ws}/{run}/checkpoints/best.pt (epoch 1) is intact"
INTACT_LAST = "the run's other checkpoint {ws}/{run}/checkpoints/last.pt (epoch 1) is intact"
DAMAGED = "checkpoint {ws}/{run}/checkpoints/{file} is damaged: the digest of its model weights does not match"
NON_FINITE = "checkpoint {ws}/nan/checkpoints/last.pt holds NaN or infinite values in its model weights"
OTHER_RUN = "checkpoint {ws}/{run}/checkpoints/best.pt{link} belongs to another run (run id "
SCORE, EVALUATE = "score {ws}/{run} --data digits:test --out {out}/s.csv", "evaluate {ws}/{run} --out {out}/e.json"
EXPORT = "export {ws}/{run} --format safetensors --out {out}/export"
ENCODE, RECONSTRUCT = "encode {ws}/{run} --data digits:test --out {out}/c.npz", "reconstruct {ws}/{run} --data digits:test --out {out}/rec"
RESUME = "train --resume {ws}/{run} --epochs 4 --no-progress --threads 1"
# (command with {run}, the run folder, exit status, what the one line holds: each part in it)
CHECKPOINT_CASES = [
    *[(cmd, "bad_last", 2, [DAMAGED.replace("{file}", "last.pt"), INTACT_BEST])
      for cmd in (SCORE, EVALUATE, EXPORT, "report {ws}/{run} --out {out}/r.html")],
    (RESUME, "bad_last", 2, [DAMAGED.replace("{file}", "last.pt"), INTACT_BEST, "to train on, restore last.pt"]),
    *[(cmd, "bad_last", 2, [DAMAGED.replace("{file}", "last.pt"), INTACT_BEST]) for cmd in (ENCODE, RECONSTRUCT)],
    *[(cmd + " --checkpoint best", "bad_best", 2, [DAMAGED.replace("{file}", "best.pt"), INTACT_LAST])
      for cmd in (SCORE, EVALUATE, EXPORT)],
    (RESUME, "bad_best", 2, [DAMAGED.replace("{file}", "best.pt"), "the resumed run would keep a best checkpoint "
                             "that cannot be used: restore {ws}/{run}/checkpoints/best.pt from a copy, or delete it"]),
    (RESUME, "bad_moments", 2, ["checkpoint {ws}/{run}/checkpoints/last.pt is damaged: the digest of its optimizer "
                                "state (Adam's moments) does not match", "its model (epoch 1) passes every check"]),
    (SCORE, "nan", 2, [NON_FINITE, INTACT_BEST]),
    (EVALUATE, "nan", 2, [NON_FINITE]),
    (RESUME, "nan", 2, [NON_FINITE]),
    (SCORE + " --checkpoint best", "copied_best", 2, [OTHER_RUN.replace("{link}", ""), INTACT_LAST]),
    (EXPORT + " --checkpoint best", "copied_best", 2, [OTHER_RUN.replace("{link}", "")]),
    (SCORE + " --checkpoint best", "linked_best", 2,
     [OTHER_RUN.replace("{link}", " (a symbolic link to {ws}/other/checkpoints/best.pt)"), INTACT_LAST]),
    *[(cmd + " --checkpoint best", "best_only", 0, []) for cmd in (SCORE, EVALUATE, EXPORT)],
    ("encode {ws}/{run} --data digits:test --out {out}/c.npz --checkpoint best", "best_only", 0, []),
    ("sample {ws}/{run} --out {out}/s.png --checkpoint best", "best_only", 0, []),
]


@pytest.mark.parametrize("argv,run,code,parts", CHECKPOINT_CASES, ids=[f"{c[1]}: {c[0][:40]}" for c in CHECKPOINT_CASES])
def test_a_checkpoint_that_fails_its_check_is_refused_and_nothing_is_written(proofs, tmp_path, argv, run, code, parts,
                                                                             capsys, monkeypatch, one_thread):
    """The table of checkpoint checks: the command, its exit status, its one line naming the file,
    what failed and what to do, and the SHA-256 of every file of every run the same before and after."""
    import shlex

    monkeypatch.setenv("AEVB_CACHE", str(tmp_path / "cache"))
    fill = {"{ws}": str(proofs), "{run}": run, "{out}": str(tmp_path)}
    args = shlex.split(argv)
    for key, value in fill.items():
        args = [a.replace(key, value) for a in args]
    before = snapshot(proofs)
    got = main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert got == code, err
    lines = [line for line in err.splitlines() if line.strip()]
    if code:
        assert len(lines) == 1, err
        for part in parts:
            for key, value in fill.items():
                part = part.replace(key, value)
            assert part in lines[0], lines[0]
        assert not [p for p in tmp_path.iterdir() if p.name != "cache"], "an output was written"
    else:
        assert [p for p in tmp_path.iterdir() if p.name != "cache"], "no output was written"
    assert snapshot(proofs) == before, "files changed"


def test_the_python_api_refuses_what_the_commands_refuse(proofs):
    from aevb import VAE

    for call, needle in [
        (lambda: load_run(proofs / "bad_last").load_model(), "last.pt is damaged"),
        (lambda: load_run(proofs / "bad_best").encode("digits:test", checkpoint="best"), "best.pt is damaged"),
        (lambda: load_run(proofs / "nan").score("digits:test"), "holds NaN or infinite values"),
        (lambda: VAE.from_pretrained(proofs / "copied_best", checkpoint="best"), "belongs to another run"),
        (lambda: VAE.from_pretrained(proofs / "linked_best", checkpoint="best"), "(a symbolic link to "),
        (lambda: load_checkpoint(proofs / "bad_moments" / "checkpoints" / "last.pt"), "Adam's moments"),
    ]:
        with pytest.raises(CheckpointError, match=re.escape(needle)):
            call()
    # a model-only load of the same file checks the weights and never reads the moments
    assert load_checkpoint(proofs / "bad_moments" / "checkpoints" / "last.pt", model_only=True)["epoch"] == 1
    assert load_run(proofs / "best_only").load_model(checkpoint="best") is not None


def test_checkpoints_written_before_digests_and_run_ids_still_load_and_the_run_gets_an_id(tmp_path, one_thread):
    from aevb import resume

    run = train_tiny_run(tmp_path / "old")
    path = run / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    assert state["run_id"] == read_marker(run)["run_id"] and set(state["digest"]["entries"]) == set(state) - {"digest"}
    for key in ("digest", "run_id"):
        state.pop(key)
    torch.save(state, path)  # as aevb wrote it before
    marker = json.loads((run / "run.json").read_text())
    marker.pop("run_id")
    (run / "run.json").write_text(json.dumps(marker))
    assert load_run(run).load_model() is not None
    resume(run, epochs=2)
    ident = read_marker(run)["run_id"]
    assert ident and torch.load(path, weights_only=True)["run_id"] == ident


class _PoisonAfterFirstBatch(Callback):
    """NaN weights after the epoch's only batch: its training loss is finite, its test bound is not."""

    def on_train_batch_end(self, trainer, outputs, batch_idx):
        with torch.no_grad():
            for p in trainer.model.parameters():
                p.fill_(float("nan"))


def test_divergence_names_the_epoch_the_kept_checkpoint_holds(tmp_path, one_thread):
    from aevb import resume
    from aevb.errors import TrainingDiverged

    run = train_tiny_run(tmp_path / "run")
    last = run / "checkpoints" / "last.pt"
    before = last.read_bytes()
    with pytest.raises(TrainingDiverged) as e:
        resume(run, epochs=3, limit_batches=1, callbacks=[_PoisonAfterFirstBatch()])
    assert "The last good checkpoint (epoch 1) is kept in" in str(e.value), str(e.value)
    assert last.read_bytes() == before and load_checkpoint(last)["epoch"] == 1
