"""`match` blending: the patch's colours corrected to the template's before feathering, so a model whose
colours drift shows no lighter or darker box.

The statistics come from the patch's outer ring (the outer RING_FRACTION of each side), which the model
should return unchanged (the mouth is far from it), compared with the same ring of the template crop the
model was given: per channel in Lab, the mean is moved and the spread scaled (within GAIN_LIMITS, so the
mouth keeps its contrast), and the correction is applied to the whole patch. It is smoothed over time
(an exponential average over frames), so consecutive frames do not jump.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

RING_FRACTION = 0.2
GAIN_LIMITS = (0.8, 1.25)
SMOOTHING = 0.25  # weight of the newest frame in the running correction


@lru_cache(maxsize=8)
def ring_mask(side: int) -> np.ndarray:
    """bool [side, side]: the outer RING_FRACTION of the square."""
    d = np.minimum(np.arange(side), side - 1 - np.arange(side))
    near = d < RING_FRACTION * side
    mask = near[:, None] | near[None, :]
    mask.flags.writeable = False
    return mask


def _lab(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_BGR2LAB)


class ColorMatcher:
    """One per render: it carries the smoothed correction from frame to frame."""

    def __init__(self) -> None:
        self.state: np.ndarray | None = None  # patch mean [3], template mean [3], gain [3]

    def __call__(self, patch: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """`patch` (BGR uint8 [s, s, 3]) with its colours matched to `reference`, the template crop."""
        ring = ring_mask(patch.shape[0])
        p, t = _lab(patch), _lab(reference)
        p_ring, t_ring = p[ring], t[ring]
        gain = np.clip((t_ring.std(axis=0) + 1e-3) / (p_ring.std(axis=0) + 1e-3), *GAIN_LIMITS)
        params = np.concatenate([p_ring.mean(axis=0), t_ring.mean(axis=0), gain])
        self.state = params if self.state is None else (1 - SMOOTHING) * self.state + SMOOTHING * params
        p_mean, t_mean, gain = self.state[:3], self.state[3:6], self.state[6:]
        corrected = ((p - p_mean) * gain + t_mean).astype(np.float32)
        bgr = cv2.cvtColor(corrected, cv2.COLOR_LAB2BGR)
        return cv2.convertScaleAbs(np.clip(bgr, 0.0, 1.0), alpha=255.0)
