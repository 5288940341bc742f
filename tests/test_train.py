"""The training loop: it learns, it resumes exactly, and it refuses bad input without damage."""
import json
import math

import numpy as np
import pytest
import torch

from aevb import load_run, train
from aevb.cli import main
from aevb.config import ConfigError
from aevb.io import CheckpointError, load_checkpoint
from aevb.model import VAE
from aevb.bounds import dataset_bound
from aevb.errors import TrainingDiverged
from aevb.training import Callback, Trainer

from conftest import tiny_config
from aevb import metrics as M


def test_a_few_hundred_steps_raise_the_test_bound_clearly(tmp_path):
    cfg = tiny_config(train={"epochs": 15}, model={"latent_dim": 4, "encoder_hidden": [64]})
    trainer = Trainer.new(cfg, tmp_path / "run")
    before = dataset_bound(trainer.model, trainer.splits["test"])["bound"]
    history = trainer.fit()
    after = history[-1][M.TEST_BOUND]
    assert trainer.step == 15 * math.ceil(len(trainer.data.train) / 64) > 300
    # the new model starts at the data's mean image (about -27.6 nats), the best any model that
    # ignores z can do by much; the latents must take it well beyond that
    assert -29 < before < -27 and after > before + 1.5, (before, after)  # nats per datapoint
    assert history[-1][M.TEST_BOUND] > history[0][M.TEST_BOUND]
    # the logged terms add up to the bound
    r = history[-1]
    assert r[M.TEST_LOG_PX_GIVEN_Z] - r[M.TEST_KL] == pytest.approx(r[M.TEST_BOUND], abs=1e-4)


def _params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("binarize", [None, "dynamic"])
def test_interrupted_then_resumed_run_equals_uninterrupted(tmp_path, binarize):
    cfg = tiny_config(train={"epochs": 3}, data={"binarize": binarize})
    full = Trainer.new(cfg, tmp_path / "full")
    full.fit()

    short = tiny_config(train={"epochs": 1}, data={"binarize": binarize})
    Trainer.new(short, tmp_path / "part").fit()
    more = tiny_config(train={"epochs": 3})
    resumed = Trainer.resume(tmp_path / "part", overrides=more, given=["train.epochs"])
    assert resumed.epoch == 1
    resumed.fit()

    a, b = _params(full.model), _params(resumed.model)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in h]
    assert strip(full.history) == strip(resumed.history)
    # optimizer moments too
    sa, sb = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for i in sa:
        assert torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"])
    # metrics on disk hold every epoch once
    rows = load_run(tmp_path / "part").metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_resume_refuses_contradicting_options(tmp_path):
    Trainer.new(tiny_config(train={"epochs": 1}), tmp_path / "run").fit()
    other = tiny_config(model={"latent_dim": 7})
    with pytest.raises(ConfigError, match=r"model.latent_dim: run has 3, asked 7"):
        Trainer.resume(tmp_path / "run", overrides=other, given=["model.latent_dim"])
    # via the command line: exit 2, message, run untouched
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    assert main(["train", "--resume", str(tmp_path / "run"), "--latent-dim", "7"]) == 2
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 2
    assert "not an aevb run folder" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "missing")]) == 2


def test_an_existing_run_is_not_overwritten_unless_asked(tmp_path, capsys):
    out = tmp_path / "run"
    Trainer.new(tiny_config(train={"epochs": 1}), out).fit()
    ckpt = (out / "checkpoints" / "last.pt").read_bytes()
    args = ["train", "--out", str(out), "--epochs", "1", "--latent-dim", "2", "--hidden", "16",
            "--no-progress", "--no-tensorboard"]
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "checkpoints" / "last.pt").read_bytes() == ckpt
    assert main(args + ["--overwrite"]) == 0
    assert load_run(out).config.model.latent_dim == 2
    assert "(negative ELBO) after 1 epoch; run folder" in capsys.readouterr().out  # one epoch, not "1 epochs"


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    class Poison(Callback):
        def on_epoch_end(self, trainer, record):
            if trainer.epoch == 1:
                with torch.no_grad():
                    trainer.model.decoder.net[-1].bias.fill_(float("nan"))

    trainer = Trainer.new(tiny_config(train={"epochs": 3}), tmp_path / "run", callbacks=[Poison()])
    with pytest.raises(TrainingDiverged, match="last good checkpoint \\(epoch 1\\)"):
        trainer.fit()
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"
    assert len(load_run(tmp_path / "run").metrics()) == 1


