"""Experiment trackers as callbacks: Weights & Biases and MLflow.

Each logs the run's config as parameters when training starts, every epoch's metrics row
(the numbers of RUN/metrics.jsonl) at that epoch's global step, and ends its tracker run when
training ends or fails. Use them from Python (``train(cfg, out, callbacks=[WandbLogger(project=
"vae")])``) or from the command line (``aevb train --logger wandb``, ``--logger mlflow``; the
trackers' own environment variables such as ``WANDB_PROJECT``, ``WANDB_MODE=offline`` or
``MLFLOW_TRACKING_URI`` configure them there). The packages are optional extras
(``pip install "aevb[wandb]"`` / ``"aevb[mlflow]"``); a logger whose package is missing is
refused with one line before anything is written.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from ..errors import ConfigError
from .. import metrics as M
from .callbacks import Callback, scalars


def flat_config(cfg) -> Dict[str, object]:
    """The config as {dotted name: value}, e.g. ``model.latent_dim``: a tracker's parameters."""
    out = {}
    for section, values in cfg.to_dict().items():
        if isinstance(values, dict):
            out.update({f"{section}.{k}": v for k, v in values.items()})
        else:
            out[section] = values
    return out


def epoch_metrics(record: dict) -> Dict[str, float]:
    """The numbers of an epoch's metrics row a tracker logs: the bounds, their terms, losses, KL
    weight, learning rate and times (as TensorBoard gets them), and the epoch."""
    return {**scalars(record), M.EPOCH: int(record[M.EPOCH])}


class WandbLogger(Callback):
    """Logs to Weights & Biases: ``wandb.init(project=..., name=..., config=<the run's config>,
    **init_args)`` when training starts, ``run.log(metrics, step=<global step>, commit=True)`` per epoch,
    ``run.finish()`` at the end (exit code 1 when training failed). ``name`` defaults to the run
    folder's name. Offline: set ``WANDB_MODE=offline``."""

    extra = "wandb"

    def __init__(self, project: Optional[str] = None, name: Optional[str] = None, **init_args):
        self.wandb = _require("wandb", "WandbLogger", self.extra)
        self.project, self.name, self.init_args = project, name, init_args
        self.run = None

    def on_train_start(self, trainer) -> None:
        self.run = self.wandb.init(project=self.project, name=self.name or trainer.run_dir.name,
                                   config=trainer.cfg.to_dict(), **self.init_args)

    def on_train_epoch_end(self, trainer, record: dict) -> None:
        self.run.log(epoch_metrics(record), step=int(record[M.STEP]), commit=True)  # now, not at the next step

    def on_train_end(self, trainer) -> None:
        self._finish(0)

    def on_exception(self, trainer, error: BaseException) -> None:
        self._finish(1)

    def _finish(self, code: int) -> None:
        if self.run is not None:
            self.run.finish(exit_code=code)
            self.run = None


class MLflowLogger(Callback):
    """Logs to MLflow: the experiment ``experiment`` (created when missing) at ``tracking_uri``
    (default: MLflow's own, ``MLFLOW_TRACKING_URI`` or ./mlruns), one MLflow run per call of
    ``fit``, named after the run folder, the config as parameters (dotted names), each epoch's
    metrics at its global step, and the MLflow run ended FINISHED, FAILED or KILLED."""

    extra = "mlflow"

    def __init__(self, tracking_uri: Optional[str] = None, experiment: Optional[str] = None,
                 run_name: Optional[str] = None):
        self.mlflow = _require("mlflow", "MLflowLogger", self.extra)
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.active = False

    def on_train_start(self, trainer) -> None:
        m = self.mlflow
        if self.tracking_uri:
            m.set_tracking_uri(self.tracking_uri)
        if self.experiment:
            m.set_experiment(self.experiment)
        m.start_run(run_name=self.run_name or trainer.run_dir.name)
        self.active = True
        m.log_params({k: _param(v) for k, v in flat_config(trainer.cfg).items()})

    def on_train_epoch_end(self, trainer, record: dict) -> None:
        self.mlflow.log_metrics(epoch_metrics(record), step=int(record[M.STEP]))

    def on_train_end(self, trainer) -> None:
        self._end("FINISHED")

    def on_exception(self, trainer, error: BaseException) -> None:
        self._end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")

    def _end(self, status: str) -> None:
        if self.active:
            self.mlflow.end_run(status=status)
            self.active = False


# The loggers `aevb train --logger NAME` can add, by name.
LOGGERS = {"wandb": WandbLogger, "mlflow": MLflowLogger}


def build_loggers(names: Optional[Sequence[str]]) -> List[Callback]:
    """The loggers named (``--logger``), each with its tracker's settings from the environment."""
    out = []
    for name in names or ():
        if name not in LOGGERS:
            raise ConfigError(f"--logger {name}: no such logger; choose from {', '.join(sorted(LOGGERS))}")
        out.append(LOGGERS[name]())
    return out


def _param(v) -> str:
    """A parameter value as MLflow stores it: text, lists written out."""
    return " ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def _require(module: str, who: str, extra: str):
    try:
        if module == "wandb":
            import wandb as found
        else:
            import mlflow as found
    except ImportError:
        raise ConfigError(f"{who} needs the {module} package, which is not installed; install it with "
                          f"pip install \"aevb[{extra}]\"") from None
    return found
