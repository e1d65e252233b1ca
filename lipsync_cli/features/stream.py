"""Mel windows -> the UNet's audio inputs, for one contiguous signal, in batches that carry the index of
their first frame (design.md section 3). The encoder is a callable (windows [k, 80, 16] -> [k, 512]), so
this layer needs no model; the file pipeline and live sessions feed it alike."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from lipsync_cli.features.layouts import Layout, SyncTalkGatherer


@dataclass(frozen=True)
class FeatureBatch:
    """Audio inputs of consecutive frames first .. first + len - 1, in the UNet's layout."""

    first: int
    features: np.ndarray

    def __len__(self) -> int:
        return len(self.features)


class FeatureStream:
    def __init__(self, encode: Callable[[np.ndarray], np.ndarray], layout: Layout) -> None:
        self.encode = encode
        self._gatherer = SyncTalkGatherer() if layout == "synctalk" else None
        self._next = 0

    def _batch(self, features: np.ndarray) -> FeatureBatch | None:
        if not len(features):
            return None
        batch = FeatureBatch(self._next, features)
        self._next += len(features)
        return batch

    def push(self, windows: np.ndarray) -> FeatureBatch | None:
        """Windows of the next frames -> the inputs of the frames they complete (SyncTalk_2D's layout needs
        seven frames more)."""
        if not len(windows):
            return None
        features = self.encode(windows)
        return self._batch(self._gatherer.push(features) if self._gatherer else features)

    def finish(self) -> FeatureBatch | None:
        return self._batch(self._gatherer.finish()) if self._gatherer else None


def rebatch(batches: Iterable[FeatureBatch], size: int) -> Iterator[FeatureBatch]:
    """Consecutive batches regrouped into batches of exactly `size` frames (the last may be shorter)."""
    held: list[np.ndarray] = []
    first = count = 0
    for batch in batches:
        if not held:
            first = batch.first
        held.append(batch.features)
        count += len(batch)
        if count >= size:
            joined = np.concatenate(held)
            cut = count - count % size
            for i in range(0, cut, size):
                yield FeatureBatch(first + i, joined[i : i + size])
            first, held, count = first + cut, [joined[cut:]] if cut < count else [], count - cut
    if count:
        yield FeatureBatch(first, np.concatenate(held))
