"""Checkpoints that prove themselves: a digest of every entry, the run they belong to, finite numbers.

A checkpoint is sealed when it is saved (``seal``): its entry ``digest`` holds one digest per
top-level entry (the model's weights, the optimizer's state, the epoch, the config, ...), each
over the entry's tensors (dtype, shape and bytes) and its other values (numbers, strings, lists
and dicts, in their order). The digest is XXH3-128 (``xxhash``), which reads memory about as fast
as the machine can give it (about 20 GB/s a core, against 1.7 GB/s for SHA-256); the bytes of a
tensor larger than ``CHUNK`` enter as the digest of each of its 16 MB chunks, hashed on all the
threads the process uses (the hash releases the GIL). The digest finds damage (any changed,
lost or added byte), not a forger: anyone who can write the file can also write a matching
digest, whatever the hash. ``seal`` also records whether the model and the optimizer's state
are finite, inside their entries' digests, so a load whose digests match knows it without
reading the values again.

A load checks the digest of each entry it keeps (``problem``): a load of the model alone
(memory-mapped, ``aevb.io.load_checkpoint(model_only=True)``) hashes the model's weights and
never reads the optimizer's moments; a resume checks every entry. The model and the optimizer's
state must also be finite, and a checkpoint of a run (``run_id``, the id that run.json holds)
must belong to the run folder it lies in. Checkpoints sealed by earlier versions (SHA-256, by
chunks or in one pass, without the finite record) are checked under their own scheme, with a
pass over their values for finiteness; those written before digests (no entry ``digest``) load
as they are.
"""
from __future__ import annotations

import hashlib
import secrets
from concurrent.futures import ThreadPoolExecutor
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Optional

import torch
import xxhash

DIGEST = "digest"  # the entry that holds the other entries' digests
RUN_ID = "run_id"  # the id of the run that wrote the checkpoint, as in its run.json
ALGORITHM = "xxh3-chunks"  # what seal writes: XXH3-128, tensors over CHUNK bytes by chunk digests
# what a load checks: each scheme's hash, whether large tensors enter by chunks, and whether the
# digest carries the finite record (earlier versions wrote the two SHA-256 schemes without it)
class Scheme(NamedTuple):
    new_hash: Callable  # the hash's constructor (hashlib.sha256, xxhash.xxh3_128)
    chunked: bool  # tensors over CHUNK bytes enter by the digests of their chunks
    finite_record: bool  # the digest records whether the model and optimizer state were finite


ALGORITHMS = {"sha256": Scheme(hashlib.sha256, chunked=False, finite_record=False),
              "sha256-chunks": Scheme(hashlib.sha256, chunked=True, finite_record=False),
              "xxh3-chunks": Scheme(xxhash.xxh3_128, chunked=True, finite_record=True)}
FINITE_RECORD = "finite"  # the digest's record: {entry: whether its tensors were all finite when sealed}
CHUNK = 1 << 24  # bytes of one chunk of a large tensor
# the entries whose tensors must be finite, with what to call them in messages
FINITE = {"model": "model weights", "optimizer": "optimizer state"}
NAMES = {**FINITE, "optimizer": "optimizer state (Adam's moments)", "rng": "random number states",
         "history": "metrics history", "config": "config"}


def new_run_id() -> str:
    """A random id for a new run (16 hexadecimal digits)."""
    return secrets.token_hex(8)


def _chunk_digests(data, new_hash=xxhash.xxh3_128) -> bytes:
    """The digests (``new_hash``: hashlib.sha256, xxhash.xxh3_128) of the ``CHUNK``-byte chunks of
    ``data`` (a 1-D uint8 array), in order, computed on the process's threads (torch.get_num_threads)."""
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    workers = min(len(chunks), torch.get_num_threads())
    if workers <= 1:
        return b"".join(new_hash(c).digest() for c in chunks)
    with ThreadPoolExecutor(workers) as pool:
        return b"".join(pool.map(lambda c: new_hash(c).digest(), chunks))


