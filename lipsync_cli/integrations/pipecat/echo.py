"""The echo brain of `lipsync agent`: no speech-to-text, no language model, no voice service, no keys. It
records what the user says between the VAD's start and stop, and when they stop, says it back: the recording
(trimmed to its voiced part) becomes the reply's voice, `TTSStartedFrame`, `TTSAudioRawFrame`s,
`TTSStoppedFrame`, so the face speaks with the user's own voice. Speech while a reply plays interrupts it.

It tells the page about each turn over the transport's messages: how long the VAD waited after the last voiced
audio before it said the user stopped (`vad_wait_ms`), and each interruption."""

from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass

import numpy as np
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    Frame,
    InputAudioRawFrame,
    OutputTransportMessageUrgentFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from lipsync_cli.audio.pcm import float_to_s16_bytes
from lipsync_cli.integrations.pipecat.media import pcm_to_mono

WINDOW = 0.02  # seconds of the level windows the voiced part is found with


@dataclass(frozen=True)
class EchoOptions:
    preroll: float = 0.4  # seconds kept from before the VAD's start (it starts a little after the voice)
    longest: float = 30.0  # seconds of one turn kept at most
    shortest: float = 0.15  # seconds of voice below which a turn is not echoed
    floor_db: float = -45.0  # a window below this level (dBFS) is not voiced ...
    relative_db: float = -26.0  # ... nor one this far below the turn's loudest window
    pad: float = 0.06  # seconds kept around the voiced part
    chunk: float = 0.1  # seconds of voice per TTSAudioRawFrame


def voiced_span(x: np.ndarray, rate: int, options: EchoOptions = EchoOptions()) -> tuple[int, int] | None:
    """The first and last sample (end excluded) of the voiced part of mono float audio, padded; None if silent."""
    n = max(1, round(WINDOW * rate))
    windows = len(x) // n
    if windows == 0:
        return None
    level = np.sqrt(np.mean(x[: windows * n].reshape(windows, n).astype(np.float64) ** 2, axis=1))
    loudest = float(level.max())
    threshold = max(10 ** (options.floor_db / 20), loudest * 10 ** (options.relative_db / 20))
    voiced = np.flatnonzero(level > threshold)
    if not len(voiced) or (voiced[-1] - voiced[0] + 1) * n < options.shortest * rate:
        return None
    pad = round(options.pad * rate)
    return max(0, int(voiced[0]) * n - pad), min(len(x), (int(voiced[-1]) + 1) * n + pad)


class _Held:
    """The newest frames of the user's audio, with their arrival times, up to a number of seconds (a running
    total: each 20 ms chunk costs the same however long the turn)."""

    def __init__(self, other: _Held | None = None) -> None:
        self.frames: deque[tuple[InputAudioRawFrame, float]] = deque(other.frames if other else ())
        self.seconds: float = other.seconds if other else 0.0

    @staticmethod
    def _length(frame: InputAudioRawFrame) -> float:
        return len(frame.audio) / (2 * frame.num_channels * frame.sample_rate)

    def add(self, frame: InputAudioRawFrame, when: float, most: float) -> None:
        self.frames.append((frame, when))
        self.seconds += self._length(frame)
        while self.seconds > most and self.frames:
            self.seconds -= self._length(self.frames.popleft()[0])
        if not self.frames:
            self.seconds = 0.0


class EchoBrain(FrameProcessor):
    def __init__(self, options: EchoOptions = EchoOptions(), **kwargs) -> None:
        super().__init__(**kwargs)
        self.options = options
        self._before = _Held()  # the pre-roll, with arrival times
        self._turn: _Held | None = None  # while the user speaks
        self._replying = False
        self.turns = 0
        self.interruptions = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self._hear(frame)  # the user's audio ends here: nothing after the brain plays it
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._turn = _Held(self._before)
            if self._replying:
                await self.interrupt()
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            turn, self._turn = self._turn, None
            if turn is not None and turn.frames:
                await self._reply(list(turn.frames), time.monotonic())
        else:
            if isinstance(frame, BotStoppedSpeakingFrame):
                self._replying = False
            await self.push_frame(frame, direction)

    async def interrupt(self) -> None:
        """Barge-in: the reply stops where it is (the page's interrupt button comes here too)."""
        self._replying = False
        self.interruptions += 1
        await self.broadcast_interruption()
        await self._tell({"type": "lipsync-interrupted", "count": self.interruptions})

    def _hear(self, frame: InputAudioRawFrame) -> None:
        now = time.monotonic()
        if self._turn is not None:
            self._turn.add(frame, now, self.options.longest)
        else:
            self._before.add(frame, now, self.options.preroll)

    async def _reply(self, turn: list[tuple[InputAudioRawFrame, float]], stopped: float) -> None:
        rate = turn[0][0].sample_rate
        parts = [(pcm_to_mono(f.audio, f.num_channels), t) for f, t in turn if f.sample_rate == rate]
        x = np.concatenate([p for p, _ in parts])
        span = voiced_span(x, rate, self.options)
        if span is None:
            return
        a, b = span
        # when the last voiced sample came: its frame's arrival, less the samples after it in that frame
        last = max(a, b - round(self.options.pad * rate)) - 1
        ends = np.cumsum([len(p) for p, _ in parts])
        i = min(len(parts) - 1, int(np.searchsorted(ends, last, side="right")))
        last_voiced = parts[i][1] - (int(ends[i]) - 1 - last) / rate
        self.turns += 1
        await self._tell({"type": "lipsync-turn", "turn": self.turns, "heard_ms": round((b - a) / rate * 1000),
                          "vad_wait_ms": round((stopped - last_voiced) * 1000)})
        pcm = float_to_s16_bytes(x[a:b])
        context = f"echo-{uuid.uuid4().hex[:8]}"
        step = 2 * round(self.options.chunk * rate)
        self._replying = True
        await self.push_frame(TTSStartedFrame(context_id=context))
        for i in range(0, len(pcm), step):
            await self.push_frame(TTSAudioRawFrame(audio=pcm[i : i + step], sample_rate=rate, num_channels=1,
                                                   context_id=context))
        await self.push_frame(TTSStoppedFrame(context_id=context))

    async def _tell(self, message: dict) -> None:
        await self.push_frame(OutputTransportMessageUrgentFrame(message=message))
