"""Template frame + box -> the UNet's 6-channel input (SyncTalk_2D conventions by default).

The box is resized to size x size (cubic), the inner (size - 2 * border) square is the reference, and the
same square with the mask rectangle set to 0 is the masked image; float32 in [0, 1], channels first.
"""

from __future__ import annotations

import cv2
import numpy as np

from lipsync_cli.specs import CropSpec, InputSpec


def inner_crop(frame: np.ndarray, box: np.ndarray, crop: CropSpec) -> np.ndarray:
    """uint8 BGR [inner, inner, 3]: the box resized to size x size, less the border."""
    x1, y1, x2, y2 = (int(v) for v in box)
    resized = cv2.resize(frame[y1:y2, x1:x2], (crop.size, crop.size), interpolation=cv2.INTER_CUBIC)
    return resized[crop.border : crop.border + crop.inner, crop.border : crop.border + crop.inner]


def fill_visual_input(out: np.ndarray, image: np.ndarray, spec: InputSpec) -> None:
    """Write the [6, inner, inner] float32 input of an inner crop into `out`: the reference and the masked
    image in the manifest's order and colour, in [0, 1]."""
    channels = cv2.split(image)
    if spec.color == "rgb":
        channels = channels[::-1]
    ref, masked = (0, 3) if spec.channels[0] == "reference" else (3, 0)
    for c, plane in enumerate(channels):  # plane by plane: contiguous, unlike a transposed conversion
        np.multiply(plane, np.float32(1 / 255), out=out[ref + c], casting="unsafe")
    out[masked : masked + 3] = out[ref : ref + 3]
    x, y, w, h = spec.mask
    out[masked : masked + 3, y : y + h, x : x + w] = 0.0


def visual_input(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """[6, inner, inner] float32 input of one inner crop."""
    out = np.empty((6, *image.shape[:2]), np.float32)
    fill_visual_input(out, image, spec)
    return out
