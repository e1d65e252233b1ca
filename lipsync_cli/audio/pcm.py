"""16-bit PCM and the float32 mono samples lipsync works with, one scaling both ways: s16 / 32768 in, and
x * 32768 rounded to the nearest and clipped to [-32768, 32767] out, so s16 taken in comes back out as the very
same samples (every face's promise for a voice given back at its own rate)."""

from __future__ import annotations

import numpy as np

SCALE = 32768.0


def s16_to_float(pcm: bytes | np.ndarray, channels: int = 1) -> np.ndarray:
    """16-bit little-endian PCM (bytes, or int16 samples), `channels` interleaved, as mono float32 in [-1, 1)
    (channels averaged). A ValueError when the samples do not split into the channels."""
    if channels < 1:
        raise ValueError(f"audio with {channels} channels")
    x = np.frombuffer(pcm, "<i2") if isinstance(pcm, bytes | bytearray | memoryview) else np.asarray(pcm)
    if len(x) % channels:
        raise ValueError(f"{len(x)} samples do not split into {channels} channels")
    y = x.astype(np.float32) / np.float32(SCALE)
    return y if channels == 1 else y.reshape(-1, channels).mean(axis=1, dtype=np.float32)


def float_to_s16(samples: np.ndarray) -> np.ndarray:
    """Float samples (nominally [-1, 1]) as int16: x * 32768, rounded to the nearest, clipped."""
    scaled = np.rint(np.asarray(samples, np.float32) * np.float32(SCALE))
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def float_to_s16_bytes(samples: np.ndarray) -> bytes:
    """Float samples as 16-bit little-endian PCM."""
    return float_to_s16(samples).astype("<i2").tobytes()