def _feed(h, obj, chunk_hash=None) -> None:
    """Feed ``obj`` into the hash ``h``: tensors as dtype, shape and bytes (by the digests of
    ``chunk_hash``, the constructor of ``h``'s hash, of chunks over ``CHUNK`` bytes; every byte
    when None); other values by type and exact value, containers in their order."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():
            data = t.reshape(-1).view(torch.uint8).numpy()
            if chunk_hash is not None and len(data) > CHUNK:
                h.update(b"C%d;" % CHUNK + _chunk_digests(data, chunk_hash))
            else:
                h.update(data)
    elif isinstance(obj, dict):
        h.update(b"D%d;" % len(obj))
        for k, v in obj.items():
            _feed(h, k, chunk_hash)
            _feed(h, v, chunk_hash)
    elif isinstance(obj, (list, tuple)):
        h.update(b"L%d;" % len(obj))
        for v in obj:
            _feed(h, v, chunk_hash)
    elif obj is None:
        h.update(b"N;")
    elif isinstance(obj, bool):
        h.update(b"B1;" if obj else b"B0;")
    elif isinstance(obj, int):
        h.update(b"I%s;" % int.__repr__(obj).encode())
    elif isinstance(obj, float):
        h.update(b"F%s;" % float.__repr__(obj).encode())
    elif isinstance(obj, str):
        s = obj.encode("utf-8", "surrogatepass")
        h.update(b"S%d:" % len(s) + s)
    elif isinstance(obj, (bytes, bytearray)):
        h.update(b"Y%d:" % len(obj) + bytes(obj))
    else:  # torch.dtype, torch.Size, ...: what a safe load can give back, by type and value
        h.update(f"O{type(obj).__name__}:{obj!r};".encode())


def entry_digest(value, algorithm: str = ALGORITHM, finite: Optional[bool] = None) -> str:
    """The hexadecimal digest of one entry under ``algorithm`` (one of ALGORITHMS); ``finite``
    (for the entries of FINITE under a scheme with the finite record): whether its tensors were
    all finite, which enters the digest, so a changed record does not match."""
    scheme = ALGORITHMS[algorithm]
    h = scheme.new_hash()
    _feed(h, value, scheme.new_hash if scheme.chunked else None)
    if finite is not None:
        h.update(b"finite:1;" if finite else b"finite:0;")
    return h.hexdigest()


def _on_cpu(obj):
    """``obj`` with its tensors on the CPU: the object itself when they are there already, else a
    copy of the same types (a state dict keeps its metadata), whose tensors are hashed and saved."""
    if isinstance(obj, torch.Tensor):
        return obj if obj.device.type == "cpu" else obj.detach().cpu()
    if isinstance(obj, dict):
        moved = {k: _on_cpu(v) for k, v in obj.items()}
        if all(moved[k] is v for k, v in obj.items()):
            return obj
        out = type(obj)(moved) if type(obj) in (dict, OrderedDict) else moved
        if getattr(obj, "_metadata", None) is not None and isinstance(out, OrderedDict):
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)):
        moved = [_on_cpu(v) for v in obj]
        if all(m is v for m, v in zip(moved, obj)):
            return obj
        return moved if isinstance(obj, list) else tuple(moved)
    return obj


def seal(state: dict) -> dict:
    """``state`` with its tensors on the CPU and the entry ``digest``: one digest per entry, and
    for the model and the optimizer's state whether they are finite (one pass over their values
    here, so that a load whose digests match need not make it)."""
    state = {k: _on_cpu(v) for k, v in state.items() if k != DIGEST}
    finite = {k: _first_non_finite(state[k]) is None for k in FINITE if k in state}
    state[DIGEST] = {"algorithm": ALGORITHM, FINITE_RECORD: finite,
                     "entries": {k: entry_digest(v, finite=finite.get(k)) for k, v in state.items()}}
    return state


def _name(key) -> str:
    return NAMES.get(key, f"entry {key!r}")


def _first_non_finite(obj, prefix: str = "") -> Optional[str]:
    """The name of the first floating-point tensor in ``obj`` that holds NaN or infinity."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and obj.numel() and not _finite(obj):
            return prefix or "a tensor"
        return None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        bad = _first_non_finite(v, f"{prefix}.{k}" if prefix else str(k))
        if bad is not None:
            return bad
    return None


