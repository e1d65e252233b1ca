"""Template frames: indexed ping-pong, and prepared once for rendering.

A prepared frame holds its I420 picture for the output (as decoded, padded to an even size), the BGR pixels
of its box region for compositing, and the uint8 inner crop the UNet sees (about 1.9 MB per 720p frame). Where they
are kept, and for how long, is the template store's business (`frames/store.py`).
"""

from __future__ import annotations

import cv2
import numpy as np

from lipsync_cli.compositing.color_match import crop_ring
from lipsync_cli.encoding.yuv import even, planes
from lipsync_cli.frames.crops import inner_crop
from lipsync_cli.specs import CropSpec, TemplateFrame

__all__ = ["TemplateFrame", "prepare", "prepare_parts", "region_of", "region_to_bgr"]


def region_of(box: np.ndarray) -> tuple[int, int, int, int]:
    """The box grown to even coordinates (x0, y0, x1, y1): where the output's I420 is recomputed."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return x1 & ~1, y1 & ~1, even(x2), even(y2)


def region_to_bgr(i420: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """BGR uint8 of an even-aligned region (x0, y0, x1, y1) of an I420 picture (BT.601 limited range)."""
    x0, y0, x1, y1 = region
    y, u, v = planes(i420, i420.shape[1])
    w, h = x1 - x0, y1 - y0
    part = np.empty((h * 3 // 2, w), np.uint8)
    py, pu, pv = planes(part, w)
    py[:] = y[y0:y1, x0:x1]
    pu[:] = u[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
    pv[:] = v[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
    return cv2.cvtColor(part, cv2.COLOR_YUV2BGR_I420)


def prepare_parts(i420: np.ndarray, bgr: np.ndarray, box: np.ndarray, crop: CropSpec
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A decoded template frame (I420 and ffmpeg's BGR of it, even sides) -> the I420, the box region in BGR
    converted from the I420 (so that blending and converting back changes nothing the patch leaves alone),
    the UNet's crop from ffmpeg's BGR (the pixels OpenCV reads, as in training) and its ring statistics."""
    crop_image = np.ascontiguousarray(inner_crop(bgr, box, crop))
    return i420, region_to_bgr(i420, region_of(box)), crop_image, crop_ring(crop_image)


def prepare(index: int, i420: np.ndarray, bgr: np.ndarray, box: np.ndarray, crop: CropSpec) -> TemplateFrame:
    i420, region_bgr, crop_image, ring = prepare_parts(i420, bgr, box, crop)
    frame = TemplateFrame(index, i420, np.asarray(box), region_of(box), region_bgr, crop_image, ring)
    for array in (frame.i420, frame.region_bgr, frame.crop, frame.ring):
        array.flags.writeable = False
    return frame
