"""Ctrl-C and SIGTERM while a command works: the first one stops the work (KeyboardInterrupt, or Interrupted
for SIGTERM); any later one is held, so that stopping (the jobs in flight, their temporary files, the report)
is never cut short."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from lipsync_cli.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_seen: list[int] = []


def _handler(signum: int, frame: object) -> None:
    _seen.append(signum)
    if len(_seen) > 1:
        return
    if signum == signal.SIGTERM:
        raise Interrupted("terminated")
    raise KeyboardInterrupt


def install() -> None:
    """Install the handlers (again, after a library such as Ray replaced its own); main thread only."""
    for signum in SIGNALS:
        signal.signal(signum, _handler)


@contextmanager
def handled() -> Iterator[None]:
    """Interrupts handled as above inside the block. After one, SIGINT and SIGTERM are ignored from then on
    (the process is ending, and Python's own finalization would restore the default action that kills it);
    else the previous handlers come back. Outside the main thread (a test runner's worker) nothing is
    installed."""
    try:
        previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
        install()
    except ValueError:
        yield
        return
    _seen.clear()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_IGN if _seen else handler)
