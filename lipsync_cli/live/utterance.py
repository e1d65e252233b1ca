"""One utterance of a live session: its audio from the first push to the flush, laid on the session's
timeline from its start frame, and turned into the UNet's audio inputs exactly as a file of that audio
would be (the same resampler, mel, windows, encoder and layout; see render/pipeline.py)."""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable
from fractions import Fraction

import numpy as np

from lipsync_cli.audio.resample import TARGET_RATE, StreamResampler, resampled_length
from lipsync_cli.characters.manifest import Character
from lipsync_cli.features.stream import FeatureStream
from lipsync_cli.features.windows import FrameWindows, video_frame_count


def sample_of(k: int, fps: Fraction, rate: int = TARGET_RATE) -> int:
    """The first sample of frame k on a timeline at `rate`: floor(k * rate / fps)."""
    return math.floor(Fraction(k) * rate / fps)


class Utterance:
    def __init__(self, start: int, character: Character, rate: int, encode: Callable[[np.ndarray], np.ndarray],
                 return_rate: int = TARGET_RATE) -> None:
        self.start, self.rate, self.fps, self.return_rate = start, rate, character.fps, return_rate
        self._resampler = StreamResampler(rate, character.audio.resample)
        # the audio given back with the frames: the models' 16 kHz, the pushed samples as they are, or resampled
        self._back = None if return_rate in (TARGET_RATE, rate) else \
            StreamResampler(rate, character.audio.resample, target=return_rate)
        self._windows = FrameWindows(None, character.fps, character.audio.pad_mode, character.audio.window_end)
        self._features = FeatureStream(encode, character.layout)
        # written under the session's lock by the threads that push; read by its worker
        self.inbox: list[np.ndarray] = []
        self.inbox_time = 0.0
        self.pushed = 0  # input samples, silence filled in included
        self.arrivals: list[int] = []  # input samples after each push ...
        self.arrival_times: list[float] = []  # ... when it came ...
        self.arrival_filled: list[bool] = []  # ... and whether it was silence filled in for late audio
        self.flushed = False
        self.frames: int | None = None  # known once flushed
        self.filled_since: float | None = None  # silence filled in without a break since then
        self.fades_in = False  # it follows idle frames: its first frames cross-fade from the template
        # the worker's own
        self.finished = False
        self.ready: deque[tuple[int, np.ndarray, float]] = deque()  # (local frame, features, when complete)
        self._audio = np.zeros(0, np.float32)  # samples at the return rate from local sample _audio_start
        self._audio_start = 0

    # -- under the session's lock --------------------------------------------------------------------
    def add(self, samples: np.ndarray, now: float, filled: bool = False) -> None:
        self.inbox.append(samples)
        self.inbox_time = now
        self.pushed += len(samples)
        self.arrivals.append(self.pushed)
        self.arrival_times.append(now)
        self.arrival_filled.append(filled)
        if not filled:
            self.filled_since = None
        elif self.filled_since is None:
            self.filled_since = now

    def flush(self) -> None:
        self.flushed = True
        self.frames = video_frame_count(resampled_length(self.pushed, self.rate), self.fps)

    def end(self) -> int | None:
        """The frame after its last, once flushed."""
        return None if self.frames is None else self.start + self.frames

    def covers(self, k: int) -> bool:
        return k >= self.start and (self.frames is None or k < self.start + self.frames)

    def head_seconds(self) -> float:
        """Where its audio ends on the session's timeline, in seconds."""
        return float(self.start / self.fps) + self.pushed / self.rate

    # -- on the worker -------------------------------------------------------------------------------
    def process(self, chunks: list[np.ndarray], when: float, finish: bool) -> None:
        """Turn newly pushed audio into features; `when` stamps the frames it completes."""
        pushed = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        resampled = [self._resampler.push(pushed)] if chunks else []
        if finish:
            resampled.append(self._resampler.finish())
        if self.return_rate == TARGET_RATE:
            back = resampled
        elif self._back is None:
            back = [pushed]
        else:
            back = [self._back.push(pushed)] + ([self._back.finish()] if finish else [])
        self._audio = np.concatenate([self._audio, *back])
        for part in resampled:
            batch = self._windows.push(part)
            if batch is not None:
                self._take(self._features.push(batch.windows), when)
        if finish:
            batch = self._windows.finish()
            if batch is not None:
                self._take(self._features.push(batch.windows), when)
            self._take(self._features.finish(), when)
            self.finished = True

    def _take(self, batch, when: float) -> None:
        if batch is not None:
            for j, row in enumerate(batch.features):
                self.ready.append((batch.first + j, row, when))

    def audio_of(self, k: int) -> np.ndarray:
        """The samples of session frame k at the return rate (silence past the end), in order: earlier ones are
        dropped."""
        rate = self.return_rate
        base = sample_of(self.start, self.fps, rate)
        a, b = sample_of(k, self.fps, rate) - base, sample_of(k + 1, self.fps, rate) - base
        if a > self._audio_start:
            self._audio, self._audio_start = self._audio[a - self._audio_start :], a
        out = np.zeros(b - a, np.float32)
        part = self._audio[a - self._audio_start : b - self._audio_start]
        out[: len(part)] = part
        return out

    def own_audio_time(self, k: int) -> tuple[float | None, bool]:
        """When the push that completed session frame k's own audio came (None: the audio ended before the
        frame did), and whether that was silence filled in for late audio (an underrun)."""
        end16 = sample_of(k + 1, self.fps) - sample_of(self.start, self.fps)
        needed = math.ceil(end16 * self.rate / TARGET_RATE)
        i = bisect.bisect_left(self.arrivals, needed)
        if i == len(self.arrivals):
            return None, False
        return self.arrival_times[i], self.arrival_filled[i]
