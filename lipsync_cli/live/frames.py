"""What a live session is asked for and what it gives: its options, its frames and their latency, its
counters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from lipsync_cli.compositing.blend import Blend
from lipsync_cli.models.devices import DeviceRequest
from lipsync_cli.models.precision import PrecisionRequest

MIN_RATE, MAX_RATE = 8_000, 48_000


@dataclass(frozen=True)
class LiveOptions:
    rate: int = 16_000  # of the audio pushed (8-48 kHz, mono), unless a push says otherwise
    return_rate: int = 16_000  # of each frame's audio as it comes back (8-48 kHz); the models hear 16 kHz anyway
    start: Literal["now", "first_audio"] = "now"  # stream time 0: when the session opens (idle frames until
    # audio comes), or at its first audio (a file or a clip: its first frame is the render's first frame)
    latency_ms: float | None = None  # L: frame k is due L + k / fps after the session starts; None: auto
    compute_ms: float = 150.0  # the part of L kept for computing a frame: missing audio is silence after it
    jitter_ms: float = 200.0  # with latency_ms None: L = look-ahead + compute_ms + jitter_ms
    ahead_ms: float = 20_000.0  # audio queued ahead of the clock past this is refused
    frames_ahead_ms: float = 2_000.0  # frames made ahead of the one taken last (each holds a whole picture)
    idle_after_ms: float = 1_000.0  # an utterance whose audio stops this long without a flush ends
    fade_frames: int = 3  # frames of cross-fade between speech and the template, both ways (0: none)
    blend: Blend = "match"
    device: DeviceRequest = DeviceRequest("auto")
    batch_frames: int | None = None  # most frames per UNet call (None: the device's default batch)
    batch_wait_ms: float = 8.0  # how long a UNet call waits for more frames (of any session) once one is ready
    micro_batching: bool = True  # sessions of one character on one device share their UNet calls
    precision: PrecisionRequest = "auto"  # the character's float models or a checked variant (render/precision.py)


@dataclass(frozen=True)
class LatencyParts:
    """Seconds, from the moment the frame's own audio had all arrived to the moment the frame was made."""

    lookahead: float  # waiting for the audio after the frame that its window needs
    queueing: float  # resampling, mel, encoder, and waiting for a UNet call
    inference: float  # the UNet call it was part of
    composite: float

    @property
    def total(self) -> float:
        return self.lookahead + self.queueing + self.inference + self.composite


@dataclass(frozen=True, eq=False)
class LiveFrame:
    index: int  # k: 0 is the session's first frame
    generation: int  # +1 at each interrupt
    speech: bool  # False: an idle frame (the template, or a cross-fade to it)
    image: np.ndarray  # I420 uint8 [H * 3 // 2, W], read-only
    audio: np.ndarray  # float32 at the return rate: the frame's 1/fps of the timeline (silence for idle frames)
    pts: float  # k / fps, seconds
    due: float  # on the session's clock
    made: float  # on the session's clock
    latency: LatencyParts | None  # speech frames only
    underrun: bool = False  # its audio was (partly) silence because the client was late


@dataclass(frozen=True)
class Interruption:
    generation: int  # the new generation
    first_frame: int  # the index of the next frame given out: an idle one


@dataclass(frozen=True)
class LiveStats:
    frames: int
    speech_frames: int
    idle_frames: int
    underrun_frames: int  # frames whose audio the client was late with (filled with silence)
    underruns: int  # runs of such frames
    late_frames: int  # given out after their due time
    generation: int
    queued_ms: float  # audio queued ahead of the clock
