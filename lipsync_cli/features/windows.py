"""Video frames -> mel windows (design.md section 3).

Video frame i at `fps` frames per second is driven by the 16 mel frames starting at floor(80 * i / fps),
transposed to [80, 16]. Arithmetic is exact: fps is a Fraction (30000/1001 stays 30000/1001).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from lipsync_cli.features.mel import FRAMES_PER_SECOND, N_MELS, SAMPLE_RATE, MelStream, frame_count
from lipsync_cli.specs import PadMode, WindowEnd

WINDOW_FRAMES = 16


def parse_fps(value: str | int | float | Fraction) -> Fraction:
    """25, 29.97, "30000/1001" or a Fraction -> a positive Fraction."""
    try:
        fps = Fraction(str(value)) if not isinstance(value, Fraction) else value
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"fps must be a positive number or a ratio like 30000/1001, not {value!r}") from None
    if fps <= 0:
        raise ValueError(f"fps must be positive, not {value!r}")
    return fps


def video_frame_count(n16: int, fps: Fraction) -> int:
    """Frames that cover n16 samples of 16 kHz audio: ceil(n16 * fps / 16000), at least 1."""
    return max(1, math.ceil(Fraction(n16) * fps / SAMPLE_RATE))


def window_start(i: int, fps: Fraction) -> int:
    """First mel frame of video frame i's window: floor(80 * i / fps)."""
    return math.floor(FRAMES_PER_SECOND * i / fps)


@dataclass(frozen=True)
class WindowBatch:
    """Mel windows [k, 80, 16] of consecutive video frames first .. first + k - 1."""

    first: int
    windows: np.ndarray

    def __len__(self) -> int:
        return len(self.windows)


class FrameWindows:
    """The mel window of every video frame of a signal, computed as the audio streams in.

    With `n16` (a file: its length is known) the frames are exactly `video_frame_count(n16)`. Without it (a
    live stream) windows come out as long as audio comes in, and the total, the `clamp` rule and the end
    check are applied at `finish()`: a window emitted before then never reaches past the audio so far, so
    clamping could not have moved it."""

    def __init__(
        self,
        n16: int | None,
        fps: Fraction,
        pad_mode: PadMode = "constant",
        window_end: WindowEnd = "silence",
    ) -> None:
        if window_end not in ("silence", "clamp"):
            raise ValueError(f"window_end must be 'silence' or 'clamp', not {window_end!r}")
        self.fps, self.window_end = fps, window_end
        self.n16: int | None = None
        self.frames: int | None = None
        self.mel_frames: int | None = None
        if n16 is not None:
            self._set_total(n16)
        self._mel = MelStream(pad_mode)
        self._buf = np.zeros((0, N_MELS), np.float32)
        self._buf_start = 0
        self._next = 0

    def _set_total(self, n16: int) -> None:
        self.n16, self.frames, self.mel_frames = n16, video_frame_count(n16, self.fps), frame_count(n16)

    @property
    def emitted(self) -> int:
        """Windows given out so far: the index of the next one."""
        return self._next

    def start(self, i: int) -> int:
        s = window_start(i, self.fps)
        if self.window_end == "clamp" and self.mel_frames is not None:
            s = max(0, min(s, self.mel_frames - WINDOW_FRAMES))
        return s

    def _emit(self) -> WindowBatch | None:
        end = self._buf_start + len(self._buf)
        first, out = self._next, []
        while self.frames is None or self._next < self.frames:
            s = self.start(self._next)
            if s + WINDOW_FRAMES > end:
                break
            out.append(self._buf[s - self._buf_start : s - self._buf_start + WINDOW_FRAMES].T)
            self._next += 1
        if self.frames is None or self._next < self.frames:
            keep = self.start(self._next)
            if self.mel_frames is None and self.window_end == "clamp":  # finish() may clamp back to the end
                keep = min(keep, end - WINDOW_FRAMES)
            drop = keep - self._buf_start
            if drop > 0:
                self._buf, self._buf_start = self._buf[drop:], self._buf_start + drop
        return WindowBatch(first, np.stack(out)) if out else None

    def push(self, chunk: np.ndarray) -> WindowBatch | None:
        self._buf = np.concatenate([self._buf, self._mel.push(chunk)])
        return self._emit()

    def finish(self) -> WindowBatch | None:
        if self.n16 is None:
            self._set_total(self._mel.samples)
        elif self._mel.samples != self.n16:
            raise ValueError(f"expected {self.n16} samples, the stream gave {self._mel.samples}")
        assert self.frames is not None
        self._buf = np.concatenate([self._buf, self._mel.finish()])
        if self._next < self.frames:
            need = max(self.start(i) for i in range(self._next, self.frames)) + WINDOW_FRAMES
            missing = need - (self._buf_start + len(self._buf))
            if missing > 0:
                self._buf = np.concatenate([self._buf, self._mel.beyond(missing)])
        return self._emit()


def frame_windows(
    chunks: Iterable[np.ndarray],
    n16: int,
    fps: Fraction,
    pad_mode: PadMode = "constant",
    window_end: WindowEnd = "silence",
) -> Iterator[WindowBatch]:
    """Stream the windows of every video frame from audio chunks totalling n16 samples."""
    windows = FrameWindows(n16, fps, pad_mode, window_end)
    for chunk in chunks:
        batch = windows.push(chunk)
        if batch is not None:
            yield batch
    batch = windows.finish()
    if batch is not None:
        yield batch
