"""Early stopping, the best checkpoint, --checkpoint best|last, and inference that loads only the
model's weights."""
import json
import shutil

import pytest
import torch

from aevb import load_run
from aevb.bounds import dataset_bound
from aevb.cli import main
from aevb.errors import RunError
from aevb.io import tensor_bytes
from aevb.training import Callback, Trainer

from conftest import tiny_config
from aevb import metrics as M

PATIENCE = 2
EPOCHS = 40


def stopping_config(**train):
    """Digits with 200 validation points and a learning rate that makes the validation bound level
    off within a few epochs, so that an early stop with patience 2 ends the run well before 40."""
    return tiny_config(data={"validation": 200}, model={"latent_dim": 2, "encoder_hidden": [16]},
                       optim={"lr": 0.03}, train={"epochs": EPOCHS, "early_stop": PATIENCE, **train})


def predicted_stop(history, patience):
    """(stop epoch or None, best epoch) read from the validation bounds alone."""
    best, best_epoch = None, None
    for r in history:
        if best is None or r[M.VALID_BOUND] > best:
            best, best_epoch = r[M.VALID_BOUND], r["epoch"]
        if r["epoch"] - best_epoch >= patience:
            return r["epoch"], best_epoch
    return None, best_epoch


def strip_times(history):
    return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in history]


def model_of(path):
    return torch.load(path, weights_only=True)["model"]


def same_tensors(a, b):
    assert a.keys() == b.keys()
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, one_thread):
    """A run that stopped early: (run folder, its history)."""
    out = tmp_path_factory.mktemp("early") / "run"
    trainer = Trainer.new(stopping_config(), out)
    history = trainer.fit()
    return out, history


@pytest.fixture(scope="module")
def exact(tmp_path_factory, stopped):
    """The same settings trained for exactly the best epoch's number of epochs, no early stop."""
    _, history = stopped
    best = history[-1][M.BEST_EPOCH]
    out = tmp_path_factory.mktemp("exact") / "run"
    Trainer.new(stopping_config(epochs=best, early_stop=None), out).fit()
    return out, best


def test_the_run_stops_where_its_validation_bounds_say(stopped):
    out, history = stopped
    stop, best = predicted_stop(history, PATIENCE)
    assert stop is not None and stop == len(history) < EPOCHS
    assert [r[M.BEST_EPOCH] for r in history] == [predicted_stop(history[:i], 10 ** 9)[1]
                                                  for i in range(1, len(history) + 1)]
    assert history[-1][M.STOPPED_EARLY] is True
    assert not any(M.STOPPED_EARLY in r for r in history[:-1])
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished" and info[M.STOPPED_EARLY] is True
    assert info["epoch"] == stop and info[M.BEST_EPOCH] == best
    assert info[M.BEST_VALID_BOUND] == history[best - 1][M.VALID_BOUND]
    assert [r["epoch"] for r in load_run(out).metrics()] == list(range(1, stop + 1))


def test_best_checkpoint_holds_the_best_epochs_model(stopped, exact):
    out, history = stopped
    exact_out, best = exact
    assert best < len(history)  # the last epoch is not the best: the two checkpoints differ
    best_pt = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert best_pt["epoch"] == best and best_pt["checkpoint"] == "best"
    assert "optimizer" not in best_pt and "history" not in best_pt
    assert same_tensors(best_pt["model"], model_of(exact_out / "checkpoints" / "last.pt"))
    assert not same_tensors(best_pt["model"], model_of(out / "checkpoints" / "last.pt"))
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert (last[M.BEST_EPOCH], last[M.BEST_VALID_BOUND]) == (best, history[best - 1][M.VALID_BOUND])
    # the best model gives the best epoch's validation bound (the training loop's own computation)
    run = load_run(out)
    t = run.config.train
    valid = run.load_data(progress=False).split("valid")
    got = dataset_bound(run.load_model(checkpoint="best"), valid, t.eval_batch_size, seed=t.seed + 1)
    assert got["bound"] == pytest.approx(history[best - 1][M.VALID_BOUND], abs=1e-6)


