"""LiveKit's media objects and lipsync's: an `rtc.AudioFrame` as mono samples for a live session, and a
`LiveFrame` as the `rtc.VideoFrame` and `rtc.AudioFrame` that `AVSynchronizer` takes."""

from __future__ import annotations

import numpy as np
from livekit import rtc

from lipsync_cli.audio.pcm import float_to_s16, s16_to_float
from lipsync_cli.errors import InputError
from lipsync_cli.live import LiveFrame
from lipsync_cli.live.frames import MAX_RATE, MIN_RATE


def mono(frame: rtc.AudioFrame) -> tuple[np.ndarray, int]:
    """The frame's samples as mono float32 in [-1, 1] (two channels averaged), and its rate."""
    if frame.num_channels not in (1, 2):
        raise InputError(f"an audio frame must have 1 or 2 channels, not {frame.num_channels}", option="audio")
    if not MIN_RATE <= frame.sample_rate <= MAX_RATE:
        raise InputError(f"audio rate must be {MIN_RATE} to {MAX_RATE} Hz, not {frame.sample_rate}", option="audio")
    return s16_to_float(np.frombuffer(frame.data, np.int16), frame.num_channels), frame.sample_rate


def video_frame(frame: LiveFrame) -> rtc.VideoFrame:
    """The frame's picture as I420 (its size padded to even, as every lipsync picture is)."""
    image = np.ascontiguousarray(frame.image)
    return rtc.VideoFrame(image.shape[1], image.shape[0] * 2 // 3, rtc.VideoBufferType.I420, image.data)


def audio_frame(frame: LiveFrame, rate: int, channels: int) -> rtc.AudioFrame:
    """The frame's audio as s16 at `rate` (the session's return rate), in `channels` copies. A voice pushed as
    s16 comes back as the very same samples: x / 32768 and back is exact."""
    pcm = float_to_s16(frame.audio)
    if channels > 1:
        pcm = np.repeat(pcm[:, None], channels, axis=1)
    return rtc.AudioFrame(pcm.tobytes(), rate, channels, len(frame.audio))
