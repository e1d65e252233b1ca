"""Signals while a command starts: Ctrl-C or SIGTERM while the libraries load and the command line is parsed
is held until the command's work starts (`start_work`), then interrupts it like anywhere later."""

from __future__ import annotations

import signal
import sys


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _interrupted() -> None:
    sys.stderr.write("lipsync: error: interrupted\n")
    sys.stderr.flush()
    sys.exit(130)


def defer() -> None:
    """Hold SIGINT and SIGTERM back until `start_work`."""
    global _deferring
    _deferring = True
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, frame: _pending.append(number))


def end_deferred() -> None:
    """After a command that never started work (e.g. --help): a held signal ends the run now."""
    if _pending:
        _interrupted()


_deferring = False
_pending: list[int] = []


def start_work() -> None:
    """Called as a command's work begins: signals from now on interrupt it; one held back does so now."""
    global _deferring
    if not _deferring:
        return
    _deferring = False
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    if _pending:
        raise KeyboardInterrupt
