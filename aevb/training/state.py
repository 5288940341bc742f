"""What a checkpoint holds, the best epoch and early stopping, and how a run continues.

A checkpoint (``RUN/checkpoints/last.pt``, written atomically each epoch) holds the model,
optimizer, schedule, epoch, step, history, the best epoch so far and every RNG state (torch,
CUDA, the shuffle generator, NumPy, Python), so that a resumed run continues exactly, value for
value.

A run with a validation split also keeps ``RUN/checkpoints/best.pt``: the model (no optimizer)
of the epoch with the highest validation bound so far (the earliest of equal ones), rewritten
only when an epoch improves on it. It is written before that epoch's last.pt, so last.pt never
names a best epoch that best.pt does not hold; a run killed between the two repeats the epoch
on resume, exactly, and writes the same best.pt again. With ``train.early_stop`` = P, training
ends after the first epoch E with E - best epoch >= P; the decision depends only on the
history, so a resumed run stops where an uninterrupted one does.
"""
from __future__ import annotations

import contextlib
import json
import random
import sys
from typing import Optional, Sequence

import numpy as np
import torch

from .. import distributed
from ..config import SECTIONS, RunConfig, diff, field_names, merge, validate
from ..config.settings import get_setting, set_setting, source_of
from ..checkpoints import RUN_ID
from ..errors import CheckpointError, ConfigError, RunError
from ..io import CHECKPOINT_KEYS, load_checkpoint
from ..runs import BEST_CHECKPOINT, CHECKPOINT, Run
from ..version import __version__
from .. import metrics as M

# Options that may differ when a run is resumed: they change where or how long, not what.
RESUMABLE_CHANGES = {"train.epochs", "train.early_stop", "train.device", "train.threads", "train.progress",
                     "train.tensorboard", "train.eval_batch_size", "train.images_every", "train.report",
                     "train.limit_batches",
                     "data.data_dir", "data.download", "data.memory_budget", "data.cache_dir"}


RESUME_KEYS = CHECKPOINT_KEYS + ("optimizer", "scheduler", "rng", "history")


def rng_state(shuffle: torch.Generator) -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "shuffle": shuffle.get_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": random.getstate(),
    }