def _finite(t: torch.Tensor) -> bool:
    """Whether every value of ``t`` is finite: its least and greatest values are (NaN propagates
    through both), one pass without a mask as large as the tensor (35 times faster than
    ``isfinite(t).all()`` on a 0.5 GB matrix)."""
    try:
        low, high = torch.aminmax(t.detach())
    except RuntimeError:  # a dtype without aminmax on this device
        return bool(torch.isfinite(t).all())
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def problem(state: dict, keys: Optional[Iterable[str]] = None, run_id: Optional[str] = None) -> Optional[str]:
    """What is wrong with a loaded checkpoint ``state`` (a clause for a message: "is damaged: ...",
    "holds NaN ...", "belongs to another run ..."), or None when it passes.

    ``keys``: the entries to check (None: every entry); only these are read, so a load of the
    model alone never touches the optimizer's moments. ``run_id``: the id of the run folder the
    file lies in (None: not checked); a checkpoint without one (written before run ids) passes."""
    asked = [k for k in state if k != DIGEST] if keys is None else [k for k in keys if k != DIGEST]
    known_finite = set()  # entries whose digest matched with the record that they were finite
    digest = state.get(DIGEST)
    if digest is not None:  # (a checkpoint written before digests has none: nothing to compare)
        entries = digest.get("entries") if isinstance(digest, dict) else None
        algorithm = digest.get("algorithm") if isinstance(digest, dict) else None
        if not isinstance(entries, dict) or not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
            return "is damaged: its digest entry is unreadable"
        record = digest.get(FINITE_RECORD) if ALGORITHMS[algorithm].finite_record else None
        record = record if isinstance(record, dict) else {}
        wanted = list(entries) if keys is None else [k for k in asked if k in entries]
        lost = [k for k in wanted if k not in state]
        if lost:
            return f"is damaged: its {_name(lost[0])} is missing"
        for k in asked:
            if k not in state:
                continue
            if k not in entries:
                return f"is damaged: its {_name(k)} came without a digest"
            finite = record.get(k) if isinstance(record.get(k), bool) else None
            if entry_digest(state[k], algorithm, finite) != entries[k]:
                return (f"is damaged: the digest of its {_name(k)} does not match (the file changed after it "
                        "was written)")
            if finite:
                known_finite.add(k)
    for k, what in FINITE.items():
        if k in asked and k in state and k not in known_finite:
            bad = _first_non_finite(state[k])
            if bad is not None:
                return f"holds NaN or infinite values in its {what} ({bad})"
    if run_id is not None and state.get(RUN_ID) not in (None, run_id):
        return (f"belongs to another run (run id {state.get(RUN_ID)}, this run's is {run_id}): it was copied or "
                "linked here from another run folder")
    return None


def sibling(path: Path) -> Optional[Path]:
    """The run's other checkpoint (best.pt beside last.pt and the reverse), if ``path`` is one."""
    path = Path(path)
    if path.parent.name != "checkpoints":
        return None
    other = {"last.pt": "best.pt", "best.pt": "last.pt"}.get(path.name)
    return path.parent / other if other else None


def advice(path: Path, intact_epoch: Optional[int]) -> str:
    """What to do about the refused checkpoint ``path``, given the epoch of the run's other
    checkpoint when that one passes every check (None when it does not, or is not there)."""
    path = Path(path)
    other = sibling(path)
    run = path.parent.parent if other is not None else None
    again = (f"train the run again (`aevb train --out {run} --overwrite ...`)" if run is not None
             else "train again")
    if other is not None and intact_epoch is not None:
        kind = other.stem
        use = f"use it instead (--checkpoint {kind}; checkpoint='{kind}' in Python)"
        if path.name == "last.pt":
            return (f"the run's other checkpoint {other} (epoch {intact_epoch}) is intact: {use}; to train on, "
                    f"restore {path.name} from a copy or {again}")
        return f"the run's other checkpoint {other} (epoch {intact_epoch}) is intact: {use}"
    return f"restore it from a copy, or {again}"
