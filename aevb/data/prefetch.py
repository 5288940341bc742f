"""Read-ahead for streamed splits: the next batch is gathered in a background thread while the
current one trains, so disk reads overlap computation. At most ``depth`` batches wait at once."""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator, TypeVar

Raw = TypeVar("Raw")
_DONE = object()


def prefetched(indices: Iterable, read: Callable[[object], Raw], finish: Callable[[Raw], object],
               depth: int = 2) -> Iterator:
    """Yield ``finish(read(i))`` for each ``i`` of ``indices`` in order; ``read`` runs in a
    background thread (``depth`` batches ahead), ``finish`` (e.g. the float conversion on the
    device) in the caller's. An exception in the reader is raised in the caller."""
    q: "queue.Queue" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def reader():
        try:
            for i in indices:
                if stop.is_set():
                    return
                q.put(read(i))
        except BaseException as e:  # handed to the consumer, raised there
            q.put(_Failure(e))
        finally:
            q.put(_DONE)

    t = threading.Thread(target=reader, name="aevb-prefetch", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                break
            if isinstance(item, _Failure):
                raise item.error
            yield finish(item)
    finally:
        stop.set()
        while t.is_alive():  # unblock a reader waiting on a full queue, then let it end
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.01)


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error
