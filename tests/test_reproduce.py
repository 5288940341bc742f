"""`aevb reproduce`: every experiment runs end to end on its tiny budget with the embedded digits
data (no downloads), writes its CSV and PNG, and a second invocation resumes without retraining."""
import csv

import pytest
import torch

from aevb.cli import main
from aevb.config import RunConfig, validate
from aevb.experiments import EXPERIMENTS, ReproduceError, run_experiment
from aevb.experiments.runner import log_points, paper_configs
from aevb.config import apply_preset
from aevb import metrics as M


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rows_of(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", [e for e in EXPERIMENTS if e != "figure2"])
def test_tiny_budget_runs_end_to_end_and_resumes(tmp_path, name):
    out = tmp_path / name
    first = run_experiment(name, "tiny", out, dataset="digits", verbose=False)
    assert first["csv"].is_file() and first["png"].is_file()
    assert first["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = rows_of(first["csv"])
    assert rows and first["context"].trained and not first["context"].skipped
    second = run_experiment(name, "tiny", out, dataset="digits", verbose=False)
    assert second["context"].trained == [] and second["context"].skipped == first["context"].trained
    assert rows_of(second["csv"]) == rows  # nothing recomputed


def test_cli_figure2_tiny_writes_the_curves_and_resumes(tmp_path, capsys):
    out = tmp_path / "f2"
    args = ["reproduce", "figure2", "--budget", "tiny", "--dataset", "digits", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert "4 sub-runs trained, 0 skipped" in capsys.readouterr().out
    rows = rows_of(out / "figure2.csv")
    assert {r["method"] for r in rows} == {"aevb", "wake-sleep"}
    assert {r["panel"] for r in rows} == {"mnist", "frey"}
    assert all(float(r[M.TRAIN_BOUND]) < 0 for r in rows)  # digits: bounds are log-probabilities
    assert (out / "figure2.png").stat().st_size < 200_000
    assert main(args) == 0
    assert "0 sub-runs trained, 4 skipped" in capsys.readouterr().out


def test_one_writer_per_experiment_folder_and_orphans_are_removed(tmp_path, capsys):
    from aevb.lock import LOCK_NAME
    from helpers import lock_holder

    out = tmp_path / "f2"
    args = ["reproduce", "figure2", "--budget", "tiny", "--dataset", "digits", "--out", str(out), "--quiet"]
    out.mkdir()
    holder = lock_holder(out)  # another writer holds the folder
    try:
        assert main(args) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert f"being written by process {holder.pid}" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written
    (out / LOCK_NAME).unlink()
    orphan = out / "runs" / ".state.pt.abc.tmp"  # a write cut short by kill -9
    orphan.parent.mkdir()
    orphan.write_bytes(b"half")
    assert main(args) == 0
    assert not orphan.exists() and not (out / LOCK_NAME).exists()


def test_an_interrupted_subrun_continues_from_its_last_checkpoint(tmp_path):
    """A sub-run is an aevb run folder: stopped in its third epoch, it continues from the
    checkpoint of the second with the rows it had then, and evaluates only what is left."""
    from aevb.experiments.runner import Context, SubRun, run_subrun
    from aevb.runs import Run

    calls = []

    def evaluate(model, algo):
        calls.append(1)
        if len(calls) == 3 and interrupt:
            raise KeyboardInterrupt
        return {"n": float(len(calls))}

    ctx = Context(tmp_path, "tiny", dataset="digits", verbose=False)
    spec = SubRun("k", "aevb", "mnist", 2, 8, [200, 400, 600], evaluate, n_train=200)  # epochs of 2 steps
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        run_subrun(ctx, spec)
    run = Run(tmp_path / "runs" / "k")
    assert run.status == "interrupted" and [r["epoch"] for r in run.metrics()] == [1, 2]
    calls.clear()
    interrupt = False
    res = run_subrun(ctx, spec)
    assert len(calls) == 1 and [r["samples"] for r in res.rows] == [200, 400, 600]
    assert [r["n"] for r in res.rows] == [1.0, 2.0, 1.0]  # the first two rows are the checkpoint's
    assert Run(tmp_path / "runs" / "k").status == "finished"


@pytest.mark.parametrize("method", ["aevb", "wake-sleep", "mcem"])
def test_a_subrun_resumed_from_an_epoch_equals_an_uninterrupted_one(tmp_path, method):
    """Every method (the loop's gradient step, and wake-sleep and MCEM as training methods with
    their optimisers and chains in the checkpoint) continues from an epoch's checkpoint to the
    numbers and weights of a sub-run never stopped."""
    from aevb.experiments.runner import Context, SubRun, run_subrun

    def evaluate(model, algo):
        with torch.no_grad():
            return {"w": float(sum(p.double().sum() for p in model.parameters()))}

    def stop_at_third(model, algo, calls=[]):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return evaluate(model, algo)

    points = [100, 300, 500, 600]  # 200 training points: epochs of 2 steps, evaluations inside them
    mcem = {"init_burn_in": 1}
    whole = run_subrun(Context(tmp_path / "a", "tiny", dataset="digits", verbose=False),
                       SubRun("k", method, "mnist", 2, 8, points, evaluate, n_train=200, mcem=mcem))
    ctx = Context(tmp_path / "b", "tiny", dataset="digits", verbose=False)
    with pytest.raises(KeyboardInterrupt):
        run_subrun(ctx, SubRun("k", method, "mnist", 2, 8, points, stop_at_third, n_train=200, mcem=mcem))
    torch.manual_seed(12345)  # the resumed sub-run must not depend on the process's own streams
    resumed = run_subrun(ctx, SubRun("k", method, "mnist", 2, 8, points, evaluate, n_train=200, mcem=mcem))
    assert [r["w"] for r in resumed.rows] == [r["w"] for r in whole.rows]
    assert [r["samples"] for r in resumed.rows] == points
    for p, q in zip(resumed.model.parameters(), whole.model.parameters()):
        assert torch.equal(p, q)


def test_a_subrun_of_a_baseline_is_refused_by_aevb_train_resume(tmp_path, capsys):
    from aevb.experiments.runner import Context, SubRun, run_subrun

    import aevb
    from aevb.errors import RunError
    from aevb.experiments.runner import subrun_data

    ctx = Context(tmp_path, "tiny", dataset="digits", verbose=False)
    spec = SubRun("k", "wake-sleep", "mnist", 2, 8, [100], lambda m, a: {}, n_train=200)
    run_subrun(ctx, spec)
    folder = tmp_path / "runs" / "k"
    before = (folder / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(RunError, match="trained by another training method"):
        aevb.resume(folder, data=subrun_data(ctx, spec), epochs=3)  # the gradient step would train it
    assert (folder / "checkpoints" / "last.pt").read_bytes() == before


def test_unknown_names_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ReproduceError):
        run_experiment("figure9", "tiny", tmp_path)
    with pytest.raises(ReproduceError):
        run_experiment("figure2", "huge", tmp_path)
    assert main(["reproduce", "figure2", "--budget", "tiny", "--dataset", "paper", "--mnist-dir",
                 str(tmp_path / "nothing"), "--no-download", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "reproduce: error" in capsys.readouterr().err


def test_paper_presets_and_settings():
    for name, hidden, lik, wd in (("aevb-mnist", 500, "bernoulli", 1 / 60000), ("aevb-frey", 200, "gaussian", 1 / 1769)):
        cfg = apply_preset(RunConfig(), name)
        validate(cfg)
        assert cfg.model.encoder_hidden == [hidden] and cfg.model.activation == "tanh"
        assert cfg.model.likelihood == lik and cfg.model.init_std == 0.01
        assert cfg.optim.optimizer == "adagrad" and cfg.optim.lr in (0.01, 0.02, 0.1)
        assert cfg.optim.weight_decay == pytest.approx(wd) and cfg.train.batch_size == 100
        assert cfg.objective.samples == 1
    assert apply_preset(RunConfig(), "aevb-frey").model.mean_activation == "sigmoid"
    m, o = paper_configs("mnist", 3, 100, 1000)
    assert m.latent_dim == 3 and m.encoder_hidden == [100] and o.weight_decay == pytest.approx(1e-3)
    pts = log_points(1000, 100000, 3)
    assert pts == [1000, 10000, 100000]


def test_a_resumed_subrun_equals_an_uninterrupted_one(tmp_path):
    """A sub-run killed after an evaluation continues from its saved state (model, optimizer and
    every RNG stream) to the very numbers and weights of a sub-run that was never stopped."""
    from aevb.experiments.runner import Context, SubRun, run_subrun

    def evaluate(model, algo):
        with torch.no_grad():
            return {"w": float(sum(p.double().sum() for p in model.parameters()))}

    def stop_at_second(model, algo, calls=[]):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(model, algo)

    whole = run_subrun(Context(tmp_path / "a", "tiny", dataset="digits", verbose=False),
                       SubRun("k", "aevb", "mnist", 2, 8, [100, 200, 300], evaluate))
    ctx = Context(tmp_path / "b", "tiny", dataset="digits", verbose=False)
    with pytest.raises(KeyboardInterrupt):
        run_subrun(ctx, SubRun("k", "aevb", "mnist", 2, 8, [100, 200, 300], stop_at_second))
    torch.manual_seed(12345)  # the resumed sub-run must not depend on the process's own streams
    resumed = run_subrun(ctx, SubRun("k", "aevb", "mnist", 2, 8, [100, 200, 300], evaluate))
    assert [r["w"] for r in resumed.rows] == [r["w"] for r in whole.rows]
    for p, q in zip(resumed.model.parameters(), whole.model.parameters()):
        assert torch.equal(p, q)


def test_a_subrun_folder_of_an_earlier_version_is_trained_again_and_a_foreign_one_refused(tmp_path):
    from aevb.experiments.runner import Context, SubRun, run_subrun
    from aevb.runs import is_run

    old = tmp_path / "runs" / "k"
    old.mkdir(parents=True)
    (old / "state.pt").write_bytes(b"an earlier version's state")
    (old / "rows.csv").write_text("method,samples\n")
    ctx = Context(tmp_path, "tiny", dataset="digits", verbose=False)
    spec = SubRun("k", "aevb", "mnist", 2, 8, [100], lambda m, a: {"n": 1.0}, n_train=200)
    res = run_subrun(ctx, spec)
    assert is_run(old) and not (old / "state.pt").exists() and [r["samples"] for r in res.rows] == [100]
    foreign = tmp_path / "runs" / "j"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ReproduceError, match="is not a sub-run folder"):
        run_subrun(ctx, SubRun("j", "aevb", "mnist", 2, 8, [100], lambda m, a: {}, n_train=200))
    assert (foreign / "notes.txt").read_text() == "mine"
