"""`match` blending: the patch's colours corrected to the template's before feathering, so a model whose
colours drift shows no lighter or darker box.

The statistics come from the patch's outer ring (the outer RING_FRACTION of each side), which the model
should return unchanged (the mouth is far from it), compared with the same ring of the template crop the
model was given: per channel in Lab, the mean is moved and the spread scaled (within GAIN_LIMITS, so the
mouth keeps its contrast), and the correction is applied to the whole patch. It is smoothed over time
(an exponential average over frames), so consecutive frames do not jump.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@lru_cache(maxsize=8)
def _ring_u8(side: int) -> np.ndarray:
    return ring_mask(side).astype(np.uint8)


def ring_stats(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation [3] of a Lab image's outer ring."""
    mean, std = cv2.meanStdDev(lab, mask=_ring_u8(lab.shape[0]))
    return mean.ravel(), std.ravel()


def _lab(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_BGR2LAB)


@dataclass(frozen=True)
class Measured:
    """One patch's Lab pixels and the ring statistics of it and of its template crop."""

    lab: np.ndarray
    stats: np.ndarray  # patch mean [3], template mean [3], gain [3]


def crop_ring(crop: np.ndarray) -> np.ndarray:
    """float64 [6]: mean and standard deviation of a template crop's ring in Lab (kept with the frame)."""
    return np.concatenate(ring_stats(_lab(crop)))


def measure(patch: np.ndarray, reference_ring: np.ndarray) -> Measured:
    """The statistics of `patch` (BGR uint8 [s, s, 3]) beside those of the template crop it came from."""
    lab = _lab(patch)
    p_mean, p_std = ring_stats(lab)
    t_mean, t_std = reference_ring[:3], reference_ring[3:]
    gain = np.clip((t_std + 1e-3) / (p_std + 1e-3), *GAIN_LIMITS)
    return Measured(lab, np.concatenate([p_mean, t_mean, gain]))


def apply(measured: Measured, correction: np.ndarray) -> np.ndarray:
    """The patch with a (smoothed) correction applied: per Lab channel (p - p_mean) * gain + t_mean."""
    p_mean, t_mean, gain = correction[:3], correction[3:6], correction[6:]
    affine = np.hstack([np.diag(gain), (t_mean - p_mean * gain)[:, None]])
    bgr = cv2.cvtColor(cv2.transform(measured.lab, affine), cv2.COLOR_LAB2BGR)
    return cv2.convertScaleAbs(np.clip(bgr, 0.0, 1.0), alpha=255.0)


class ColorMatcher:
    """One per render: it carries the smoothed correction from frame to frame. `measure` and `apply` may run
    on other threads; `smooth` must see the frames in order."""

    def __init__(self) -> None:
        self.state: np.ndarray | None = None

    def smooth(self, measured: Measured) -> np.ndarray:
        params = measured.stats
        self.state = params if self.state is None else (1 - SMOOTHING) * self.state + SMOOTHING * params
        return self.state

    def __call__(self, patch: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """`patch` (BGR uint8 [s, s, 3]) with its colours matched to `reference`, the template crop."""
        measured = measure(patch, crop_ring(reference))
        return apply(measured, self.smooth(measured))
