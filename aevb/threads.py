"""CPU threads for PyTorch, chosen for the work: the one place that sets them.

PyTorch shares each operation among its intra-op threads. The operations of a small network take
microseconds, less than handing them out to the threads and waiting for them, so where one step's
arithmetic is small one thread is faster: on an idle machine, and far more on a busy one, where a
thread that waits for a busy core stalls every operation (benchmarks/RESULTS.md, "Threads").
``train.threads`` and the commands' ``--threads`` fix the count; without them aevb takes one
thread for work below SMALL_WORK, and otherwise PyTorch's own choice, or fewer where other work
keeps cores busy when it starts (a short look at the machine's CPU time, on Linux). On the 2-core
machine of the measurements the count did not change a number: runs on one and on two threads
gave the same metrics to the last digit.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Iterator, Optional

import torch
from torch import nn

# Floating-point operations of one step (a training step's forward pass, or one evaluation
# batch) below which one thread is used (measured on a 2-core EPYC, benchmarks/bench_threads.py:
# the embedded digits' default MLP, 26 MFLOP a step, ran as fast on one thread as on two on the
# idle machine and 1.4x faster beside other work; MNIST's MLPs, 167 and 247 MFLOP, 7-15 % faster
# on two threads when idle).
SMALL_WORK = 50e6


def linear_flops(model: nn.Module, rows: int) -> float:
    """Multiply-adds x 2 of the model's fully connected layers for ``rows`` datapoints: the
    arithmetic of one forward pass of an MLP VAE. A convolutional layer reuses each weight at every
    position, so a model with one counts as large work (inf)."""
    flops = 0.0
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return math.inf
        if isinstance(m, nn.Linear):
            flops += 2.0 * m.in_features * m.out_features
    return flops * int(rows)


def _cpu_times():
    """(busy, total) jiffies of all CPUs so far (Linux), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and waiting for I/O
    return sum(fields) - idle, sum(fields)


def busy_cores(seconds: float = 0.1) -> Optional[float]:
    """Cores kept busy by other work: the busy share of CPU time over the next ``seconds`` (this
    process sleeps meanwhile), at most the one-minute load average, so that neither a blip (the
    kernel writing out the files just written) nor work that has just ended counts; None where the
    machine does not say (not Linux)."""
    before = _cpu_times()
    if before is None:
        return None
    time.sleep(seconds)
    after = _cpu_times()
    if after is None or after[1] <= before[1]:
        return None
    now = (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)
    try:
        return min(now, os.getloadavg()[0])
    except OSError:
        return now


def count_for(threads: Optional[int], flops: float = math.inf) -> Optional[int]:
    """The thread count for work of ``flops`` per step: ``threads`` when given, one for small work;
    otherwise None (PyTorch's choice), or the cores other work leaves free when fewer."""
    if threads:
        return int(threads)
    if flops < SMALL_WORK:
        return 1
    busy = busy_cores()
    if busy is None:
        return None
    free = max(1, int((os.cpu_count() or 1) - busy + 0.5))
    return free if free < torch.get_num_threads() else None


def set_threads(threads: Optional[int], flops: float = math.inf) -> int:
    """Set this process's threads for work of ``flops`` per step (see :func:`count_for`); returns
    the count in effect. For a command, which is a process of its own."""
    n = count_for(threads, flops)
    if n is not None and n != torch.get_num_threads():
        torch.set_num_threads(n)
    return torch.get_num_threads()


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """The process's thread count as it was before the block, whatever the block sets."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def using(threads: Optional[int], flops: float = math.inf) -> Iterator[int]:
    """Within the block, the threads :func:`set_threads` chooses; the process's count as it was
    is restored after it (a library call leaves the caller's setting alone)."""
    with kept():
        yield set_threads(threads, flops)
