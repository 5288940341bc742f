"""Image files to uint8 rows, in parallel worker processes.

One picture becomes one row of C*H*W uint8 values (channels first): optionally centre-cropped
to ``crop`` = (h, w) of the original, then resized (Pillow, Lanczos) to ``size`` = (H, W). A
JPEG that is to shrink at least twofold is decoded at reduced size (Pillow's ``draft``: the
DCT scaled by 1/2, 1/4 or 1/8, never below what the crop and resize need), which is much faster
and an anti-aliased downscale in itself.

Workers write their rows straight into the output files (``os.pwrite`` at row * D), so no pixels
travel between processes and the parent's memory does not grow with the data set. There are at
most MAX_WORKERS_PER_CORE per core, and they die with the process that started them, even when
it is killed with ``kill -9``: on Linux the kernel sends them SIGKILL (``prctl(PR_SET_PDEATHSIG)``),
and elsewhere too a thread in each worker watches its parent and ends the worker when it is gone.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DataError

_GREY_MODES = ("1", "L", "LA", "La")
_UNSUPPORTED_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


@dataclass(frozen=True)
class ImageSpec:
    """How files become rows: ``channels`` 1 (grey) or 3 (RGB); ``size`` (H, W) of the rows;
    ``crop`` (h, w) centre crop of the original first, or None; ``draft`` reduced-size JPEG
    decoding allowed."""

    channels: int
    size: Tuple[int, int]
    crop: Optional[Tuple[int, int]] = None
    draft: bool = True

    @property
    def dim(self) -> int:
        return self.channels * self.size[0] * self.size[1]


def centre_box(height: int, width: int, crop: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """(left, top, right, bottom) of the central crop[0] x crop[1] region of a height x width image."""
    ch, cw = crop
    top, left = (height - ch) // 2, (width - cw) // 2
    return left, top, left + cw, top + ch


def decode(path, spec: ImageSpec) -> Tuple[np.ndarray, bool]:
    """(row [C*H*W] uint8, has_colour) of one image file. Raises on unreadable files and on
    images smaller than the crop."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in _UNSUPPORTED_MODES:
            raise ValueError(f"{im.mode} images (16-bit or float) are not supported; save them as 8-bit")
        h0, w0 = im.height, im.width
        if spec.crop is not None and (spec.crop[0] > h0 or spec.crop[1] > w0):
            raise ValueError(f"the image is {h0}x{w0}, smaller than the crop {spec.crop[0]}x{spec.crop[1]}")
        region = spec.crop or (h0, w0)
        if spec.draft and im.format == "JPEG":
            # the largest DCT reduction that keeps the cropped region at least the target size
            factor = min(region[0] / spec.size[0], region[1] / spec.size[1])
            if factor >= 2:
                scale = 1 << min(3, int(np.log2(factor)))
                im.draft("RGB" if spec.channels == 3 else "L", (max(1, -(-w0 // scale)), max(1, -(-h0 // scale))))
        im.load()
        colour = im.mode not in _GREY_MODES
        im2 = im.convert("RGB" if spec.channels == 3 else "L")
        fy, fx = im2.height / h0, im2.width / w0  # 1, or the draft's reduction
        if spec.crop is not None:
            left, top, right, bottom = centre_box(h0, w0, spec.crop)
            box = (left * fx, top * fy, right * fx, bottom * fy)
        else:
            box = (0, 0, im2.width, im2.height)
        if (fy, fx) == (1.0, 1.0) and spec.crop is not None:
            im2 = im2.crop(tuple(int(v) for v in box))  # exactly the usual crop, then resize
            box = (0, 0, im2.width, im2.height)
        if (im2.height, im2.width) != spec.size or box != (0, 0, im2.width, im2.height):
            im2 = im2.resize((spec.size[1], spec.size[0]), Image.Resampling.LANCZOS, box=box)
        arr = np.asarray(im2, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if colour and spec.channels == 3:
        colour = not ((arr[:, :, 0] == arr[:, :, 1]).all() and (arr[:, :, 0] == arr[:, :, 2]).all())
    return np.ascontiguousarray(np.moveaxis(arr, 2, 0)).reshape(-1), colour


def probe(path) -> Tuple[Tuple[int, int], bool]:
    """((height, width), grey_mode) from a file's header, without decoding the pixels."""
    from PIL import Image

    with Image.open(path) as im:
        return (im.height, im.width), im.mode in _GREY_MODES


@dataclass
class Job:
    """Rows ``rows`` of the file ``out`` (``dim`` bytes each) from the images ``paths``."""

    out: str
    dim: int
    rows: Sequence[int]
    paths: Sequence[str]


def _run_job(job: Job, spec: ImageSpec) -> Tuple[List[Tuple[int, str]], bool, bool, int]:
    """Decode and write one job's rows. Returns (bad [(row, 'path: error')], any_colour,
    all_binary (every value 0 or 255), n_done). A failed write (disk full) raises OSError."""
    bad, any_colour, binary = [], False, True
    fd = os.open(job.out, os.O_WRONLY)
    try:
        for row, path in zip(job.rows, job.paths):
            try:
                values, colour = decode(path, spec)
            except Exception as e:  # Pillow raises many types (UnidentifiedImageError, OSError, ...)
                bad.append((row, f"{path}: {type(e).__name__}: {e}"))
                continue
            any_colour |= colour
            binary = binary and bool(np.all((values == 0) | (values == 255)))
            os.pwrite(fd, values.tobytes(), row * job.dim)
    finally:
        os.close(fd)
    return bad, any_colour, binary, len(job.rows)


def _probe_job(paths: Sequence[str]) -> List[Tuple[str, Optional[Tuple[int, int]], bool, Optional[str]]]:
    out = []
    for p in paths:
        try:
            size, grey = probe(p)
            out.append((p, size, grey, None))
        except Exception as e:
            out.append((p, None, True, f"{type(e).__name__}: {e}"))
    return out


# Decoding is CPU-bound, so one worker per core is fastest; a few more per core can hide the
# waits of a slow (network) disk. More only add memory (each worker is a copy of the parent, over
# 100 MB with torch loaded) and, far beyond, a machine hung forking them.
MAX_WORKERS_PER_CORE = 4

# how often (seconds) a worker checks that the process that started it still runs
PARENT_CHECK_S = 0.5


def max_workers() -> int:
    return default_workers() * MAX_WORKERS_PER_CORE


def check_workers(workers: int, what: str = "workers") -> int:
    """``workers`` when valid: 0 (one per core) up to max_workers(); else DataError."""
    if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= max_workers():
        raise DataError(f"{what} {workers!r} is out of range: use 0 (one per core) to {max_workers()} "
                         f"({MAX_WORKERS_PER_CORE} per core, and this machine has {default_workers()} cores: decoding is "
                         "CPU-bound, so more processes only take memory)")
    return workers


def _die_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when ``parent`` (the process that started it) ends."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watch below still ends the worker
    if os.getppid() != parent:  # the parent died before the above took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="aevb-watch-parent", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(PARENT_CHECK_S)
        if os.getppid() != parent:  # re-parented: the process that started us is gone
            os._exit(1)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _chunks(seq: Sequence, n: int) -> List[Sequence]:
    return [seq[i:i + n] for i in range(0, len(seq), n)]


def _pool(workers: int, tasks: int):
    """A pool of ``workers`` processes (no more than there are ``tasks``) that die with this one."""
    import multiprocessing

    # fork is fast and shares the parent's imports; workers touch no torch state
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=max(1, min(workers, tasks)), mp_context=multiprocessing.get_context(method),
                               initializer=_die_with_parent, initargs=(os.getpid(),))


def probe_all(paths: Sequence[str], workers: int = 0, desc: str = "reading image headers",
              progress: bool = True):
    """[(path, (h, w) or None, grey, error or None)] for every file, in order, in parallel."""
    workers = check_workers(workers) or default_workers()
    chunks = _chunks(list(paths), 512)
    if workers == 1 or len(chunks) == 1:
        return [r for c in chunks for r in _probe_job(c)]
    out = []
    with _pool(workers, len(chunks)) as pool, _bar(len(paths), desc, progress) as bar:
        for res in pool.map(_probe_job, chunks):
            out.extend(res)
            bar.update(len(res))
    return out


def decode_all(jobs: Sequence[Job], spec: ImageSpec, workers: int = 0, desc: str = "decoding images",
               progress: bool = True) -> Tuple[List[Tuple[str, int, str]], bool, bool]:
    """Run every job (split into chunks of a few hundred images) in ``workers`` processes with
    a progress bar and ETA. Returns (bad [(out file, row, 'path: error')], any_colour, all_binary)."""
    workers = check_workers(workers) or default_workers()
    pieces = [Job(j.out, j.dim, r, p) for j in jobs
              for r, p in zip(_chunks(list(j.rows), 256), _chunks(list(j.paths), 256))]
    total = sum(len(j.rows) for j in jobs)
    bad, any_colour, binary = [], False, True
    with _bar(total, desc, progress) as bar:
        if workers == 1 or len(pieces) <= 1:
            for piece in pieces:
                b, c, bi, n = _run_job(piece, spec)
                bad += [(piece.out, r, m) for r, m in b]
                any_colour, binary = any_colour or c, binary and bi
                bar.update(n)
        else:
            with _pool(workers, len(pieces)) as pool:
                futures = [(piece, pool.submit(_run_job, piece, spec)) for piece in pieces]
                for piece, fut in futures:
                    b, c, bi, n = fut.result()
                    bad += [(piece.out, r, m) for r, m in b]
                    any_colour, binary = any_colour or c, binary and bi
                    bar.update(n)
    return bad, any_colour, binary


class _bar:
    """A tqdm bar (with rate and ETA) on a terminal; silent otherwise or when disabled."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.t0 = time.perf_counter()

    def __enter__(self):
        from tqdm.auto import tqdm
        import sys

        self.bar = tqdm(total=self.total, desc=self.desc, unit="img", disable=None if self.enabled else True,
                        file=sys.stderr, leave=False, dynamic_ncols=True)
        return self.bar

    def __exit__(self, *exc):
        self.bar.close()
        return False