def set_rng_state(state: dict, shuffle: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    shuffle.set_state(state["shuffle"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def seed_noise(seed: int) -> None:
    """Seed the global streams that draw this process's training noise."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def restore_rng(trainer, state: dict) -> None:
    """Every process gets back its own RNG states when the run continues with as many
    processes as it was saved with; otherwise the shuffling stream (shared by all processes)
    is restored and the other processes draw fresh noise, with a warning."""
    saved = int(state.get("world_size", 1))
    rank, world = trainer.dist.rank, trainer.dist.world_size
    if saved == world and rank > 0:
        set_rng_state(state["rng_ranks"][rank], trainer.shuffle)
        return
    set_rng_state(state["rng"], trainer.shuffle)
    if saved != world:
        if rank > 0:
            seed_noise(distributed.rank_seed(trainer.cfg.train.seed + 1_000_003 * trainer.epoch, rank))
        else:
            print(f"aevb train: warning: {trainer.run_dir} was trained with {saved} process(es) and "
                  f"continues with {world}; training goes on correctly (same global batch size), "
                  "but not value for value as a run never stopped", file=sys.stderr, flush=True)


def checkpoint_state(trainer) -> dict:
    """Everything a resume needs. Under torchrun it also holds every process's RNG states
    (``rng_ranks``) and ``world_size``; call it on every rank then (it gathers)."""
    state = {
        **model_state(trainer),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(), "rng": rng_state(trainer.shuffle),
        "history": trainer.history, "skipped_steps": trainer.skipped_steps,
        M.BEST_EPOCH: trainer.best_epoch, M.BEST_VALID_BOUND: trainer.best_bound,
    }
    if trainer.dist.enabled:
        state["world_size"] = trainer.dist.world_size
        state["rng_ranks"] = distributed.all_gather_object(state["rng"])
    return state


def model_state(trainer) -> dict:
    """What every checkpoint holds: the model of the current epoch with what loading it needs,
    and the id of the run (run.json's; a checkpoint of another run is refused on load)."""
    run_id = getattr(getattr(trainer, "lifecycle", None), "run_id", None)
    return {
        "format": "aevb-checkpoint", "version": 1, "aevb_version": __version__,
        "epoch": trainer.epoch, "step": trainer.step,
        "data_dim": trainer.data.dim, "image_shape": list(trainer.data.image_shape),
        "config": json.dumps(trainer.cfg.to_dict()), "model": trainer.model.state_dict(),
        **({RUN_ID: run_id} if run_id else {}),
    }


def best_state(trainer) -> dict:
    """The content of best.pt: the model of the current epoch (no optimizer, schedule, RNG states
    or history) and its validation bound."""
    return {**model_state(trainer), "checkpoint": "best", M.VALID_BOUND: trainer.best_bound}


def best_in(history: Sequence[dict]):
    """(epoch, validation bound) of the best epoch of ``history`` (the earliest of equal bounds),
    or (None, None) without a validation split."""
    best = (None, None)
    for r in history:
        v = r.get(M.VALID_BOUND)
        if v is not None and (best[1] is None or v > best[1]):
            best = (int(r[M.EPOCH]), float(v))
    return best


def restore_best(state: dict, history: Sequence[dict]):
    """(best epoch, best validation bound) of a checkpoint (from its history when it predates them)."""
    if M.BEST_EPOCH in state:
        epoch, bound = state[M.BEST_EPOCH], state[M.BEST_VALID_BOUND]
        return (None if epoch is None else int(epoch)), (None if bound is None else float(bound))
    return best_in(history)


def resume_changes(changes: dict) -> dict:
    """{dotted name: value} of ``resume(**changes)``: each keyword is named like the config field
    that ``--resume`` lets change (``epochs``, ``early_stop``, ``device``, ...); any other name is
    refused, naming the Python argument."""
    by_name = {k.split(".", 1)[1]: k for k in sorted(RESUMABLE_CHANGES)}
    out = {}
    for name, value in changes.items():
        if name not in by_name:
            setting = any(name in field_names(sec) for sec in SECTIONS)
            why = ("a resumed run keeps the settings it was trained with" if setting else "there is no such setting")
            raise ConfigError(f"resume({name}={value!r}): {why}; a resume may change only "
                              f"{', '.join(sorted(by_name))}. Train a new run for other settings")
        out[by_name[name]] = value
    return out


def read_resume(run: Run, overrides: Optional[RunConfig], given: Optional[Sequence[str]], changes: Optional[dict] = None):
    """(config, checkpoint state) of the run to continue, with the allowed changes applied: the
    options in ``overrides`` named in ``given`` (dotted names; None: every option in which
    ``overrides`` differs from the saved config), then ``changes`` ({dotted name: value}, from
    ``resume(**changes)``). A change that ``RESUMABLE_CHANGES`` does not allow raises ConfigError.
    The state is None for a run that stopped before its first checkpoint: it starts again from
    scratch with its saved config."""
    cfg = run.config
    if overrides is not None:
        changed = diff(cfg, overrides)
        asked = changed if given is None else [k for k in changed if k in given]
        clashes = [k for k in asked if k not in RESUMABLE_CHANGES]
        if clashes:
            detail = "; ".join(f"{k}: run has {get_setting(cfg, k)!r}, asked {get_setting(overrides, k)!r}" for k in clashes)
            raise ConfigError(f"--resume {run.path}: options contradict the run's config ({detail}). "
                              "Drop them to continue the run as configured, or start a new run.")
        sources = dict(getattr(cfg, "_sources", {}))
        for k in (changed if given is None else given):
            if k in RESUMABLE_CHANGES:
                set_setting(cfg, k, get_setting(overrides, k))
                sources[k] = source_of(overrides, k)
        cfg._sources = sources
    if changes:
        updates = {}
        for k, v in changes.items():
            sec, name = k.split(".", 1)
            updates.setdefault(sec, {})[name] = v
        cfg = merge(cfg, updates, where=lambda k: f"resume({k.split('.', 1)[1]}=...)")
    if overrides is not None or changes:
        validate(cfg)  # the run's settings with the new ones, e.g. --early-stop needs its validation split
    if not run.checkpoint_path.exists():
        if run.info.get("status") == "finished":
            raise RunError(f"{run.path} says it finished but its checkpoint {CHECKPOINT} is missing; the run "
                           "folder is damaged: restore the checkpoint, or train a new run")
        return cfg, None
    state = load_checkpoint(run.checkpoint_path, required=RESUME_KEYS, run_id=run.run_id)
    best = run.path / BEST_CHECKPOINT
    if best.is_file():  # the run goes on with it: its best epoch must stay usable
        try:
            load_checkpoint(best, model_only=True, run_id=run.run_id, advise=False)
        except CheckpointError as e:
            raise CheckpointError(f"{getattr(e, 'what', e)}; the resumed run would keep a best checkpoint that cannot be "
                                  f"used: restore {best} from a copy, or delete it to continue without it (the next "
                                  "epoch that improves the validation bound writes it again)") from None
    return cfg, state


@contextlib.contextmanager
def checkpoint_errors(run_dir):
    """A checkpoint whose parts do not fit the run's config is a CheckpointError, not a crash."""
    try:
        yield
    except (KeyError, IndexError, RuntimeError, ValueError, TypeError) as e:
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        raise CheckpointError(f"the checkpoint of {run_dir} does not fit its config.json ({type(e).__name__}: "
                              f"{detail}); the run folder is damaged") from None
