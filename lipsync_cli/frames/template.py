"""Template frames: indexed ping-pong, and prepared once for rendering.

A prepared frame holds its I420 picture for the output (padded to an even size), the BGR pixels of its box
region for compositing, and the uint8 inner crop the UNet sees (about 1.9 MB per 720p frame). Where they
are kept, and for how long, is the template store's business (`frames/store.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipsync_cli.characters.manifest import CropSpec
from lipsync_cli.encoding.yuv import bgr_to_i420, even, pad_even
from lipsync_cli.frames.crops import inner_crop
from lipsync_cli.frames.pingpong import ping_pong  # noqa: F401  (re-exported)


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


def region_of(box: np.ndarray) -> tuple[int, int, int, int]:
    """The box grown to even coordinates (x0, y0, x1, y1): where the output's I420 is recomputed."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return x1 & ~1, y1 & ~1, even(x2), even(y2)


def prepare_parts(bgr: np.ndarray, box: np.ndarray, crop: CropSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A decoded template frame's I420 picture (padded to even), its box region in BGR and its UNet crop."""
    padded = pad_even(bgr)
    x0, y0, x1, y1 = region_of(box)
    region_bgr = np.ascontiguousarray(padded[y0:y1, x0:x1])
    return bgr_to_i420(padded), region_bgr, np.ascontiguousarray(inner_crop(bgr, box, crop))


def prepare(index: int, bgr: np.ndarray, box: np.ndarray, crop: CropSpec) -> TemplateFrame:
    i420, region_bgr, crop_image = prepare_parts(bgr, box, crop)
    frame = TemplateFrame(index, i420, np.asarray(box), region_of(box), region_bgr, crop_image)
    for array in (frame.i420, frame.region_bgr, frame.crop):
        array.flags.writeable = False
    return frame
