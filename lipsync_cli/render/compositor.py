"""Patches into template frames, for one output stream: the colour match smooths its correction from frame
to frame, so a stream has one compositor and hands it its frames in order."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lipsync_cli.characters.manifest import Character
from lipsync_cli.compositing.blend import Blend, composite_i420, region_changes, to_uint8, write_region
from lipsync_cli.compositing.color_match import ColorMatcher, apply, measure
from lipsync_cli.frames.template import TemplateFrame
from lipsync_cli.models.device_chain import RegionPlanes
from lipsync_cli.render.renderer import Patch
from lipsync_cli.stages import BufferPool, ordered_map


class Compositor:
    def __init__(self, character: Character, blend: Blend, pool: BufferPool | None = None) -> None:
        self.character, self.pool = character, pool
        self.matcher = ColorMatcher() if blend == "match" else None
        self.blend: Blend = "feather" if blend == "match" else blend

    def _measured(self, item: tuple[TemplateFrame, Patch]) -> tuple:
        frame, patch = item
        if isinstance(patch, RegionPlanes):
            return frame, patch, None
        image = to_uint8(patch, self.character.input.color)
        return frame, image, measure(image, frame.ring) if self.matcher is not None else None

    def _smoothed(self, item: tuple) -> tuple:
        frame, image, facts = item
        correction = self.matcher.smooth(facts) if self.matcher is not None and facts is not None else None
        return frame, image, facts, correction

    def _composited(self, item: tuple) -> np.ndarray:
        frame, image, facts, correction = item
        out = self.pool.take() if self.pool is not None else None
        crop = self.character.crop
        if isinstance(image, RegionPlanes):  # blended on the device (never with a protect mask)
            return write_region(frame, (image.y, image.u, image.v), *region_changes(frame, crop, self.blend), out)
        if facts is not None:
            image = apply(facts, correction)
        keep = self.character.protect_mask(frame.index, frame.region)
        return composite_i420(frame, image, crop, self.blend, out, keep)

    def one(self, frame: TemplateFrame, patch: Patch) -> np.ndarray:
        """The next frame of the stream, I420 [H * 3 // 2, W]."""
        return self._composited(self._smoothed(self._measured((frame, patch))))

    def stream(self, items: Iterator[tuple[TemplateFrame, Patch]], threads: int = 1) -> Iterator[np.ndarray]:
        """Every frame of `items`, on `threads` threads; only the smoothing runs in order, between measuring
        and applying."""
        workers = max(1, threads)
        executor = ThreadPoolExecutor(workers, thread_name_prefix="lipsync-composite") if workers > 1 else None
        ahead = 2 * workers
        try:
            measured = ordered_map(self._measured, items, executor, ahead)
            yield from ordered_map(self._composited, map(self._smoothed, measured), executor, ahead)
        finally:
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
            close = getattr(items, "close", None)
            if close is not None:
                close()
