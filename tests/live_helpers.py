"""Helpers for live-session tests: a clock the test moves, and the offline render to compare against."""

from __future__ import annotations

import numpy as np

from lipsync_cli.audio.loading import probe_audio
from lipsync_cli.live import LiveOptions
from lipsync_cli.models.devices import CPU, DeviceRequest
from lipsync_cli.render.pipeline import PipelineOptions, render_frames

CPU_ONLY = DeviceRequest("cpu")


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def options(**kw) -> LiveOptions:
    return LiveOptions(device=CPU_ONLY, **kw)


def rendered(character, path, runtime, blend="match"):
    """Every frame `lipsync render` makes of the file, before encoding."""
    return list(render_frames(character, probe_audio(path), PipelineOptions(device=CPU, batch_size=4, blend=blend),
                              runtime))


def take(session, count, timeout=30.0):
    frames = []
    for _ in range(count):
        frame = session.next_frame(timeout=timeout)
        assert frame is not None, f"frame {len(frames)} of {count} did not come"
        frames.append(frame)
    return frames


def chunks(x: np.ndarray, size: int):
    return [x[a : a + size] for a in range(0, len(x), size)]
