"""The trainer's extension points: a ready-made model and the callback hooks around the loop."""
import copy
import json
import math

import pytest
import torch

from aevb.config import ConfigError
from aevb.model import VAE
from aevb.training import Callback, Trainer

from conftest import tiny_config
from aevb import metrics as M


def _strip(history):
    return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in history]


def test_a_ready_made_model_is_trained_in_place_of_the_configured_one(tmp_path):
    cfg = tiny_config(train={"epochs": 2, "seed": 3})
    built = Trainer.new(cfg, tmp_path / "built")
    built.fit()
    torch.manual_seed(11)  # an initialisation the trainer would not draw
    model = VAE.from_config(built.cfg.model, built.data.dim, built.data.image_shape)
    twin = copy.deepcopy(model)
    given = Trainer.new(cfg, tmp_path / "given", model=model)
    assert given.model is model
    # its weights are kept (not drawn again), and fit_to_data was applied as the config asks
    assert torch.equal(model.encoder.net[0].weight, twin.encoder.net[0].weight)
    assert torch.equal(model.input_shift, built.model.input_shift) and model.input_shift.abs().sum() > 0
    given.fit()
    again = Trainer.new(cfg, tmp_path / "again", model=twin)
    again.fit()
    # the same ready-made model trains value for value the same; another initialisation, another run
    assert _strip(given.history) == _strip(again.history)
    assert given.history[-1][M.TEST_BOUND] != built.history[-1][M.TEST_BOUND]
    # on resume, the ready-made model gets the checkpoint's state
    fresh = VAE.from_config(built.cfg.model, built.data.dim, built.data.image_shape)
    resumed = Trainer.resume(tmp_path / "given", model=fresh)
    assert resumed.model is fresh and resumed.epoch == 2
    for k, v in given.model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_a_model_that_is_not_a_module_is_refused_before_any_file(tmp_path):
    with pytest.raises(ConfigError, match=r"model= must be a torch.nn.Module .*got dict"):
        Trainer.new(tiny_config(), tmp_path / "run", model={})
    assert not (tmp_path / "run").exists()


class Recorder(Callback):
    """Writes down every hook call."""

    def __init__(self):
        self.calls, self.steps, self.paths = [], [], []

    def on_train_start(self, trainer):
        self.calls.append(("start", trainer.epoch))

    def on_train_epoch_start(self, trainer):
        self.calls.append(("epoch_start", trainer.epoch))
        self.steps.append([])

    def on_train_batch_end(self, trainer, outputs, batch_idx):
        assert not outputs["loss"].requires_grad and not outputs["bound"].requires_grad
        self.steps[-1].append((batch_idx, float(outputs["loss"]), outputs["batch_size"],
                               float(outputs["bound"].mean()), outputs["skipped"]))

    def on_save_checkpoint(self, trainer, path):
        assert path.is_file()
        self.paths.append(path.relative_to(trainer.run_dir).as_posix())

    def on_train_epoch_end(self, trainer, record):
        assert (trainer.run_dir / "metrics.jsonl").read_text().count("\n") == record["epoch"]
        self.calls.append(("epoch_end", record["epoch"]))

    def on_train_end(self, trainer):
        self.calls.append(("end", trainer.epoch))

    def on_exception(self, trainer, error):
        self.calls.append(("exception", type(error).__name__))


def test_per_step_hooks_see_every_step_and_average_to_the_epochs_loss(tmp_path):
    cb = Recorder()
    trainer = Trainer.new(tiny_config(train={"epochs": 2}, data={"validation": 200}), tmp_path / "run", callbacks=[cb])
    history = trainer.fit()
    n = len(trainer.data.train)
    assert n == 1238  # 1438 digits less 200 held out: 20 batches of 64 (the last one 22)
    per_epoch = math.ceil(n / 64)
    assert [len(s) for s in cb.steps] == [per_epoch, per_epoch] == [20, 20]
    assert [b for b, *_ in cb.steps[0]] == list(range(20)) and sum(s[2] for s in cb.steps[0]) == n
    for steps, r in zip(cb.steps, history):
        # elbo with beta 1: the loss is the batch's mean negative bound; weighted by batch size
        # the steps give the epoch's training bound
        assert sum(loss * size for _, loss, size, _, _ in steps) / n == pytest.approx(-r[M.TRAIN_BOUND], rel=1e-6)
        assert sum(b * size for _, _, size, b, _ in steps) / n == pytest.approx(r[M.TRAIN_BOUND], rel=1e-6)
        assert steps[0][1] == pytest.approx(r[M.TRAIN_LOSS_FIRST], rel=1e-6) and not any(s[4] for s in steps)
    assert cb.calls == [("start", 0), ("epoch_start", 0), ("epoch_end", 1), ("epoch_start", 1), ("epoch_end", 2),
                        ("end", 2)]
    # best.pt whenever the validation bound improved, then last.pt, every epoch
    assert cb.paths[-1] == "checkpoints/last.pt" and cb.paths.count("checkpoints/last.pt") == 2
    assert cb.paths.count("checkpoints/best.pt") == sum(r[M.BEST_EPOCH] == r["epoch"] for r in history) >= 1


