"""Experiment trackers as callbacks: the calls they make (checked with stand-in modules, so the
code runs everywhere), the real packages in their offline / file-store modes where installed,
and a one-line refusal when a package is missing."""
import json
import sys
import types

import pytest

from aevb.cli import main
from aevb.config import ConfigError
from aevb.training import Callback, Trainer
from aevb.training.loggers import MLflowLogger, WandbLogger

from conftest import tiny_config
from aevb import metrics as M


class Calls(list):
    def __call__(self, name):
        def record(*args, **kwargs):
            self.append((name, args, kwargs))
            return self
        return record


def stand_in_wandb(calls):
    module = types.ModuleType("wandb")
    run = types.SimpleNamespace(log=calls("log"), finish=calls("finish"))

    def init(**kwargs):
        calls.append(("init", (), kwargs))
        return run

    module.init = init
    return module


def stand_in_mlflow(calls):
    module = types.ModuleType("mlflow")
    for name in ("set_tracking_uri", "set_experiment", "start_run", "log_params", "log_metrics", "end_run"):
        setattr(module, name, calls(name))
    return module


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_wandb_logger_logs_the_config_and_every_epoch_at_its_step(tmp_path, monkeypatch):
    calls = Calls()
    monkeypatch.setitem(sys.modules, "wandb", stand_in_wandb(calls))
    cfg = tiny_config(train={"epochs": 2, "report": False})
    Trainer.new(cfg, tmp_path / "run", callbacks=[WandbLogger(project="vae", tags=["t"])]).fit()
    rows = _rows(tmp_path / "run")
    assert [c[0] for c in calls] == ["init", "log", "log", "finish"]
    init = calls[0][2]
    assert init["project"] == "vae" and init["name"] == "run" and init["tags"] == ["t"]
    assert init["config"]["model"]["latent_dim"] == 3 and init["config"]["train"]["epochs"] == 2
    for (_, (metrics,), kw), row in zip(calls[1:3], rows):
        assert kw == {"step": row["step"], "commit": True} and metrics["epoch"] == row["epoch"]
        assert metrics[M.TEST_BOUND] == row[M.TEST_BOUND] and metrics[M.TRAIN_KL] == row[M.TRAIN_KL]
        assert "step" not in metrics and M.BEST_EPOCH not in metrics
    assert calls[3][2] == {"exit_code": 0}


def test_mlflow_logger_logs_params_metrics_and_how_the_run_ended(tmp_path, monkeypatch):
    calls = Calls()
    monkeypatch.setitem(sys.modules, "mlflow", stand_in_mlflow(calls))

    class Stop(MLflowLogger):
        def on_train_epoch_end(self, trainer, record):
            super().on_train_epoch_end(trainer, record)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer.new(tiny_config(train={"report": False}), tmp_path / "run",
                    callbacks=[Stop(tracking_uri="file:/x", experiment="vae")]).fit()
    names = [c[0] for c in calls]
    assert names == ["set_tracking_uri", "set_experiment", "start_run", "log_params", "log_metrics", "end_run"]
    assert calls[0][1] == ("file:/x",) and calls[1][1] == ("vae",) and calls[2][2] == {"run_name": "run"}
    params = calls[3][1][0]
    assert params["model.latent_dim"] == "3" and params["model.encoder_hidden"] == "32"
    assert calls[4][2] == {"step": _rows(tmp_path / "run")[0]["step"]}
    assert calls[4][1][0][M.TEST_BOUND] == _rows(tmp_path / "run")[0][M.TEST_BOUND]
    assert calls[5][2] == {"status": "KILLED"}


def test_a_missing_tracker_package_is_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ConfigError, match=r'^WandbLogger needs the wandb package, .*pip install "aevb\[wandb\]"$'):
        WandbLogger()
    assert main(["train", "--out", str(tmp_path / "run"), "--logger", "wandb"]) == 2
    assert "aevb train: error: WandbLogger needs the wandb package" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_command_line_adds_a_logger(tmp_path, monkeypatch):
    calls = Calls()
    monkeypatch.setitem(sys.modules, "mlflow", stand_in_mlflow(calls))
    assert main(["train", "--out", str(tmp_path / "run"), "--epochs", "2", "--hidden", "16", "--no-progress",
                 "--no-tensorboard", "--no-report", "--logger", "mlflow"]) == 0
    assert [c[0] for c in calls] == ["start_run", "log_params", "log_metrics", "log_metrics", "end_run"]
    assert calls[-1][2] == {"status": "FINISHED"}


def test_real_mlflow_file_store(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # newer MLflow asks for a database otherwise
    uri = (tmp_path / "mlruns").as_uri()
    Trainer.new(tiny_config(train={"report": False}), tmp_path / "run",
                callbacks=[MLflowLogger(tracking_uri=uri, experiment="aevb-test")]).fit()
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("aevb-test")
    (run,) = client.search_runs([exp.experiment_id])
    rows = _rows(tmp_path / "run")
    assert run.info.status == "FINISHED" and run.data.params["model.latent_dim"] == "3"
    history = client.get_metric_history(run.info.run_id, M.TEST_BOUND)
    assert [(m.step, m.value) for m in history] == [(r["step"], pytest.approx(r[M.TEST_BOUND])) for r in rows]


def test_real_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(project="aevb-test")
    seen = {}

    class Keep(Callback):  # the run's summary before it is finished
        def on_train_end(self, trainer):
            seen.update(dict(logger.run.summary))

    Trainer.new(tiny_config(train={"report": False}), tmp_path / "run", callbacks=[Keep(), logger]).fit()
    rows = _rows(tmp_path / "run")
    assert seen[M.TEST_BOUND] == pytest.approx(rows[-1][M.TEST_BOUND]) and seen["epoch"] == 2
    assert list((tmp_path / "wandb").glob("offline-run-*"))
