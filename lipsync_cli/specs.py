"""Plain specifications that every layer reads: how a crop is cut, what the UNet's input looks like, how the
audio is prepared, and which template frame each output frame shows. A leaf: it imports no other layer, so
models/, compositing/ and frames/ take these instead of a whole character."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

PadMode = Literal["constant", "reflect"]
WindowEnd = Literal["silence", "clamp"]
Resampler = Literal["soxr", "polyphase"]
Color = Literal["bgr", "rgb"]
Channel = Literal["reference", "masked"]


@dataclass(frozen=True)
class CropSpec:
    size: int = 328  # the box is resized to size x size (cubic) ...
    border: int = 4  # ... and the inner (size - 2 * border) square goes to the UNet

    @property
    def inner(self) -> int:
        return self.size - 2 * self.border


@dataclass(frozen=True)
class InputSpec:
    channels: tuple[Channel, Channel] = ("reference", "masked")
    color: Color = "bgr"
    mask: tuple[int, int, int, int] = (5, 5, 310, 305)  # x, y, w, h blacked out in the masked image


@dataclass(frozen=True)
class AudioSpec:
    pad_mode: PadMode = "constant"
    window_end: WindowEnd = "silence"
    resample: Resampler = "soxr"  # what the training data went through: soxr (librosa.load) or polyphase


def ping_pong(i: int, n: int) -> int:
    """Template frame of output frame i: 0, 1, .., n-1, n-2, .., 1, 0, 1, .."""
    if n <= 1:
        return 0
    period = 2 * n - 2
    r = i % period
    return r if r < n else period - r


@dataclass(frozen=True, eq=False)
class TemplateSpec:
    """A character's template as the frame stages need it: the video, a box per frame, the crop, and the
    playback rule (ping-pong from `first_frame`)."""

    name: str
    path: Path
    boxes: np.ndarray = field(repr=False)  # int [frames, 4]: x1, y1, x2, y2
    width: int
    height: int
    frames: int
    crop: CropSpec
    first_frame: int = 0

    def index(self, i: int) -> int:
        """The template frame of output frame i."""
        return ping_pong(i + self.first_frame, self.frames)


@dataclass(frozen=True)
class TemplateFrame:
    """One template frame prepared for rendering (frames/template.py makes it)."""

    index: int
    i420: np.ndarray  # [H * 3 // 2, W], H and W even
    box: np.ndarray  # x1, y1, x2, y2
    region: tuple[int, int, int, int]  # the box grown to even coordinates: x0, y0, x1, y1
    region_bgr: np.ndarray
    crop: np.ndarray  # uint8 [inner, inner, 3] BGR: what the UNet is given
    ring: np.ndarray  # float64 [6]: the crop's ring statistics (compositing/color_match.py)

    @property
    def width(self) -> int:
        return self.i420.shape[1]
