"""CPU threads for PyTorch, chosen for the work: the one place that sets them.

PyTorch shares each operation among its intra-op threads. The operations of a small network take
microseconds, less than handing them out to the threads and waiting for them, so where one step's
arithmetic is small one thread is faster: on an idle machine, and far more on a busy one, where a
thread that waits for a busy core stalls every operation (benchmarks/RESULTS.md, "Threads").
``train.threads`` and the commands' ``--threads`` fix the count; without them aevb takes one
thread for work below SMALL_WORK and leaves PyTorch's own choice otherwise.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Optional

import torch
from torch import nn

# Floating-point operations of one step (a training step's forward pass, or one evaluation
# batch) below which one thread is faster than sharing each operation (measured on a 2-core
# EPYC, benchmarks/bench_threads.py: the embedded digits' default MLP, 23 MFLOP a step, ran
# faster on one thread; MNIST's, 200 MFLOP and more, on two).
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


def count_for(threads: Optional[int], flops: float = math.inf) -> Optional[int]:
    """The thread count for work of ``flops`` per step: ``threads`` when given, one for small work,
    None (PyTorch's choice) otherwise."""
    if threads:
        return int(threads)
    return 1 if flops < SMALL_WORK else None


def set_threads(threads: Optional[int], flops: float = math.inf) -> int:
    """Set this process's threads for work of ``flops`` per step (see :func:`count_for`); returns
    the count in effect. For a command, which is a process of its own."""
    n = count_for(threads, flops)
    if n is not None and n != torch.get_num_threads():
        torch.set_num_threads(n)
    return torch.get_num_threads()


@contextlib.contextmanager
def using(threads: Optional[int], flops: float = math.inf) -> Iterator[int]:
    """Within the block, the threads :func:`set_threads` chooses; the process's count as it was
    is restored after it (a library call leaves the caller's setting alone)."""
    before = torch.get_num_threads()
    try:
        yield set_threads(threads, flops)
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