class InterruptAt(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, trainer, record):
        if trainer.epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("when", ["epoch 2", "after an epoch that did not improve"])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, stopped, one_thread, when):
    full, history = stopped
    at = 2
    if when != "epoch 2":  # the resumed run must know the best epoch from last.pt, not from its first epoch
        at = next(r["epoch"] for r in history if r[M.BEST_EPOCH] < r["epoch"])
        assert at < len(history), "no epoch without improvement before the stop: choose other settings"
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        Trainer.new(stopping_config(), part, callbacks=[InterruptAt(at)]).fit()
    assert json.loads((part / "run.json").read_text())["status"] == "interrupted"
    resumed = Trainer.resume(part)
    assert resumed.epoch == at
    resumed.fit()  # the early stop triggers after the resume
    assert strip_times(load_run(part).metrics()) == strip_times(history)
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)
    assert same_tensors(a["model"], b["model"])
    for i, s in a["optimizer"]["state"].items():
        assert torch.equal(s["exp_avg"], b["optimizer"]["state"][i]["exp_avg"])
        assert torch.equal(s["exp_avg_sq"], b["optimizer"]["state"][i]["exp_avg_sq"])
    assert (a["epoch"], a["step"], a[M.BEST_EPOCH], a[M.BEST_VALID_BOUND]) == \
           (b["epoch"], b["step"], b[M.BEST_EPOCH], b[M.BEST_VALID_BOUND])
    # best.pt the same entry for entry (each entry's digest), but for the id of the run that wrote it
    proofs = [dict(torch.load(r / "checkpoints" / "best.pt", weights_only=True)["digest"]["entries"]) for r in (full, part)]
    assert proofs[0].pop("run_id") != proofs[1].pop("run_id")
    assert proofs[0] == proofs[1]
    marker = {k: v for k, v in json.loads((part / "run.json").read_text()).items() if k != "updated"}
    assert marker["status"] == "finished" and marker[M.STOPPED_EARLY] is True and marker["epoch"] == len(history)


def test_a_run_interrupted_at_its_stop_is_finished_by_resume_without_training(tmp_path, stopped, one_thread):
    _, history = stopped
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):  # after the stop epoch's checkpoint, before the status
        Trainer.new(stopping_config(), part, callbacks=[InterruptAt(len(history))]).fit()
    before = (part / "checkpoints" / "last.pt").read_bytes()
    resumed = Trainer.resume(part)
    assert resumed.stopped_early and resumed.unfinished
    resumed.fit()
    assert (part / "checkpoints" / "last.pt").read_bytes() == before
    info = json.loads((part / "run.json").read_text())
    assert info["status"] == "finished" and info[M.STOPPED_EARLY] is True and info["epoch"] == len(history)


def test_a_stopped_run_stays_stopped_unless_the_patience_grows(tmp_path, stopped, capsys, one_thread):
    src, history = stopped
    run = tmp_path / "run"
    shutil.copytree(src, run)
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    # more epochs alone: the validation bound has still not improved for PATIENCE epochs
    assert main(["train", "--resume", str(run), "--epochs", str(EPOCHS + 10)]) == 0
    err = capsys.readouterr().err
    assert "stopped early" in err and "nothing was changed" in err and "larger --early-stop" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files
    # a larger patience continues, to the numbers of a run that had that patience from the start
    patience = PATIENCE + 3
    assert main(["train", "--resume", str(run), "--early-stop", str(patience), "--no-progress"]) == 0
    scratch = Trainer.new(stopping_config(early_stop=patience), tmp_path / "scratch")
    scratch.fit()
    assert strip_times(load_run(run).metrics()) == strip_times(scratch.history)
    stop, best = predicted_stop(scratch.history, patience)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["epoch"] == len(scratch.history)
    assert info[M.STOPPED_EARLY] is (stop is not None) and info[M.BEST_EPOCH] == best
    assert json.loads((run / "config.json").read_text())["train"]["early_stop"] == patience


def test_evaluate_best_reports_the_best_epoch(tmp_path, stopped, exact, capsys):
    out, history = stopped
    exact_out, best = exact
    assert main(["evaluate", str(out), "--checkpoint", "best", "--split", "valid", "--no-progress"]) == 0
    assert "best checkpoint, epoch" in capsys.readouterr().out
    got = json.loads((out / "evaluation-best-valid.json").read_text())
    assert (got["checkpoint"], got["epoch"]) == ("best", best)
    assert main(["evaluate", str(exact_out), "--split", "valid", "--no-progress", "--out", str(tmp_path / "e.json")]) == 0
    same = json.loads((tmp_path / "e.json").read_text())
    assert (same["checkpoint"], same["epoch"]) == ("last", best)
    assert got["elbo"] == same["elbo"]  # the best epoch's model, value for value
    assert main(["evaluate", str(out), "--split", "valid", "--no-progress", "--out", str(tmp_path / "l.json")]) == 0
    last = json.loads((tmp_path / "l.json").read_text())
    assert (last["checkpoint"], last["epoch"]) == ("last", len(history))


def test_inference_reads_the_model_only_and_memory_mapped(stopped, monkeypatch, tmp_path):
    out, _ = stopped
    run = load_run(out)
    full = run.checkpoint()
    state = run.checkpoint(model_only=True)
    assert "optimizer" in full and "optimizer" not in state and "rng" not in state and "history" not in state
    model_bytes = sum(v.numel() * v.element_size() for v in run.load_model().state_dict().values())
    assert tensor_bytes(state) == model_bytes < tensor_bytes(full) / 2
    calls = []
    load = torch.load

    def spy(*args, **kw):
        calls.append(kw)
        return load(*args, **kw)

    monkeypatch.setattr(torch, "load", spy)
    for argv in (["sample", str(out), "-n", "4", "--out", str(tmp_path / "s.png"), "--checkpoint", "best"],
                 ["evaluate", str(out), "--no-progress", "--out", str(tmp_path / "e.json")],
                 ["export", str(out), "--format", "safetensors", "--out", str(tmp_path / "x")]):
        calls.clear()
        assert main(argv) == 0
        assert calls and all(c.get("mmap") is True and c.get("weights_only") is True for c in calls), (argv, calls)


