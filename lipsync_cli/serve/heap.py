"""Giving memory back to the system once sessions end (a server that once served many sessions, hostile
ones included, would otherwise keep that peak for good). On a thread of its own, `DELAY` seconds after a
session ended (once for all that ended meanwhile, and at most every `INTERVAL` seconds):
- a garbage collection, where the process has frozen its long-lived objects out of the collector's sight
  (`lipsync serve` does: then it takes a millisecond, where it would take a tenth of a second and hold every
  thread meanwhile): what ended a session (an error, a cancelled task) is often kept in a reference cycle with
  the frames of the code it went through, and what they hold would wait for the collector's rare full passes;
- the models' CPU arenas give back what they hold unused at their next call (onnxruntime's arena grows to
  the largest calls it has seen and keeps that);
- `malloc_trim`: a session's frames are arrays of a megabyte or more, made and freed on several threads, and
  glibc's malloc keeps what they freed in its arenas (its mmap threshold rises after the first such free, so
  later frames come from the arenas); `limit_arenas`, at start-up, keeps those arenas few.
Elsewhere than glibc only the collection and the models' arenas do anything."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import threading
import time
from collections.abc import Callable
from typing import Any

DELAY = 1.0  # seconds after a session ended
INTERVAL = 5.0  # seconds between two passes at least
M_ARENA_MAX = -8  # mallopt's parameter (malloc.h)


def _libc_function(name: str) -> Any:
    path = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(path), name, None) if path else None
    except OSError:
        return None


def limit_arenas(count: int | None = None) -> None:
    """At most `count` malloc arenas (default: one per core; glibc's own is eight per core) for the threads
    started from now on: the threads of many sessions then share a few arenas, instead of each keeping the
    peak of its own (measured under a hostile load: 74 MB left over after it instead of 210)."""
    mallopt = _libc_function("mallopt")
    if mallopt is not None:
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        mallopt(M_ARENA_MAX, count or os.cpu_count() or 1)


def _malloc_trim() -> Callable[[], None] | None:
    trim = _libc_function("malloc_trim")
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


class HeapTrimmer:
    def __init__(self, delay: float = DELAY, before: Callable[[], None] | None = None) -> None:
        """`before`: run first (the models' arenas asked to give back what they hold unused)."""
        self.delay, self.before = delay, before
        self._trim = _malloc_trim()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._last = 0.0
        self.trims = 0

    def soon(self) -> None:
        """A collection and a trim `delay` seconds from now, unless they are already due."""
        with self._lock:
            if self._timer is not None:
                return
            wait = max(self.delay, self._last + INTERVAL - time.monotonic())
            self._timer = threading.Timer(wait, self._run)
            self._timer.daemon = True
            self._timer.start()

    def _run(self) -> None:
        with self._lock:
            self._timer = None
            self._last = time.monotonic()
        if gc.get_freeze_count():
            gc.collect()
        if self.before is not None:
            try:
                self.before()
            except Exception:  # noqa: BLE001 - the runtime closed meanwhile: nothing to shrink
                pass
        if self._trim is not None:
            self._trim()
        self.trims += 1

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
