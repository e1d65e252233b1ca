"""The `lipsync` executable. Ctrl-C or SIGTERM while the libraries load and the command line is parsed (half a
second) is held until the command starts, then ends the run with one line and exit 130, like anywhere later:
an interrupt inside a library's import would surface as that library's ImportError, and one during parsing
would end the run without a word."""

from __future__ import annotations

import io
import os
import sys

from lipsync_cli.cli import signals


class _Tolerant(io.TextIOBase):
    """A message stream whose reader may go away (`lipsync ... 2>&1 | head`): the render's exit status reflects
    the render, not the reader of its messages."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            self._stream.write(text)
        except (BrokenPipeError, OSError, ValueError):
            pass
        return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")


def _streams() -> None:
    """Closed standard streams become /dev/null; message streams tolerate a reader that is gone."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            stream = open(os.devnull, "w")
        setattr(sys, name, _Tolerant(stream))


def main() -> None:
    # before OpenCV loads: its FFmpeg and its own logging would print lines of their own on stderr
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    _streams()
    signals.defer()
    from lipsync_cli.cli.app import main as run

    run()
    signals.end_deferred()
