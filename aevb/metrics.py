"""The names of a run's metrics, declared once: the columns of RUN/metrics.csv and
RUN/metrics.jsonl (one row per epoch), and the best-epoch fields of run.json and checkpoints.

Every writer and reader (the training loop, its callbacks and loggers, the report, the
experiments) spells them through these constants, so a renamed metric changes in one place.
Bounds and their terms are nats per datapoint, averaged over a split; a loss is the negative
(weighted) bound of a training step.
"""
from __future__ import annotations

from typing import Tuple

# counters of an epoch's row
EPOCH = "epoch"  # epochs completed (1 for the first row)
STEP = "step"  # training steps taken so far, over the whole run

# the training split: the applied steps' bound and its two terms, and the step losses
TRAIN_BOUND = "train_bound"
TRAIN_LOG_PX_GIVEN_Z = "train_log_px_given_z"
TRAIN_KL = "train_kl"
TRAIN_LOSS_FIRST = "train_loss_first"  # the epoch's first step's loss (None: skipped)
TRAIN_LOSS_MAX = "train_loss_max"  # its largest applied step loss
SKIPPED_STEPS = "skipped_steps"  # steps of the epoch left out as non-finite

# the test and validation splits
TEST_BOUND = "test_bound"
TEST_LOG_PX_GIVEN_Z = "test_log_px_given_z"
TEST_KL = "test_kl"
VALID_BOUND = "valid_bound"
VALID_LOG_PX_GIVEN_Z = "valid_log_px_given_z"
VALID_KL = "valid_kl"

# the schedule and times
BETA = "beta"  # the KL weight at the epoch's start (1 for the iwae objective)
LR = "lr"  # the epoch's scheduled learning rate
TRAIN_TIME_S = "train_time_s"
EPOCH_TIME_S = "epoch_time_s"

# marks
BEST_EPOCH = "best_epoch"  # the epoch with the best validation bound so far (rows with a validation split)
STOPPED_EARLY = "stopped_early"  # the row of the epoch the early stop ended the run at (and run.json)
LIMIT_BATCHES = "limit_batches"  # a quick debug run's batches per epoch (rows, run.json)
STOPPED_AT_BATCH = "stopped_at_batch"  # the row of an epoch a callback ended after this many steps
BEST_VALID_BOUND = "best_valid_bound"  # run.json and checkpoints: the best epoch's validation bound

# fields of a row that are counters or marks, not curves (TensorBoard and the loggers skip them)
NOT_CURVES = (EPOCH, STEP, BEST_EPOCH, STOPPED_EARLY, LIMIT_BATCHES, STOPPED_AT_BATCH)


def split_terms(split: str) -> Tuple[str, str, str]:
    """(bound, log p(x|z), KL) metric names of a split: ``train``, ``test`` or ``valid``."""
    return f"{split}_bound", f"{split}_log_px_given_z", f"{split}_kl"
