"""How a render's CPU work is spread over the cores: threads for the composite stage and for x264.

On a GPU the model costs little and the CPU work around it sets the pace, so each render in flight takes
its share of the cores: a few composite threads, and x264 the rest (x264 is the largest CPU cost per
frame). On the CPU the models take every core already (onnxruntime's pool), so one composite thread and
ffmpeg's own choice for x264 leave the cores to the model; a machine with many cores adds a second
composite thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from lipsync_cli.models.devices import Device

MAX_COMPOSITE_THREADS = 4


@dataclass(frozen=True)
class CoreShare:
    composite: int  # composite threads per render
    x264: int  # libx264 threads per render; 0 leaves it to ffmpeg


def share_cores(device: Device, cores: int, renders: int = 1) -> CoreShare:
    """The threads of one render when `renders` run at once on `device` on a machine with `cores`."""
    if not device.is_cuda:
        return CoreShare(2 if cores >= 8 else 1, 0)
    mine = max(1, cores // max(1, renders))
    composite = max(1, min(MAX_COMPOSITE_THREADS, mine // 4))
    return CoreShare(composite, max(1, mine - composite - 1))  # one core for decoding and feeding the model
