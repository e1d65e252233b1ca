"""Mono audio at any rate -> 16 kHz (or another target), pushed in chunks of any size, with the result of
resampling the whole signal at once (design.md section 2). Files and live sessions both resample through this;
a live session also returns each frame's audio at a rate of the caller's choosing through it.

- soxr (the default): soxr's streaming resampler at HQ quality, then zeros up to ceil(n * 16000 / rate) as
  `librosa.load(path, sr=16000)` pads; its output does not depend on the chunk borders.
- polyphase: scipy's `resample_poly`, block by block with enough context either side that every sample
  equals the whole-signal result; a block is resampled once the context after it has arrived, the last
  ones at `finish`.
"""

from __future__ import annotations

import math

import numpy as np

from lipsync_cli.specs import Resampler

TARGET_RATE = 16_000
BLOCK = 1 << 16


def ratio(rate: int, target: int = TARGET_RATE) -> tuple[int, int]:
    g = math.gcd(target, rate)
    return target // g, rate // g


def resampled_length(frames: int, rate: int, target: int = TARGET_RATE) -> int:
    up, down = ratio(rate, target)
    return math.ceil(frames * up / down)


class StreamResampler:
    def __init__(self, rate: int, resampler: Resampler = "soxr", target: int = TARGET_RATE) -> None:
        self.rate, self.resampler, self.target = rate, resampler, target
        self.up, self.down = ratio(rate, target)
        self.taken = 0  # input samples pushed
        self.given = 0  # output samples returned
        self._soxr = None
        if self.up != self.down and resampler == "soxr":
            import soxr

            self._soxr = soxr.ResampleStream(rate, target, 1, dtype="float32", quality="HQ")
        # polyphase: resample_poly's FIR reaches half_len samples of the up-sampled signal either side
        half_len = 10 * max(self.up, self.down)
        self._margin = math.ceil((math.ceil(half_len / self.up) + 2) / self.down) * self.down
        self._step = max(1, BLOCK // self.down) * self.down  # a multiple of down keeps the phase
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0
        self._next_block = 0  # input index of the next polyphase block
        self._finished = False

    def push(self, x: np.ndarray) -> np.ndarray:
        """Samples at the target rate that the input so far completes."""
        if self._finished:
            raise RuntimeError("StreamResampler.push after finish")
        x = np.asarray(x, np.float32).ravel()
        self.taken += len(x)
        if self.up == self.down:
            return self._give(x)
        if self._soxr is not None:
            return self._give(self._soxr.resample_chunk(x, last=False))
        self._buf = np.concatenate([self._buf, x])
        return self._give(self._blocks(final=False))

    def finish(self) -> np.ndarray:
        """The rest, up to ceil(n * target / rate) samples for the n pushed."""
        if self._finished:
            return np.zeros(0, np.float32)
        self._finished = True
        if self.up == self.down:
            return np.zeros(0, np.float32)
        if self._soxr is not None:
            out = self._soxr.resample_chunk(np.zeros(0, np.float32), last=True)
        else:
            out = self._blocks(final=True)
        missing = resampled_length(self.taken, self.rate, self.target) - self.given - len(out)
        if missing > 0:  # librosa.load pads soxr's output to its ceil length with zeros
            out = np.concatenate([out, np.zeros(missing, np.float32)])
        return self._give(out)

    def _give(self, out: np.ndarray) -> np.ndarray:
        self.given += len(out)
        return out

    def _blocks(self, final: bool) -> np.ndarray:
        from scipy.signal import resample_poly  # imported only when needed: scipy.signal takes a second to load

        n = self.taken
        up, down, margin = self.up, self.down, self._margin
        n_out = resampled_length(n, self.rate, self.target)
        out = []
        while self._next_block < n:
            a = self._next_block
            b = min(n, a + self._step)
            if not final and b + margin > n:
                break  # its context after it has not arrived yet
            lo, hi = max(0, a - margin), min(n, b + margin)
            part = self._buf[lo - self._buf_start : hi - self._buf_start]
            y = resample_poly(part, up, down).astype(np.float32, copy=False)
            k0, k1 = a * up // down, (n_out if b == n else b * up // down)
            off = lo * up // down
            out.append(y[k0 - off : k1 - off])
            self._next_block = b
            keep = max(0, self._next_block - margin)
            if keep > self._buf_start:
                self._buf, self._buf_start = self._buf[keep - self._buf_start :], keep
        return np.concatenate(out) if out else np.zeros(0, np.float32)
