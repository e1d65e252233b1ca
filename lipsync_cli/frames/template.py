"""The character's template video: decoded once, in order, and indexed ping-pong.

Each template frame is prepared once, when the render first reaches it: its I420 picture for the output
(padded to an even size), the BGR pixels of its box region for compositing, and the uint8 inner crop the
UNet sees. Memory is about 1.9 MB per 720p template frame, independent of the audio length.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lipsync_cli.characters.manifest import Character, CropSpec
from lipsync_cli.encoding.yuv import bgr_to_i420, even, pad_even
from lipsync_cli.errors import RenderError
from lipsync_cli.frames.crops import inner_crop


def ping_pong(i: int, n: int) -> int:
    """Template frame of output frame i: 0, 1, .., n-1, n-2, .., 1, 0, 1, .."""
    if n <= 1:
        return 0
    period = 2 * n - 2
    r = i % period
    return r if r < n else period - r


@dataclass(frozen=True)
class TemplateFrame:
    index: int
    i420: np.ndarray  # [H * 3 // 2, W], H and W even
    box: np.ndarray  # x1, y1, x2, y2
    region: tuple[int, int, int, int]  # the box grown to even coordinates: x0, y0, x1, y1
    region_bgr: np.ndarray
    crop: np.ndarray  # uint8 [inner, inner, 3] BGR: what the UNet is given

    @property
    def width(self) -> int:
        return self.i420.shape[1]


def prepare(index: int, bgr: np.ndarray, box: np.ndarray, crop: CropSpec) -> TemplateFrame:
    padded = pad_even(bgr)
    x1, y1, x2, y2 = (int(v) for v in box)
    region = (x1 & ~1, y1 & ~1, even(x2), even(y2))
    region_bgr = np.ascontiguousarray(padded[region[1] : region[3], region[0] : region[2]])
    frame = TemplateFrame(index, bgr_to_i420(padded), np.asarray(box), region, region_bgr,
                          np.ascontiguousarray(inner_crop(bgr, box, crop)))
    for array in (frame.i420, frame.region_bgr, frame.crop):
        array.flags.writeable = False
    return frame


class Template:
    def __init__(self, path: Path, frames: int, boxes: np.ndarray, crop: CropSpec) -> None:
        self.path = Path(path)
        self.count = frames
        self.boxes, self.crop = boxes, crop
        self._frames: list[TemplateFrame] = []
        self._capture: cv2.VideoCapture | None = None
        self._lock = threading.Lock()

    def frame(self, k: int) -> TemplateFrame:
        """Prepared template frame k (0 <= k < count)."""
        with self._lock:
            while len(self._frames) <= k:
                if self._capture is None:  # one decoder thread: the least CPU, the cores are needed elsewhere
                    self._capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
                ok, image = self._capture.read()
                n = len(self._frames)
                if not ok or image is None:
                    raise RenderError(f"{self.path}: only {n} of {self.count} frames could be decoded")
                self._frames.append(prepare(n, image, self.boxes[n], self.crop))
                if len(self._frames) == self.count:
                    self._capture.release()
                    self._capture = None
            return self._frames[k]


_cache: dict[tuple, Template] = {}


def open_template(character: Character) -> Template:
    """The prepared template, shared by the renders of one process (the most recent one is kept)."""
    path = Path(character.template)
    key = (path.resolve(), path.stat().st_mtime, character.boxes.tobytes(), character.crop)
    if key not in _cache:
        _cache.clear()
        _cache[key] = Template(path, character.video.frames, character.boxes, character.crop)
    return _cache[key]
