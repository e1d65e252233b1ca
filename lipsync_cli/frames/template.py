"""The character's template video: decoded once, in order, and indexed ping-pong.

Frames are kept decoded (memory: width x height x 3 bytes per template frame, independent of the audio
length); decoding happens lazily as the render first reaches each frame, so it overlaps the work.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from lipsync_cli.errors import RenderError


def ping_pong(i: int, n: int) -> int:
    """Template frame of output frame i: 0, 1, .., n-1, n-2, .., 1, 0, 1, .."""
    if n <= 1:
        return 0
    period = 2 * n - 2
    r = i % period
    return r if r < n else period - r


class Template:
    def __init__(self, path: Path, frames: int) -> None:
        self.path = Path(path)
        self.count = frames
        self._frames: list[np.ndarray] = []
        self._capture: cv2.VideoCapture | None = None
        self._lock = threading.Lock()

    def frame(self, k: int) -> np.ndarray:
        """Decoded frame k (0 <= k < count), BGR uint8; treat it as read-only."""
        with self._lock:
            while len(self._frames) <= k:
                if self._capture is None:
                    self._capture = cv2.VideoCapture(str(self.path))
                ok, image = self._capture.read()
                if not ok or image is None:
                    raise RenderError(f"{self.path}: only {len(self._frames)} of {self.count} frames could be decoded")
                image.flags.writeable = False
                self._frames.append(image)
                if len(self._frames) == self.count:
                    self._capture.release()
                    self._capture = None
            return self._frames[k]


_cache: dict[tuple[Path, float], Template] = {}


def open_template(path: Path, frames: int) -> Template:
    """The decoded template, shared by the renders of one process (the most recent one is kept)."""
    key = (Path(path).resolve(), Path(path).stat().st_mtime)
    if key not in _cache:
        _cache.clear()
        _cache[key] = Template(path, frames)
    return _cache[key]
