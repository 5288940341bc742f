"""Data-parallel training under ``torchrun``: several CPU processes (gloo) or GPUs/machines (nccl).

``torchrun`` sets WORLD_SIZE, RANK and LOCAL_RANK; when WORLD_SIZE > 1, :func:`init` joins the
process group (once) and every helper here acts on it. Without torchrun (or with one process)
nothing is initialised and every helper is the identity, so single-process training is untouched.

The trainer uses these rules: every rank draws the same global permutation and global batch and
takes its slice ``idx[rank::world]``; gradients are summed over ranks (each rank's loss is its
bound sum divided by the global batch size, so the sum is the global-batch mean's gradient);
epoch sums and test bounds are summed over ranks; only rank 0 (``is_main``) writes files.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, List, Optional

import torch


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``enabled`` is False for an ordinary single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistInfo()
_info: Optional[DistInfo] = None


def requested() -> bool:
    """True when launched by torchrun (or similar) with more than one process."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def backend() -> str:
    """gloo for CPU tensors, plus nccl for CUDA tensors when CUDA is there: collectives pick the
    backend by the tensor's device, and object collectives and barriers go through gloo."""
    import torch.distributed as dist

    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def init() -> DistInfo:
    """Join the process group when launched with WORLD_SIZE > 1 (once per process); the info."""
    global _info
    if _info is not None:
        return _info
    if not requested():
        _info = SINGLE
        return _info
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    if not dist.is_initialized():
        dist.init_process_group(backend=backend())
        atexit.register(_shutdown)
    _info = DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, enabled=True)
    return _info


def info() -> DistInfo:
    """The current info without initialising anything (single process until :func:`init`)."""
    return _info if _info is not None else SINGLE


def _shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:
            pass


def finish() -> None:
    """Leave the process group together: a barrier (so no rank tears its connections down while
    another still works, e.g. rank 0 writing the report), then destroy it while the interpreter is
    fully alive. Tearing gloo down only at interpreter exit, with the other rank already gone,
    can abort the process ("terminate called without an active exception")."""
    if info().enabled:
        barrier()
        _shutdown()


def rank_seed(seed: int, rank: int) -> int:
    """A seed for ``rank``'s own noise stream: ``seed`` itself on rank 0 (so rank 0 draws what a
    single process draws), well-separated seeds elsewhere."""
    if rank == 0:
        return int(seed)
    return (int(seed) + 0x9E3779B97F4A7C15 * int(rank)) % 2 ** 63


# ---------------------------------------------------------------------------- collectives
def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (identity in a single process); returns it."""
    if info().enabled:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum the gradients of ``params`` over ranks with one all_reduce of a flat buffer.
    Parameters without a gradient are skipped (the same ones on every rank: same code path)."""
    if not info().enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    all_reduce_sum(flat)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank."""
    if not info().enabled:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in module.state_dict().values():
            dist.broadcast(t, src=src)


def broadcast_object(obj: Any = None, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj``, on every rank."""
    if not info().enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    i = info()
    if not i.enabled:
        return [obj]
    import torch.distributed as dist

    out: List[Any] = [None] * i.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if info().enabled:
        import torch.distributed as dist

        dist.barrier()


def staged(fn: Callable[[], Any], first: Callable[[DistInfo], bool] = lambda i: i.is_main) -> Any:
    """Run ``fn`` on the ranks where ``first`` holds, then on the others, and return its result.
    An exception on any rank is raised on every rank (rank 0's first), so an error such as an
    existing run folder stops all processes instead of leaving the others waiting. Use it for
    work that must happen once before the others (downloads, creating the run folder)."""
    i = info()
    if not i.enabled:
        return fn()
    result = None
    for stage in (True, False):
        error = None
        if first(i) == stage:
            try:
                result = fn()
            except Exception as e:  # noqa: BLE001 -- re-raised below, on every rank
                error = e
        errors = [e for e in all_gather_object(_picklable(error)) if e is not None]
        if errors:
            if error is not None:
                raise error
            raise errors[0]
    return result


def _picklable(e: Optional[BaseException]) -> Optional[BaseException]:
    if e is None:
        return None
    import pickle

    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(e).__name__}: {e}")