class StopAt(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, record):
        if trainer.epoch == self.epoch:
            raise KeyboardInterrupt


def test_a_run_interrupted_and_resumed_with_a_callback_equals_an_uninterrupted_one(tmp_path):
    cfg = tiny_config(train={"epochs": 3})
    full = Recorder()
    Trainer.new(cfg, tmp_path / "full", callbacks=[full]).fit()
    part = Recorder()
    with pytest.raises(KeyboardInterrupt):
        Trainer.new(cfg, tmp_path / "part", callbacks=[part, StopAt(2)]).fit()
    assert part.calls[-1] == ("exception", "KeyboardInterrupt") and ("end", 2) not in part.calls
    rest = Recorder()
    resumed = Trainer.resume(tmp_path / "part", callbacks=[rest])
    resumed.fit()
    assert rest.calls[0] == ("start", 2) and len(rest.steps) == 1
    assert part.steps + rest.steps == full.steps  # every step's loss, value for value
    assert _strip(resumed.history) == _strip(Trainer.resume(tmp_path / "full").history)


def test_the_older_hook_name_is_still_called(tmp_path):
    seen = []

    class Old(Callback):
        def on_epoch_end(self, trainer, record):
            seen.append(record["epoch"])

    Trainer.new(tiny_config(), tmp_path / "run", callbacks=[Old()]).fit()
    assert seen == [1, 2]


def test_the_report_is_written_by_the_library_unless_turned_off(tmp_path, capsys):
    from aevb.cli import main

    Trainer.new(tiny_config(train={"epochs": 1, "report": True}), tmp_path / "with").fit()
    Trainer.new(tiny_config(train={"epochs": 1, "report": False}), tmp_path / "without").fit()
    assert (tmp_path / "with" / "report.html").is_file() and (tmp_path / "with" / "figures" / "curves.png").is_file()
    assert (tmp_path / "with" / "latents" / "epoch001.npy").is_file()
    assert not (tmp_path / "without" / "report.html").exists() and not (tmp_path / "without" / "figures").exists()
    assert not (tmp_path / "without" / "latents").exists()
    assert main(["train", "--out", str(tmp_path / "cli"), "--epochs", "1", "--hidden", "16", "--no-progress",
                 "--no-tensorboard", "--no-report"]) == 0
    assert not (tmp_path / "cli" / "report.html").exists()
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["train"]["report"] is False


