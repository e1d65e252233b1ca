"""Put the generated mouth patch back into the template frame.

The patch is the inner square of the resized box, so it maps to the box shrunk by the border: padded back
to the full square by repeating its edge and resized to the box (cubic), it lands where the crop's resize
took it from, with sub-pixel accuracy. `feather` blends with an alpha that is 1 inside and falls smoothly
to 0 at the patch edge (no visible box); `hard` pastes it. Pixels the patch does not touch keep the
template's own I420 values exactly.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import cv2
import numpy as np

from lipsync_cli.encoding.yuv import bgr_to_i420, planes
from lipsync_cli.specs import CropSpec, TemplateFrame

Blend = Literal["match", "feather", "hard"]  # match: feather after correcting the patch's colours
FEATHER_FRACTION = 0.12  # of the patch side


def to_uint8(patch: np.ndarray, color: str = "bgr") -> np.ndarray:
    """UNet output [3, h, w] in [0, 1] -> BGR uint8 [h, w, 3], rounded half to even, saturated."""
    channels = [np.asarray(c, np.float32) for c in patch]
    merged = cv2.merge(channels[::-1] if color == "rgb" else channels)
    positive = cv2.threshold(merged, 0.0, 0.0, cv2.THRESH_TOZERO)[1]  # convertScaleAbs takes |x|
    return cv2.convertScaleAbs(positive, alpha=255.0)


@lru_cache(maxsize=8)
def feather_mask(inner: int, blend: Blend) -> np.ndarray:
    """[inner, inner] float32 alpha in patch coordinates."""
    if blend == "hard":
        return np.ones((inner, inner), np.float32)
    margin = max(2.0, FEATHER_FRACTION * inner)
    d = np.minimum(np.arange(inner) + 0.5, inner - np.arange(inner) - 0.5)
    t = np.clip(d / margin, 0.0, 1.0)
    ramp = (t * t * (3 - 2 * t)).astype(np.float32)  # smoothstep
    mask = np.outer(ramp, ramp)
    mask.flags.writeable = False
    return mask


def _frozen(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.flags.writeable = False
    return arrays


@lru_cache(maxsize=64)
def box_alpha(width: int, height: int, crop: CropSpec, blend: Blend) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The patch's alpha in box coordinates [height, width] float32, 1 - alpha, and where alpha changes
    anything (bool). Hard is alpha 1 where the patch covers more than half a pixel."""
    b = crop.border
    padded = cv2.copyMakeBorder(feather_mask(crop.inner, blend), b, b, b, b, cv2.BORDER_CONSTANT, value=0.0)
    alpha = cv2.resize(padded, (width, height), interpolation=cv2.INTER_LINEAR)
    if blend == "hard":
        alpha = (alpha > 0.5).astype(np.float32)
    return _frozen(alpha, 1.0 - alpha, alpha > 0)  # type: ignore[return-value]


def place(patch: np.ndarray, width: int, height: int, crop: CropSpec) -> np.ndarray:
    """The patch (BGR uint8 [inner, inner, 3]) resized into a box of width x height: the exact inverse of the
    crop's resize (patch pixel p lands at box coordinate (p + border + 0.5) * scale - 0.5)."""
    b = crop.border
    padded = cv2.copyMakeBorder(patch, b, b, b, b, cv2.BORDER_REPLICATE)
    return cv2.resize(padded, (width, height), interpolation=cv2.INTER_CUBIC)


def blend_into(roi: np.ndarray, patch: np.ndarray, crop: CropSpec, blend: Blend) -> np.ndarray:
    """Blend the patch into `roi` (the box's pixels, BGR uint8, modified in place); returns where it changed
    anything (bool [h, w])."""
    h, w = roi.shape[:2]
    placed = place(patch, w, h, crop)
    alpha, rest, changed = box_alpha(w, h, crop, "hard" if blend == "hard" else "feather")
    if blend == "hard":
        np.copyto(roi, placed, where=changed[:, :, None])
    else:
        roi[:] = cv2.blendLinear(placed, roi, alpha, rest)
    return changed


@lru_cache(maxsize=64)
def _region_changes(shape: tuple[int, int], box: tuple[int, int, int, int], crop: CropSpec, blend: Blend
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Where a patch blended into `box` changes a region of `shape`: pixels, and 2x2 blocks holding one."""
    x1, y1, x2, y2 = box
    changed = np.zeros(shape, bool)
    changed[y1:y2, x1:x2] = box_alpha(x2 - x1, y2 - y1, crop, blend)[2]
    blocks = np.asarray(changed.reshape(shape[0] // 2, 2, shape[1] // 2, 2).any(axis=(1, 3)))
    return _frozen(changed, blocks)  # type: ignore[return-value]


def composite(frame: np.ndarray, box: np.ndarray, patch: np.ndarray, crop: CropSpec, blend: Blend) -> np.ndarray:
    """A copy of `frame` with `patch` (BGR uint8 [inner, inner, 3]) blended into the box."""
    x1, y1, x2, y2 = (int(v) for v in box)
    out = frame.copy()
    blend_into(out[y1:y2, x1:x2], patch, crop, blend)
    return out


def composite_i420(frame: TemplateFrame, patch: np.ndarray, crop: CropSpec, blend: Blend,
                   out: np.ndarray | None = None, keep: np.ndarray | None = None) -> np.ndarray:
    """The output picture (I420) of a template frame with `patch` blended into its box.

    Only the box region is composited and converted, and only the pixels the patch changed (the 2x2 blocks
    holding one, for the chroma) are written: everything else is the template's own I420. `keep` (bool, the
    region's size) marks pixels that stay the template's (a protect mask).
    """
    bx1, by1, bx2, by2 = _local_box(frame)
    region = frame.region_bgr.copy()
    blend_into(region[by1:by2, bx1:bx2], patch, crop, blend)
    h, w = region.shape[:2]
    changed, blocks = region_changes(frame, crop, blend)
    if keep is not None:
        np.copyto(region, frame.region_bgr, where=keep[:, :, None])
        changed = changed & ~keep
        blocks = np.asarray(changed.reshape(h // 2, 2, w // 2, 2).any(axis=(1, 3)))
    return write_region(frame, planes(bgr_to_i420(region), w), changed, blocks, out)


def _local_box(frame: TemplateFrame) -> tuple[int, int, int, int]:
    """The frame's box in its region's coordinates."""
    x0, y0 = frame.region[:2]
    x1, y1, x2, y2 = (int(v) for v in frame.box)
    return x1 - x0, y1 - y0, x2 - x0, y2 - y0


def region_changes(frame: TemplateFrame, crop: CropSpec, blend: Blend) -> tuple[np.ndarray, np.ndarray]:
    """Where a patch changes a frame's box region: pixels, and the 2x2 blocks holding one."""
    x0, y0, x1, y1 = frame.region
    return _region_changes((y1 - y0, x1 - x0), _local_box(frame), crop, "hard" if blend == "hard" else "feather")


def write_region(frame: TemplateFrame, region: tuple[np.ndarray, np.ndarray, np.ndarray], changed: np.ndarray,
                 blocks: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The template frame's I420 with the region's planes (Y, U, V) written where the patch changed it."""
    if out is None:
        out = frame.i420.copy()
    else:
        np.copyto(out, frame.i420)
    x0, y0, x1, y1 = frame.region
    for plane, part, s, where in zip(planes(out, frame.width), region, (1, 2, 2), (changed, blocks, blocks),
                                     strict=True):
        np.copyto(plane[y0 // s : y1 // s, x0 // s : x1 // s], part, where=where)
    return out
