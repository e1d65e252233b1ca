"""The shipped pre- and post-processing graphs (models/graphs/processing.py says what they compute), and the
host-side inputs they take for a character."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lipsync_cli.specs import CropSpec, InputSpec

FOLDER = Path(__file__).resolve().parent
PREPARE = FOLDER / "prepare.onnx"
COMPOSITE = FOLDER / "composite.onnx"


def prepare_inputs(spec: InputSpec, inner: int) -> dict[str, np.ndarray]:
    """The constant inputs of `prepare` for a character: plane order and mask."""
    colour = [0, 1, 2] if spec.color == "bgr" else [2, 1, 0]
    ref, masked = colour, [c + 3 for c in colour]
    planes = ref + masked if spec.channels[0] == "reference" else masked + ref
    mask = np.ones((1, 1, inner, inner), np.float32)
    x, y, w, h = spec.mask
    mask[..., y : y + h, x : x + w] = 0.0
    return {"planes": np.array(planes, np.int64), "mask": mask}


def composite_inputs(spec: InputSpec, crop: CropSpec, alpha: np.ndarray, hard: bool) -> dict[str, np.ndarray]:
    """The per-character inputs of `composite`: colour order, crop border, alpha mask, hard or not."""
    b = crop.border
    return {"colors": np.array([0, 1, 2] if spec.color == "bgr" else [2, 1, 0], np.int64),
            "pads": np.array([0, 0, b, b, 0, 0, b, b], np.int64),
            "alpha": np.ascontiguousarray(alpha[None, None], np.float32),
            "hard": np.array([1.0 if hard else 0.0], np.float32)}
