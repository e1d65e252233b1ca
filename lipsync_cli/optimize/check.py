"""The check of a variant against the float models, on held-out frames (optimize/samples.py).

- PSNR of the mouth patch: the UNet's output in levels (0-255, as the compositor rounds it), over the
  manifest's mask rectangle (where the model draws the mouth), variant against float, over all frames;
- the largest difference of one pixel there, in levels;
- the seam score (compositing/seam.py) of the variant's composited frames, beside the float's: a variant
  whose colours drift near the patch's edge shows a box that the float models do not;
- the mouth-activity correlation (the sync figure): each frame's mouth activity is the mean difference of
  the generated mouth from the reference crop there (how far the mouth is from the still face); the
  Pearson correlation of the variant's activities with the float's over the frames says whether the mouth
  still opens and closes with the speech as the float models make it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from lipsync_cli.characters.manifest import Character
from lipsync_cli.characters.variants import Quality
from lipsync_cli.compositing.blend import composite_i420, to_uint8
from lipsync_cli.compositing.seam import seam_scores
from lipsync_cli.optimize.samples import Samples

PSNR_CAP = 99.0  # identical patches (TOML has no infinity)


@dataclass(frozen=True)
class Patches:
    """The uint8 BGR patches [n, s, s, 3] one model generated for the samples."""

    images: np.ndarray


def generate(run: Callable[[np.ndarray, np.ndarray], np.ndarray], samples: Samples, color: str, batch: int
             ) -> Patches:
    """`run(visual, audio) -> [n, 3, s, s]` over the samples, turned into what the compositor pastes."""
    out: list[np.ndarray] = []
    for visual, features in samples.batches(batch):
        out.extend(to_uint8(p, color) for p in run(visual, features))
    return Patches(np.stack(out))


def _mask(character: Character) -> tuple[slice, slice]:
    x, y, w, h = character.input.mask
    return slice(y, y + h), slice(x, x + w)


def _activity(patches: np.ndarray, samples: Samples, rows: slice, cols: slice) -> np.ndarray:
    reference = np.stack([f.crop for f in samples.frames])[:, rows, cols].astype(np.float32)
    return np.abs(patches[:, rows, cols].astype(np.float32) - reference).mean(axis=(1, 2, 3))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r; where one series does not move at all, 1.0 if both are equal, else 0.0."""
    if a.std() < 1e-6 or b.std() < 1e-6:
        return 1.0 if np.allclose(a, b, atol=0.5) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _seam(character: Character, samples: Samples, patches: np.ndarray) -> tuple[float, float]:
    rings, steps = [], []
    for frame, patch in zip(samples.frames, patches, strict=True):
        out = cv2.cvtColor(composite_i420(frame, patch, character.crop, "feather"), cv2.COLOR_YUV2BGR_I420)
        template = cv2.cvtColor(np.asarray(frame.i420), cv2.COLOR_YUV2BGR_I420)
        ring, step = seam_scores(out, template, frame.box, character.crop)
        rings.append(ring)
        steps.append(step)
    return float(np.mean(rings)), float(np.mean(steps))


def measure(character: Character, samples: Samples, reference: Patches, variant: Patches, min_psnr: float
            ) -> Quality:
    rows, cols = _mask(character)
    a = reference.images[:, rows, cols].astype(np.float64)
    b = variant.images[:, rows, cols].astype(np.float64)
    mse = float(np.mean((a - b) ** 2))
    psnr = PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(255.0**2 / mse))
    sync = correlation(_activity(reference.images, samples, rows, cols), _activity(variant.images, samples, rows, cols))
    ring, step = _seam(character, samples, variant.images)
    float_ring, float_step = _seam(character, samples, reference.images)
    return Quality(psnr_db=round(psnr, 2), max_diff=int(np.abs(a - b).max()), seam_ring=round(ring, 3),
                   seam_step=round(step, 3), float_seam_ring=round(float_ring, 3),
                   float_seam_step=round(float_step, 3), sync=round(sync, 4), frames=len(samples),
                   min_psnr_db=float(min_psnr))