def test_limit_batches_trains_and_evaluates_only_the_first_batches_and_says_so(tmp_path, capsys):
    from aevb.bounds import dataset_bound
    from aevb.cli import main

    cfg = tiny_config(train={"epochs": 3, M.LIMIT_BATCHES: 2, "eval_batch_size": 50, "report": True})
    cb = Recorder()
    trainer = Trainer.new(cfg, tmp_path / "run", callbacks=[cb])
    history = trainer.fit()
    assert trainer.step == 2 * 3 and [len(s) for s in cb.steps] == [2, 2, 2]
    assert [r["step"] for r in history] == [2, 4, 6] and all(r[M.LIMIT_BATCHES] == 2 for r in history)
    # the epoch's bound is over the first 2 x 64 shuffled training points, the test bound over the
    # first 2 x 50 test points
    assert sum(s[1] * s[2] for s in cb.steps[-1]) / 128 == pytest.approx(-history[-1][M.TRAIN_BOUND], rel=1e-6)
    head = dataset_bound(trainer.model, trainer.splits["test"].head(100), 50, seed=cfg.train.seed + 1)
    assert head["bound"] == pytest.approx(history[-1][M.TEST_BOUND], rel=1e-9)
    assert json.loads((tmp_path / "run" / "run.json").read_text())[M.LIMIT_BATCHES] == 2
    assert "3 of 3 epochs trained only their first 2 batches" in (tmp_path / "run" / "report.html").read_text()
    # the command line says it in every epoch line and at the end
    assert main(["train", "--out", str(tmp_path / "cli"), "--epochs", "2", "--hidden", "16", "--no-tensorboard",
                 "--no-report", "--limit-batches", "3"]) == 0
    out = capsys.readouterr()
    assert out.err.count("[only the first 3 batches: --limit-batches]") == 2
    assert "each epoch trained only its first 3 batches" in out.out
    rows = [json.loads(line) for line in (tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]
    assert main(["train", "--out", str(tmp_path / "bad"), "--limit-batches", "0"]) == 2
    assert "limit-batches" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_resume_from_python_applies_every_allowed_change_and_refuses_the_others(tmp_path):
    from aevb.runs import load_run
    from aevb.training import resume

    cfg = tiny_config(train={"epochs": 3})
    Trainer.new(cfg, tmp_path / "full").fit()
    Trainer.new(tiny_config(train={"epochs": 1}), tmp_path / "part").fit()
    last = tmp_path / "part" / "checkpoints" / "last.pt"
    before = last.read_bytes()
    with pytest.raises(ConfigError, match=r"^resume\(latent_dim=7\): a resumed run keeps the settings"):
        resume(tmp_path / "part", epochs=3, latent_dim=7)
    with pytest.raises(ConfigError, match=r"^resume\(epoch=3\): there is no such setting; .*early_stop, epochs"):
        resume(tmp_path / "part", epoch=3)
    with pytest.raises(ConfigError, match=r"train.epochs = -2 \(from resume\(epochs=...\)\)"):
        resume(tmp_path / "part", epochs=-2)
    with pytest.raises(ConfigError, match="validation"):  # an early stop needs a validation split
        resume(tmp_path / "part", epochs=3, early_stop=2)
    assert last.read_bytes() == before and load_run(tmp_path / "part").config.train.epochs == 1
    run = resume(tmp_path / "part", epochs=3, images_every=0)
    assert run.config.train.epochs == 3 and run.config.train.images_every == 0
    assert _strip(run.metrics()) == _strip(load_run(tmp_path / "full").metrics())  # value for value
    assert not (tmp_path / "part" / "images" / "samples_epoch003.png").exists()

    # a whole config: what differs from the saved one is the change, and nothing is ignored
    changed = load_run(tmp_path / "part").config
    changed.train.epochs = 4
    trainer = Trainer.resume(tmp_path / "part", overrides=changed)
    assert trainer.cfg.train.epochs == 4
    trainer.close()
    changed.model.latent_dim = 5
    with pytest.raises(ConfigError, match=r"model.latent_dim: run has 3, asked 5"):
        Trainer.resume(tmp_path / "part", overrides=changed)


def test_python_training_writes_the_same_run_folder_as_the_command(tmp_path):
    from aevb.cli import main
    from aevb.runs import load_run
    from aevb.training import train

    assert main(["train", "--out", str(tmp_path / "cli"), "--epochs", "2", "--hidden", "16", "--latent-dim", "2",
                 "--no-progress", "--seed", "4"]) == 0
    train(load_run(tmp_path / "cli").config, tmp_path / "py")

    def files(run):
        return sorted(p.relative_to(run).as_posix() for p in run.rglob("*")
                      if p.is_file() and "tensorboard" not in p.parts)

    assert files(tmp_path / "py") == files(tmp_path / "cli")
    assert "report.html" in files(tmp_path / "py") and "figures/manifold.png" in files(tmp_path / "py")
    assert _strip(load_run(tmp_path / "py").metrics()) == _strip(load_run(tmp_path / "cli").metrics())


class StopAfter(Callback):
    """Counts steps over the whole run (kept in the checkpoints) and stops training at a count."""

    def __init__(self, at):
        self.at, self.count, self.loaded = at, 0, None

    def on_train_batch_end(self, trainer, outputs, batch_idx):
        self.count += 1
        if self.count == self.at:
            trainer.should_stop = True

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.loaded = dict(state)
        self.count = state["count"]


def test_should_stop_ends_the_epoch_after_the_step_and_finishes_the_run(tmp_path):
    from aevb.runs import Run

    trainer = Trainer.new(tiny_config(train={"epochs": 5}), tmp_path / "run", callbacks=[StopAfter(3)])
    n_batches = math.ceil(len(trainer.splits["train"]) / trainer.cfg.train.batch_size)
    assert n_batches > 3  # the stop falls inside the first epoch
    trainer.fit()
    run = Run(tmp_path / "run")
    rows = run.metrics()
    assert run.status == "finished" and len(rows) == 1
    assert rows[0]["step"] == 3 and rows[0][M.STOPPED_AT_BATCH] == 3 and math.isfinite(rows[0][M.TEST_BOUND])
    assert int(run.checkpoint()["step"]) == 3


def test_a_callbacks_state_is_kept_in_the_checkpoint_and_given_back_on_resume(tmp_path):
    first = StopAfter(10 ** 9)
    trainer = Trainer.new(tiny_config(train={"epochs": 1}), tmp_path / "run", callbacks=[first])
    trainer.fit()
    assert trainer.checkpoint_state()["callbacks"] == {"StopAfter": {"count": first.count}}
    again = StopAfter(10 ** 9)
    resumed = Trainer.resume(tmp_path / "run", epochs=2, callbacks=[again])
    assert again.loaded == {"count": first.count}  # before any step of the resumed run
    resumed.fit()
    assert again.count == 2 * first.count == resumed.step