def cli(argv):
    """The exit status of `aevb ARGV` (argparse's own errors exit through SystemExit)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def one_line_error(capsys, command):
    err = capsys.readouterr().err
    assert err.startswith(f"aevb {command}: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("value,says", [("0", "out of range"), ("-3", "out of range"), ("2.5", "wrong type"),
                                        ("two", "not a number")])
def test_bad_early_stop_values_are_refused(tmp_path, capsys, value, says):
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--validation", "100", "--early-stop", value, "--epochs", "2",
            "--hidden", "16", "--latent-dim", "2", "--no-progress", "--no-tensorboard"]
    assert cli(args) == 2
    err = one_line_error(capsys, "train")
    assert says in err and value in err
    assert not out.exists()


def test_early_stop_without_a_validation_split_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--early-stop", "3", "--no-progress"]) == 2
    err = one_line_error(capsys, "train")
    assert "train.early_stop = 3" in err and "data.validation" in err and "--validation" in err
    assert not out.exists()


@pytest.mark.parametrize("name,text,says", [
    ("c.yaml", "train:\n  early_stop: 0\ndata:\n  validation: 100\n", "out of range"),
    ("c.yaml", "train:\n  early_stop: 2.5\ndata:\n  validation: 100\n", "wrong type"),
    ("c.json", '{"train": {"early_stop": -1}, "data": {"validation": 100}}', "out of range"),
    ("c.json", '{"train": {"early_stop": 3}}', "validation split"),
])
def test_bad_early_stop_in_a_config_file_is_refused(tmp_path, capsys, name, text, says):
    cfg, out = tmp_path / name, tmp_path / "run"
    cfg.write_text(text)
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 2
    err = one_line_error(capsys, "train")
    assert says in err and "train.early_stop" in err and str(cfg) in err
    assert not out.exists()


@pytest.fixture(scope="module")
def no_validation(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("plain") / "run"
    Trainer.new(tiny_config(train={"epochs": 1}, model={"latent_dim": 2, "encoder_hidden": [16]}), out).fit()
    return out


def test_resume_with_early_stop_needs_the_runs_validation_split(tmp_path, no_validation, capsys):
    run = tmp_path / "run"
    shutil.copytree(no_validation, run)
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["train", "--resume", str(run), "--early-stop", "2", "--epochs", "3"]) == 2
    assert "holds out no validation split" in one_line_error(capsys, "train")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files


def commands(run, tmp_path):
    """Every command that takes --checkpoint, with outputs under tmp_path/outputs."""
    o, r = tmp_path / "outputs", str(run)
    codes = tmp_path / "codes.npy"
    import numpy as np

    np.save(codes, np.zeros((2, 2), dtype=np.float32))
    return [["evaluate", r, "--no-progress", "--out", str(o / "e.json")],
            ["sample", r, "--out", str(o / "s.png")],
            ["reconstruct", r, "--out", str(o / "r.png")],
            ["plot", r, "samples", "--out", str(o / "figs")],
            ["explore", r, "--out", str(o / "x.html")],
            ["report", r, "--out", str(o / "report.html")],
            ["export", r, "--format", "safetensors", "--out", str(o / "export")],
            ["encode", r, "--data", "digits:test", "--out", str(o / "c.npz")],
            ["score", r, "--data", "digits:test", "--k", "1", "--out", str(o / "s.csv")],
            ["decode", r, "--z", str(codes), "--out", str(o / "decoded")]]


def test_checkpoint_best_without_a_validation_split_is_refused_everywhere(tmp_path, no_validation, capsys):
    files = {p: p.read_bytes() for p in no_validation.rglob("*") if p.is_file()}
    for argv in commands(no_validation, tmp_path):
        assert main(argv + ["--checkpoint", "best"]) == 2, argv
        err = one_line_error(capsys, argv[0])
        assert "no best checkpoint" in err and "--validation" in err and "--checkpoint last" in err, err
        assert not (tmp_path / "outputs").exists(), argv
    assert {p: p.read_bytes() for p in no_validation.rglob("*") if p.is_file()} == files
    with pytest.raises(RunError, match="no best checkpoint"):
        load_run(no_validation).load_model(checkpoint="best")


def test_checkpoint_best_whose_file_is_missing_is_refused(tmp_path, stopped, capsys):
    run = tmp_path / "run"
    shutil.copytree(stopped[0], run)
    (run / "checkpoints" / "best.pt").unlink()
    for argv in commands(run, tmp_path)[:3]:
        assert main(argv + ["--checkpoint", "best"]) == 2
        err = one_line_error(capsys, argv[0])
        assert "best.pt" in err and "--checkpoint last" in err
    assert cli(["sample", str(run), "--checkpoint", "newest"]) == 2
    assert "invalid choice" in one_line_error(capsys, "sample")
    assert not (tmp_path / "outputs").exists()
