"""The two audio-feature layouts a UNet may want (design.md section 3).

- "per_frame": audio input [N, 512]; frame i gets the encoder output of its own window.
- "synctalk": audio input [N, 32, 16, 16] (SyncTalk_2D "ave" mode, `get_audio_features` in
  inference_328.py): the encoder outputs f_0 .. f_{n-1} are padded to p = [f_0, f_0, f_1, ..., f_{n-1},
  f_{n-1}]; frame i takes rows p[i-8 .. i+7] (zeros outside p), [16, 512] reshaped to [32, 16, 16].
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Layout = Literal["per_frame", "synctalk"]
FEATURES = 512
SYNCTALK_SHAPE = (32, 16, 16)
_BEFORE, _AFTER = 8, 7  # rows p[i-8 .. i+7]


def detect_layout(audio_shape: tuple) -> Layout | None:
    """The layout of a UNet's audio input from its shape (batch axis first, symbolic dims allowed)."""
    tail = tuple(audio_shape[1:])
    if tail == (FEATURES,):
        return "per_frame"
    if tail == SYNCTALK_SHAPE:
        return "synctalk"
    return None


def _padded_row(features: np.ndarray, j: int, n: int) -> np.ndarray | None:
    """p[j] of the padded list, or None (zeros) outside it."""
    if j < 0 or j > n + 1:
        return None
    return features[min(max(j - 1, 0), n - 1)]


def synctalk_gather(features: np.ndarray, i: int) -> np.ndarray:
    """SyncTalk_2D audio input [32, 16, 16] of frame i from all encoder outputs [n, 512]."""
    n = len(features)
    out = np.zeros((_BEFORE + _AFTER + 1, FEATURES), np.float32)
    for row, j in enumerate(range(i - _BEFORE, i + _AFTER + 1)):
        value = _padded_row(features, j, n)
        if value is not None:
            out[row] = value
    return out.reshape(SYNCTALK_SHAPE)


class SyncTalkGatherer:
    """`synctalk_gather` over a stream: push encoder outputs in order, get frames as their rows exist."""

    def __init__(self) -> None:
        self._rows = np.zeros((0, FEATURES), np.float32)  # f[base ..]
        self._base = 0
        self._count = 0  # encoder outputs pushed
        self._next = 0  # next frame to emit

    def _gather(self, i: int, n: int | None) -> np.ndarray:
        out = np.zeros((_BEFORE + _AFTER + 1, FEATURES), np.float32)
        for row, j in enumerate(range(i - _BEFORE, i + _AFTER + 1)):
            if j < 0 or (n is not None and j > n + 1):
                continue
            k = max(j - 1, 0) if n is None else min(max(j - 1, 0), n - 1)
            out[row] = self._rows[k - self._base]
        return out.reshape(SYNCTALK_SHAPE)

    def _emit(self, last: int, n: int | None) -> np.ndarray:
        out = [self._gather(i, n) for i in range(self._next, last)]
        self._next = max(self._next, last)
        keep_from = max(0, self._next - _BEFORE - 1)
        if keep_from > self._base:
            self._rows, self._base = self._rows[keep_from - self._base :], keep_from
        return np.stack(out) if out else np.zeros((0, *SYNCTALK_SHAPE), np.float32)

    def push(self, features: np.ndarray) -> np.ndarray:
        """Frames [k, 32, 16, 16] whose rows are all known (frame i needs f up to i + 6)."""
        self._rows = np.concatenate([self._rows, np.asarray(features, np.float32).reshape(-1, FEATURES)])
        self._count += len(features)
        return self._emit(self._count - _AFTER + 1, None)

    def finish(self) -> np.ndarray:
        return self._emit(self._count, self._count) if self._count else np.zeros((0, *SYNCTALK_SHAPE), np.float32)
