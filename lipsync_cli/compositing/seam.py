"""How visible the box is: measured on an output frame against its template frame, in levels (0-255).

`ring_difference`: the mean absolute difference from the template in the outer RING_FRACTION of the box,
where the mouth never reaches (a drifting model or a hard paste shows here). `boundary_step`: how much the
step across the box's edges exceeds the template's own step there (a visible edge shows here).
"""

from __future__ import annotations

import numpy as np

from lipsync_cli.compositing.color_match import RING_FRACTION


def _ring(h: int, w: int) -> np.ndarray:
    dy = np.minimum(np.arange(h), h - 1 - np.arange(h)) < RING_FRACTION * h
    dx = np.minimum(np.arange(w), w - 1 - np.arange(w)) < RING_FRACTION * w
    return dy[:, None] | dx[None, :]


def ring_difference(out: np.ndarray, template: np.ndarray, box) -> float:
    x1, y1, x2, y2 = (int(v) for v in box)
    diff = np.abs(out[y1:y2, x1:x2].astype(np.float32) - template[y1:y2, x1:x2])
    return float(diff[_ring(y2 - y1, x2 - x1)].mean())


def _edge_step(image: np.ndarray, box) -> float:
    x1, y1, x2, y2 = (int(v) for v in box)
    img = image.astype(np.float32)
    h, w = img.shape[:2]
    steps = []
    if x1 > 0:
        steps.append(np.abs(img[y1:y2, x1] - img[y1:y2, x1 - 1]).mean())
    if x2 < w:
        steps.append(np.abs(img[y1:y2, x2 - 1] - img[y1:y2, x2]).mean())
    if y1 > 0:
        steps.append(np.abs(img[y1, x1:x2] - img[y1 - 1, x1:x2]).mean())
    if y2 < h:
        steps.append(np.abs(img[y2 - 1, x1:x2] - img[y2, x1:x2]).mean())
    return float(np.mean(steps)) if steps else 0.0


def patch_box(box, crop) -> tuple[int, int, int, int]:
    """Where the model's patch ends inside the box: the box less the crop border, scaled."""
    x1, y1, x2, y2 = (int(v) for v in box)
    bx, by = round(crop.border * (x2 - x1) / crop.size), round(crop.border * (y2 - y1) / crop.size)
    return x1 + bx, y1 + by, x2 - bx, y2 - by


def boundary_step(out: np.ndarray, template: np.ndarray, box, crop) -> float:
    """Measured across the edges of the patch (where a paste shows), against the template's own step there."""
    edges = patch_box(box, crop)
    return _edge_step(out, edges) - _edge_step(template, edges)


def seam_scores(out: np.ndarray, template: np.ndarray, box, crop) -> tuple[float, float]:
    return ring_difference(out, template, box), boundary_step(out, template, box, crop)
