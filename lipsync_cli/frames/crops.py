"""Template frame + box -> the UNet's 6-channel input (SyncTalk_2D conventions by default).

The box is resized to size x size (cubic), the inner (size - 2 * border) square is the reference, and the
same square with the mask rectangle set to 0 is the masked image; float32 in [0, 1], channels first.
"""

from __future__ import annotations

import cv2
import numpy as np

from lipsync_cli.characters.manifest import CropSpec, InputSpec


def inner_crop(frame: np.ndarray, box: np.ndarray, crop: CropSpec) -> np.ndarray:
    x1, y1, x2, y2 = (int(v) for v in box)
    resized = cv2.resize(frame[y1:y2, x1:x2], (crop.size, crop.size), interpolation=cv2.INTER_CUBIC)
    return resized[crop.border : crop.border + crop.inner, crop.border : crop.border + crop.inner]


def visual_input(frame: np.ndarray, box: np.ndarray, crop: CropSpec, spec: InputSpec) -> np.ndarray:
    """[6, inner, inner] float32: the reference and masked images in the manifest's order and colour."""
    image = inner_crop(frame, box, crop)
    if spec.color == "rgb":
        image = image[:, :, ::-1]
    out = np.empty((6, crop.inner, crop.inner), np.float32)
    ref, masked = (0, 3) if spec.channels[0] == "reference" else (3, 0)
    np.multiply(image.transpose(2, 0, 1), np.float32(1 / 255), out=out[ref : ref + 3], casting="unsafe")
    out[masked : masked + 3] = out[ref : ref + 3]
    x, y, w, h = spec.mask
    out[masked : masked + 3, y : y + h, x : x + w] = 0.0
    return out
