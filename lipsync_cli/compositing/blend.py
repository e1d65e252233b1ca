"""Put the generated mouth patch back into the template frame.

The patch is the inner square of the resized box, so it maps to the box shrunk by the border; it is
warped there with sub-pixel accuracy (the exact inverse of the crop's resize), and only what the model
produced is used. `feather` blends with an alpha that is 1 inside and falls smoothly to 0 at the patch
edge (no visible box); `hard` pastes it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import cv2
import numpy as np

from lipsync_cli.characters.manifest import CropSpec
from lipsync_cli.encoding.yuv import bgr_to_i420, planes
from lipsync_cli.frames.template import TemplateFrame

Blend = Literal["match", "feather", "hard"]  # match: feather after correcting the patch's colours
FEATHER_FRACTION = 0.12  # of the patch side


def to_uint8(patch: np.ndarray, color: str = "bgr") -> np.ndarray:
    """UNet output [3, h, w] in [0, 1] -> BGR uint8 [h, w, 3], rounded half to even, saturated."""
    channels = [cv2.convertScaleAbs(np.maximum(np.asarray(c, np.float32), 0.0), alpha=255.0) for c in patch]
    return cv2.merge(channels[::-1] if color == "rgb" else channels)


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


def composite(frame: np.ndarray, box: np.ndarray, patch: np.ndarray, crop: CropSpec, blend: Blend) -> np.ndarray:
    """A copy of `frame` with `patch` (BGR uint8 [inner, inner, 3]) blended into the box."""
    x1, y1, x2, y2 = (int(v) for v in box)
    w, h = x2 - x1, y2 - y1
    sx, sy = w / crop.size, h / crop.size
    # patch pixel p sits at box coordinate (p + border + 0.5) * scale - 0.5 (cv2.resize's pixel centres)
    matrix = np.array([[sx, 0.0, (crop.border + 0.5) * sx - 0.5], [0.0, sy, (crop.border + 0.5) * sy - 0.5]])
    warped = cv2.warpAffine(patch, matrix, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    alpha_flags = cv2.INTER_NEAREST if blend == "hard" else cv2.INTER_LINEAR
    alpha = cv2.warpAffine(feather_mask(crop.inner, blend), matrix, (w, h), flags=alpha_flags,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    out = frame.copy()
    roi = out[y1:y2, x1:x2]
    if blend == "hard":
        np.copyto(roi, warped, where=alpha[:, :, None] > 0.5)
    else:
        roi[:] = cv2.blendLinear(warped, roi, alpha, 1.0 - alpha)
    return out


def composite_i420(frame: TemplateFrame, patch: np.ndarray, crop: CropSpec, blend: Blend,
                   out: np.ndarray | None = None, keep: np.ndarray | None = None) -> np.ndarray:
    """The output picture (I420) of a template frame with `patch` blended into its box.

    Only the box region is composited and converted; the rest is the template's own I420, which the
    region's conversion reproduces exactly (per-pixel luma, chroma of 2x2 blocks aligned to the region).
    `keep` (bool, the region's size) marks pixels that stay the template's (a protect mask).
    """
    x0, y0, x1, y1 = frame.region
    box = frame.box - np.array([x0, y0, x0, y0])
    blended = composite(frame.region_bgr, box, patch, crop, blend)
    if keep is not None:
        np.copyto(blended, frame.region_bgr, where=keep[:, :, None])
    region = bgr_to_i420(blended)
    if out is None:
        out = frame.i420.copy()
    else:
        np.copyto(out, frame.i420)
    for plane, part, s in zip(planes(out, frame.width), planes(region, x1 - x0), (1, 2, 2), strict=True):
        plane[y0 // s : y1 // s, x0 // s : x1 // s] = part
    return out
