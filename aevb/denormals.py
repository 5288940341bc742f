"""Denormal numbers flushed to zero in PyTorch's CPU threads: the one place that sets it.

float32 values below 1.18e-38 (its smallest normal number) are "denormal". Training makes them:
Adam's first moment of a weight whose gradient is zero (a unit that stays off, a pixel that is
always 0) shrinks by beta1 = 0.9 each step through that range, and so does sigmoid(l) in the
Bernoulli likelihood's gradient where the decoder is sure of a pixel (l < -87). Many x86 CPUs
(the Intel Xeon of benchmarks/RESULTS.md, "Denormals") compute on them through a slow path: the
matrix products of an MNIST step ran 4.8x slower once they appeared, and a whole float32 epoch of
the pytorch-example preset 1.2x slower. Flushed to zero (the processor's FTZ and DAZ modes), they
count as 0, which changes no value at or above 1.18e-38; TensorFlow and JAX run their CPU
kernels so.

The mode belongs to each thread, and a thread starts with its creator's. PyTorch's OpenMP threads
usually exist before aevb trains, so :func:`flushed` sets every one of them through the OpenMP
runtime PyTorch runs on, and puts the mode back as it was afterwards. Where that runtime cannot
be reached (another threading backend, a platform without /proc/self/maps), only the calling
thread and threads created later flush.
"""
from __future__ import annotations

import contextlib
import ctypes
import threading
from typing import Iterator

import torch

# a float32 denormal: 0 in a thread that flushes them
_DENORMAL = 1e-39

_runtime_lock = threading.Lock()
_runtime = None  # (the ctypes library, its callback type); False: not found; None: not looked for yet


def flushing() -> bool:
    """Whether the calling thread flushes denormal float32 numbers to zero."""
    return bool(torch.tensor([_DENORMAL], dtype=torch.float32).mul_(1.0)[0] == 0)


def _openmp_runtime():
    """PyTorch's OpenMP runtime as loaded in this process (libgomp, libiomp5 or libomp: each
    exports GOMP_parallel), or None. Linux only: found among the process's mapped files."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = False
            try:
                if "parallel backend: OpenMP" in torch.__config__.parallel_info():
                    with open("/proc/self/maps") as f:
                        names = {line.split()[-1] for line in f if line.rstrip().endswith(
                            (".so", ".so.1", ".so.5")) and any(k in line for k in ("libgomp", "libiomp", "libomp"))}
                    for name in sorted(names):
                        lib = ctypes.CDLL(name)
                        if hasattr(lib, "GOMP_parallel"):
                            callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
                            lib.GOMP_parallel.argtypes = [callback, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
                            lib.GOMP_parallel.restype = None
                            _runtime = (lib, callback)
                            break
            except (OSError, AttributeError, RuntimeError):
                _runtime = False
        return _runtime or None


def set_flush(on: bool, threads: int = 0) -> bool:
    """Flush denormals (``on``) or compute with them, in the calling thread and in the first
    ``threads`` (default: PyTorch's count) threads of PyTorch's pool; returns whether the calling
    thread now does as asked (False where the processor has no such mode)."""
    torch.set_flush_denormal(on)
    threads = max(threads, torch.get_num_threads())
    runtime = _openmp_runtime()
    if runtime is not None and threads > 1:
        lib, callback = runtime
        # a parallel region of that many threads: each thread of the pool sets its own mode
        run = callback(lambda _: torch.set_flush_denormal(on))
        lib.GOMP_parallel(run, None, threads, 0)
    return flushing() == on


@contextlib.contextmanager
def flushed() -> Iterator[bool]:
    """Within the block, denormals are flushed to zero in the calling thread and PyTorch's CPU
    threads (see the module's notes); the mode is as it was after it (a calling thread that
    flushed already keeps flushing, and so do the threads). Yields whether they are flushed."""
    if flushing():  # the caller's choice already: reach PyTorch's threads too, and leave it so
        yield set_flush(True)
        return
    threads = torch.get_num_threads()
    try:
        yield set_flush(True)
    finally:  # every thread the block used, should it have changed the count
        set_flush(False, threads)
