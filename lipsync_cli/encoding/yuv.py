"""BGR -> I420 (planar YUV 4:2:0) with BT.601 limited-range coefficients.

These are the numbers ffmpeg's swscale uses by default for bgr24 -> yuv420p, so handing ffmpeg I420
ourselves gives the same picture while skipping its per-frame conversion, and lets the renderer convert
each template frame once and only the box region of each output frame.
"""

from __future__ import annotations

import cv2
import numpy as np

_CHROMA_SCALE = 224 / 255  # full-range chroma (JPEG YCrCb) -> limited range, around 128


def even(n: int) -> int:
    return n + (n & 1)


def bgr_to_i420(bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 [h, w, 3] with even h and w -> I420 uint8 [h * 3 // 2, w] (Y, then U, then V planes)."""
    h, w = bgr.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"I420 needs an even size, got {w}x{h}")
    out = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)  # its luma is BT.601 limited range
    # OpenCV point-samples the chroma; ffmpeg averages each 2x2 block: take the block means' chroma
    small = cv2.resize(bgr, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    ycrcb = cv2.cvtColor(small, cv2.COLOR_BGR2YCrCb)
    beta = 128 * (1 - _CHROMA_SCALE)
    _, u, v = planes(out, w)
    u[:] = cv2.convertScaleAbs(ycrcb[:, :, 2], alpha=_CHROMA_SCALE, beta=beta)
    v[:] = cv2.convertScaleAbs(ycrcb[:, :, 1], alpha=_CHROMA_SCALE, beta=beta)
    return out


def planes(i420: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y [h, w], U [h/2, w/2] and V [h/2, w/2] planes of an I420 frame."""
    h = i420.shape[0] * 2 // 3
    flat = i420.reshape(-1)
    y = flat[: h * width].reshape(h, width)
    quarter = (h // 2) * (width // 2)
    u = flat[h * width : h * width + quarter].reshape(h // 2, width // 2)
    v = flat[h * width + quarter :].reshape(h // 2, width // 2)
    return y, u, v


def pad_even(bgr: np.ndarray) -> np.ndarray:
    """Pad with black to an even size (H.264 4:2:0 needs one); never resamples."""
    h, w = bgr.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return bgr
    return cv2.copyMakeBorder(bgr, 0, h & 1, 0, w & 1, cv2.BORDER_CONSTANT, value=(0, 0, 0))