def test_bernoulli_refuses_data_outside_unit_interval_and_writes_nothing(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32) * 3
    np.save(tmp_path / "real.npy", x)
    out = tmp_path / "run"
    code = main(["train", "--dataset", f"array:{tmp_path / 'real.npy'}", "--likelihood", "bernoulli",
                 "--out", str(out), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "[0, 1]" in err and "gaussian" in err
    assert not out.exists()
    # the automatic choice for real-valued data is the gaussian likelihood, and it trains
    assert main(["train", "--dataset", f"array:{tmp_path / 'real.npy'}", "--out", str(out), "--epochs", "2",
                 "--hidden", "8", "--latent-dim", "2", "--no-progress", "--no-tensorboard"]) == 0
    assert load_run(out).config.model.likelihood == "gaussian"


def test_unknown_dataset_and_option_fail_clearly(tmp_path, capsys):
    assert main(["train", "--dataset", "imagenet", "--out", str(tmp_path / "r")]) == 2
    assert "digits" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["train", "--no-such-option"])
    assert e.value.code == 2
    assert not (tmp_path / "r").exists()


def test_config_file_preset_and_command_line_precedence(tmp_path):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("preset: pytorch-example\ndata:\n  dataset: digits\nmodel:\n  latent_dim: 5\n"
                        "train:\n  epochs: 1\n  progress: false\n  tensorboard: false\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg_file), "--latent-dim", "6", "--out", str(out)]) == 0
    cfg = load_run(out).config
    assert cfg.preset == "pytorch-example"
    assert cfg.model.encoder_hidden == [400]  # from the preset
    assert cfg.model.latent_dim == 6  # the command line beats the file
    assert cfg.train.epochs == 1  # the file beats the preset
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": {"latent_size": 3}}')
    with pytest.raises(ConfigError, match="unknown option model.latent_size"):
        from aevb.config import RunConfig, merge, load_config_file
        merge(RunConfig(), load_config_file(bad))


def test_python_api_trains_and_loads_a_run(tmp_path):
    run = train(tiny_config(train={"epochs": 1}), tmp_path / "run")
    model = run.load_model()
    assert isinstance(model, VAE) and not model.training
    data = run.load_data()
    x = data.test.materialize()[:5]
    from aevb.bounds import dataset_bound

    expected = run.metrics()[-1][M.TEST_BOUND]  # the last epoch's test bound, computed again from the checkpoint
    t = run.config.train
    got = dataset_bound(model, data.test, t.eval_batch_size, data.dynamic_binarization, seed=t.seed + 1)["bound"]
    assert math.isfinite(expected) and got == pytest.approx(expected, rel=1e-9)
    assert model.reconstruct(x).shape == x.shape
    for name in ("config.json", "metrics.csv", "metrics.jsonl", "run.json",
                 "images/reconstructions_epoch001.png", "images/samples_epoch001.png"):
        assert (tmp_path / "run" / name).is_file(), name


def test_checkpoints_load_without_executing_code(tmp_path):
    path = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (exec, ("import os; os.environ['AEVB_PWNED'] = '1'",))

    torch.save({"format": "aevb-checkpoint", "x": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    import os
    assert "AEVB_PWNED" not in os.environ


def test_truncated_checkpoint_is_reported(tmp_path, capsys):
    out = tmp_path / "run"
    Trainer.new(tiny_config(train={"epochs": 1}), out).fit()
    ckpt = out / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated, corrupted"):
        load_run(out).load_model()
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 2
    assert "truncated" in capsys.readouterr().err


def test_cli_sample_and_reconstruct_write_grids(tmp_path):
    out = tmp_path / "run"
    Trainer.new(tiny_config(train={"epochs": 1}), out).fit()
    from PIL import Image

    assert main(["sample", str(out), "-n", "16", "--out", str(tmp_path / "s.png")]) == 0
    im = Image.open(tmp_path / "s.png")
    assert im.size[0] == im.size[1] > 8 * 4  # 4x4 tiles of 8x8, enlarged
    assert main(["reconstruct", str(out), "-n", "8", "--out", str(tmp_path / "r.png")]) == 0
    a = np.asarray(Image.open(tmp_path / "r.png"))
    assert a.shape[0] < a.shape[1]  # two rows of eight
    assert main(["sample", str(tmp_path), "-n", "4"]) == 2


def test_a_mean_activation_waits_for_the_likelihood_the_data_choose():
    """--mean-activation sigmoid with the likelihood left to the data is checked once the data
    chose it: accepted for real values (gaussian), refused for values in [0, 1] (bernoulli)."""
    from aevb.config import RunConfig, merge, resolve, validate
    from aevb.errors import ConfigError

    cfg = merge(RunConfig(), {"model": {"mean_activation": "sigmoid"}})
    validate(cfg)
    assert resolve(cfg, "real", "array:x.npy", (1, 1, 5)).model.likelihood == "gaussian"
    with pytest.raises(ConfigError, match="mean activation applies to gaussian likelihoods"):
        resolve(cfg, "unit", "digits", (1, 8, 8))


def test_every_seed_has_one_range(tmp_path):
    from aevb.commands.common import check_seed, check_threads
    from aevb.config import check_value
    from aevb.config.ranges import SEED_MAX

    assert SEED_MAX == 2 ** 32 - 1  # NumPy's RandomState, which splits the data, takes no more
    for key in ("train.seed", "data.seed"):
        assert check_value(key, SEED_MAX) == SEED_MAX
        with pytest.raises(ConfigError, match=f"must be an integer in 0..{SEED_MAX}"):
            check_value(key, SEED_MAX + 1)
    check_seed(SEED_MAX)
    with pytest.raises(ConfigError, match=rf"^--seed must be in 0..{SEED_MAX}; got {SEED_MAX + 1}$"):
        check_seed(SEED_MAX + 1)
    with pytest.raises(ConfigError, match=r"^--threads must be in 1..4096; got 4097$"):
        check_threads(4097)


class ThreadsSeen(Callback):
    def on_train_start(self, trainer):
        self.seen = torch.get_num_threads()


def test_threads_are_chosen_for_the_work_and_given_back(tmp_path, monkeypatch):
    """One thread for a step below SMALL_WORK, PyTorch's choice above it, train.threads when set;
    fit leaves the process's count as it was."""
    from aevb import threads

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(10, 30), torch.nn.Tanh(), torch.nn.Linear(30, 5))
    assert threads.linear_flops(mlp, 7) == 2 * (10 * 30 + 30 * 5) * 7
    assert threads.linear_flops(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Linear(2, 2)), 1) == math.inf
    assert threads.count_for(3, 1.0) == 3 and threads.count_for(None, threads.SMALL_WORK - 1) == 1
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        # large work: PyTorch's choice on an idle machine, the cores other work leaves free on a busy one
        monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
        for busy, want in ((0.1, None), (0.4, None), (0.6, 1), (1.6, 1), (3.0, 1)):
            monkeypatch.setattr(threads, "busy_cores", lambda seconds=0.1, b=busy: b)
            assert threads.count_for(None, threads.SMALL_WORK) == want, busy
        monkeypatch.setattr(threads, "busy_cores", lambda seconds=0.1: None)  # not Linux: PyTorch's choice
        assert threads.count_for(None, threads.SMALL_WORK) is None
        with threads.using(None, 1.0) as n:
            assert n == 1 == torch.get_num_threads()
        assert torch.get_num_threads() == 2
        for train_threads, want in ((None, 1), (3, 3)):  # the tiny model's step is small work
            seen = ThreadsSeen()
            Trainer.new(tiny_config(train={"threads": train_threads, "epochs": 1}), tmp_path / f"run{want}",
                        callbacks=[seen]).fit()
            assert seen.seen == want and torch.get_num_threads() == 2
        # a command sets its threads for its own work and gives the process's count back
        assert main(["sample", str(tmp_path / "run1"), "--out", str(tmp_path / "s.png"), "--threads", "3"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
