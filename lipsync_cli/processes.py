"""Child processes: whether one still exists (temporary files carry their writer's process id, so that what
a killed process left behind can be told from work in progress), the tail of what one writes to stderr,
and stopping one cleanly."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import threading
from collections import deque
from typing import IO

_CONTEXT = re.compile(r"\[[^\]]*@ 0x[0-9a-f]+\]\s*")  # ffmpeg's "[aac @ 0x55d0...]" prefix


def host_tag() -> str:
    """Four hex digits naming this machine, so that a folder shared by several tells whose files are whose
    (another machine's process ids mean nothing here)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:4]


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class ErrorTail:
    """The last lines a child writes to stderr, read on a thread so that the pipe never fills up."""

    def __init__(self, stream: IO[bytes], keep: int = 12, strip_context: bool = False) -> None:
        self.lines: deque[str] = deque(maxlen=keep)
        self._stream, self._strip = stream, strip_context
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._stream:
            line = raw.decode("utf-8", "replace")
            line = (_CONTEXT.sub("", line) if self._strip else line).strip()
            if line:
                self.lines.append(line)

    def join(self, timeout: float = 2.0) -> None:
        self._thread.join(timeout)

    def last(self, n: int) -> str:
        return " | ".join(list(self.lines)[-n:])


def stop(proc: subprocess.Popen, tail: ErrorTail, *streams: IO[bytes] | None) -> None:
    """Kill the process if it still runs, wait for it, let the stderr reader reach the pipe's end (closing
    the pipe under it would raise in its thread), and close the pipes."""
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - kill does not fail in practice
        pass
    tail.join()
    for stream in (*streams, proc.stderr):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass
