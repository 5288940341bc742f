"""Data-parallel training under torchrun: 2 CPU processes (gloo) train, agree with one process,
resume exactly, and fail cleanly; the sharded loss gives the full-batch gradient."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from aevb import distributed, load_run
from aevb.cli import main
from aevb.io import load_checkpoint
from aevb.model import VAE
from aevb.training.objective import batch_loss, objective_terms

from conftest import tiny_config
from aevb import metrics as M

ARGS = ["--dataset", "digits", "--hidden", "32", "--latent-dim", "3", "--batch-size", "64",
        "--no-progress", "--no-tensorboard", "--threads", "1"]


def _gloo():
    return torch.distributed.is_available() and torch.distributed.is_gloo_available()


needs_gloo = pytest.mark.skipif(not _gloo(), reason="torch.distributed with gloo is not available")

# A torchrun worker was seen, rarely (about 1 launch in 50, only with another torchrun test
# running at the same time), to die by a signal while the gloo group was torn down. Such a
# launch failure reruns the test once; any other failure (a wrong number, a Python error) does not.
rerun_if_a_worker_was_killed = pytest.mark.flaky(reruns=1, only_rerun=["Signal \\d+ \\(SIG"])


def torchrun(cwd, *args, nproc=2, timeout=180):
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "aevb", "train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _strip(rows):
    return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in rows]


@needs_gloo
@rerun_if_a_worker_was_killed
def test_two_processes_train_agree_with_one_and_resume_exactly(tmp_path):
    # 2 epochs with 2 processes
    r = torchrun(tmp_path, *ARGS, "--epochs", "2", "--out", "RUN")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("training on digits") == 1, r.stderr[-3000:]  # only rank 0 talks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RUN"]
    run = load_run(tmp_path / "RUN")
    rows = run.metrics()
    assert [row["epoch"] for row in rows] == [1, 2]
    assert all(math.isfinite(v) for row in rows for v in row.values())
    state = load_checkpoint(run.checkpoint_path)
    assert state["epoch"] == 2 and state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    assert run.info["status"] == "finished"
    model = run.load_model()
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    # the processes drew different noise
    assert not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])

    # one process, same seed: not bit-equal (the noise differs) but close
    assert main(["train", *ARGS, "--epochs", "2", "--out", str(tmp_path / "one")]) == 0
    one = load_run(tmp_path / "one").metrics()
    assert [row["step"] for row in one] == [row["step"] for row in rows]  # same global batches
    assert rows[-1][M.TEST_BOUND] == pytest.approx(one[-1][M.TEST_BOUND], abs=1.5)
    assert rows[-1][M.TRAIN_BOUND] == pytest.approx(one[-1][M.TRAIN_BOUND], abs=1.5)
    assert rows[-1][M.TEST_BOUND] > rows[0][M.TEST_BOUND]  # it learns

    # an existing run is refused on every rank, without hanging, and left untouched
    before = run.checkpoint_path.read_bytes()
    r = torchrun(tmp_path, *ARGS, "--epochs", "2", "--out", "RUN", timeout=120)
    assert r.returncode != 0 and "already holds a run" in r.stderr, r.stderr[-3000:]
    assert run.checkpoint_path.read_bytes() == before

    # resume for a 3rd epoch equals an uninterrupted 3-epoch run, value for value
    r = torchrun(tmp_path, "--resume", "RUN", "--epochs", "3", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "was trained with" not in r.stderr, r.stderr[-3000:]  # same world size: no warning
    r = torchrun(tmp_path, *ARGS, "--epochs", "3", "--out", "FULL")
    assert r.returncode == 0, r.stderr[-3000:]
    resumed, full = load_run(tmp_path / "RUN"), load_run(tmp_path / "FULL")
    assert _strip(resumed.metrics()) == _strip(full.metrics())
    a, b = resumed.checkpoint()["model"], full.checkpoint()["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sharded_loss_gradients_sum_to_the_full_batch_gradient(monkeypatch):
    """Two shards idx[0::2], idx[1::2], each loss -sum/len(global batch): the summed gradients
    equal the gradient of the full batch's mean loss (noise removed: z = mu)."""
    monkeypatch.setattr(VAE, "_noise", lambda self, n, mu: torch.zeros((n,) + tuple(mu.shape), dtype=mu.dtype))
    torch.manual_seed(0)
    cfg = tiny_config()
    model = VAE.from_config(cfg.model, 64).double()
    x = torch.rand(61, 64, dtype=torch.float64)  # odd: the shards differ in size

    def grads(loss):
        model.zero_grad(set_to_none=True)
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    for beta in (1.0, 0.3):
        full = grads(batch_loss(objective_terms(model, x, cfg.objective), cfg.objective, beta))
        world = 2
        summed = None
        for rank in range(world):
            idx = torch.arange(len(x))[rank::world]
            g = grads(batch_loss(objective_terms(model, x[idx], cfg.objective), cfg.objective, beta, len(x)))
            summed = g if summed is None else [s + h for s, h in zip(summed, g)]
        for f, s in zip(full, summed):
            torch.testing.assert_close(s, f, rtol=1e-10, atol=1e-12)


def test_single_process_is_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.requested()
    info = distributed.info()
    assert not info.enabled and info.is_main and info.world_size == 1
    t = torch.ones(3)
    assert distributed.all_reduce_sum(t) is t and torch.equal(t, torch.ones(3))
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.all_gather_object(5) == [5]
    assert distributed.staged(lambda: 7) == 7
    assert distributed.rank_seed(123, 0) == 123 and distributed.rank_seed(123, 1) != 123
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node 1: an ordinary process
    assert not distributed.requested()


def test_single_process_checkpoint_has_no_distributed_keys(tmp_path):
    from aevb.training import Trainer

    Trainer.new(tiny_config(train={"epochs": 1}), tmp_path / "run").fit()
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert "world_size" not in state and "rng_ranks" not in state
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "finished"
