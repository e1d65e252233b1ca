"""Run an iterator in a background thread behind a bounded queue, so that pipeline stages overlap.

Errors travel downstream and are raised in the consumer; closing the consumer (or an error there)
stops the producer and, through it, every stage upstream.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")
_DONE = object()
_POLL = 0.05


class Cancelled(Exception):
    """A stage gave up because its consumer stopped."""


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def threaded(source: Iterable[T], maxsize: int, name: str, stop: threading.Event | None = None
             ) -> Generator[T, None, None]:
    """`source` on a thread. `stop` is set when the consumer stops: a source that works long between items
    can watch it (and raise Cancelled) to end sooner."""
    items: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
    stop = stop or threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(source)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_Failure(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        worker.join(timeout=2.0)


class BufferPool:
    """Reusable arrays of one shape: fresh large arrays cost page faults on every frame.

    Ownership passes explicitly: `take` hands out an array that nobody else holds, and whoever is done
    with it may `give` it back. An array that is never given back is simply garbage-collected.
    """

    def __init__(self, shape: tuple[int, ...], dtype: object) -> None:
        self.shape, self.dtype = shape, dtype
        self._free: queue.SimpleQueue = queue.SimpleQueue()

    def take(self):
        try:
            return self._free.get_nowait()
        except queue.Empty:
            return np.empty(self.shape, self.dtype)

    def give(self, array) -> None:
        if array.shape == self.shape and array.dtype == self.dtype:
            self._free.put(array)


def regroup(parts: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Regroup a stream of arrays along their first axis into arrays of exactly `size` rows (the last may
    be shorter): audio into chunks, windows and features into batches."""
    held: list[np.ndarray] = []
    count = 0
    for part in parts:
        held.append(part)
        count += len(part)
        if count >= size:
            joined = np.concatenate(held)
            cut = count - count % size
            for i in range(0, cut, size):
                yield joined[i : i + size]
            held, count = [joined[cut:]], count - cut
    if count:
        yield np.concatenate(held)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], executor: ThreadPoolExecutor | None, ahead: int
                ) -> Iterator[R]:
    """fn over items on the executor's threads, at most `ahead` at a time, results in the items' order (an
    error is raised where its item's result would be). Without an executor, in this thread."""
    if executor is None:
        yield from map(fn, items)
        return
    pending: deque[Future] = deque()
    try:
        for item in items:
            pending.append(executor.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
