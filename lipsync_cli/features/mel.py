"""The mel-spectrogram of the Wav2Lip / SyncTalk_2D "hparams" family (design.md section 2).

pre-emphasis 0.97 -> n_fft/2 padding -> |STFT| (periodic Hann 800, hop 200) -> 80 Slaney mel bins
(55-7600 Hz) -> 20*log10(max(1e-5, mel)) - 20 -> clip(8 * (S + 100) / 100 - 4, -4, 4).

`mel_spectrogram` does a whole signal at once; `MelStream` does the same signal fed in chunks of any size
and gives the same frames, carrying the pre-emphasis state and the STFT context across chunk borders.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from lipsync_cli.specs import PadMode

SAMPLE_RATE = 16_000
N_FFT = 800
HOP = 200
N_MELS = 80
FMIN, FMAX = 55.0, 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB, REF_LEVEL_DB, MAX_ABS = -100.0, 20.0, 4.0
FRAMES_PER_SECOND = SAMPLE_RATE // HOP  # 80
_PAD = N_FFT // 2
_FLOOR_DB = 20 * np.log10(1e-5)  # amplitude floor, min_level_db


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney's Auditory Toolbox scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    mel = hz / f_sp
    above = hz >= min_log_hz
    mel[above] = min_log_mel + np.log(hz[above] / min_log_hz) / logstep
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    hz = f_sp * mel
    above = mel >= min_log_mel
    hz[above] = min_log_hz * np.exp(logstep * (mel[above] - min_log_mel))
    return hz


@lru_cache(maxsize=4)
def mel_filterbank(
    sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = FMIN, fmax: float = FMAX
) -> np.ndarray:
    """Triangular Slaney-scale filters with Slaney area normalisation, shape [n_mels, 1 + n_fft // 2], float64."""
    fft_hz = np.linspace(0, sr / 2, 1 + n_fft // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array([fmin]))[0], _hz_to_mel(np.array([fmax]))[0], n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights.flags.writeable = False
    return weights


@lru_cache(maxsize=1)
def hann_window() -> np.ndarray:
    """Periodic Hann window of N_FFT (scipy.signal.get_window("hann", 800), computed without scipy.signal,
    whose import alone takes a second)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)


def preemphasis(x: np.ndarray) -> np.ndarray:
    """y[n] = x[n] - 0.97 x[n-1] with x[-1] = 0, in float64 (what lfilter([1, -0.97], [1], x) computes)."""
    x = np.asarray(x, dtype=np.float64)
    y = x.copy()
    y[1:] -= PREEMPHASIS * x[:-1]
    return y


class Workspace:
    """Arrays reused from call to call: fresh ones of this size cost page faults on every chunk."""

    def __init__(self) -> None:
        self.rows = 0

    def take(self, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if rows > self.rows:
            self.rows = max(rows, 64)
            self.windowed = np.empty((self.rows, N_FFT))
            self.spectrum = np.empty((self.rows, N_FFT // 2 + 1), np.complex128)
            self.magnitude = np.empty((self.rows, N_FFT // 2 + 1))
            self.mel = np.empty((self.rows, N_MELS))
        return self.windowed[:rows], self.spectrum[:rows], self.magnitude[:rows], self.mel[:rows]


def frames_to_mel(padded: np.ndarray, n_frames: int, workspace: Workspace | None = None) -> np.ndarray:
    """Normalised mel frames [n_frames, 80] from a padded signal whose frame 0 starts at index 0."""
    if n_frames <= 0:
        return np.zeros((0, N_MELS), np.float32)
    segments = sliding_window_view(padded[: (n_frames - 1) * HOP + N_FFT], N_FFT)[::HOP]
    windowed, spectrum, magnitude, mel = (workspace or Workspace()).take(n_frames)
    np.multiply(segments, hann_window(), out=windowed)
    np.fft.rfft(windowed, axis=1, out=spectrum)
    np.abs(spectrum, out=magnitude)
    np.matmul(magnitude, mel_filterbank().T, out=mel)
    db = 20.0 * np.log10(np.maximum(mel, 1e-5)) - REF_LEVEL_DB
    norm = 2 * MAX_ABS * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS
    return np.clip(norm, -MAX_ABS, MAX_ABS).astype(np.float32, copy=False)


def frame_count(n_samples: int) -> int:
    """Mel frames of a signal of n 16 kHz samples (librosa's centred STFT)."""
    return 1 + n_samples // HOP


SILENCE_FRAME_VALUE = -MAX_ABS  # the normalised mel of digital silence


def mel_spectrogram(x: np.ndarray, pad_mode: PadMode = "constant") -> np.ndarray:
    """The normalised mel-spectrogram [1 + len(x) // 200, 80] of a whole 16 kHz signal."""
    emphasised = preemphasis(x)
    padded = np.pad(emphasised, _PAD, mode=pad_mode)
    return frames_to_mel(padded, frame_count(len(x)))


class MelStream:
    """Mel frames of a signal that arrives in chunks; the frames equal `mel_spectrogram`'s.

    `push` returns the frames that the samples so far complete; `finish` the rest, up to
    `frame_count(n)`; `beyond(count)` frames past the end, as if the padded signal continued in silence.
    """

    def __init__(self, pad_mode: PadMode = "constant") -> None:
        if pad_mode not in ("constant", "reflect"):
            raise ValueError(f"pad_mode must be 'constant' or 'reflect', not {pad_mode!r}")
        self.pad_mode = pad_mode
        self.samples = 0
        self.frames = 0  # frames returned so far
        self._last = 0.0
        self._head: np.ndarray | None = None if pad_mode == "constant" else np.zeros(0)
        self._buf = np.zeros(_PAD if pad_mode == "constant" else 0)
        self._buf_start = 0  # padded-signal index of _buf[0]
        self._finished = False
        self._workspace = Workspace()

    def _emphasise(self, x: np.ndarray) -> np.ndarray:
        out = np.empty_like(x)
        out[0] = x[0] - PREEMPHASIS * self._last
        np.subtract(x[1:], PREEMPHASIS * x[:-1], out=out[1:])
        self._last = x[-1]
        return out

    def _take(self, limit: int | None) -> np.ndarray:
        available = (self._buf_start + len(self._buf) - N_FFT) // HOP + 1
        count = available - self.frames if limit is None else min(available, limit) - self.frames
        if count <= 0:
            return np.zeros((0, N_MELS), np.float32)
        offset = self.frames * HOP - self._buf_start
        out = frames_to_mel(self._buf[offset:], count, self._workspace)
        self.frames += count
        drop = self.frames * HOP - self._buf_start
        self._buf, self._buf_start = self._buf[drop:], self._buf_start + drop
        return out

    def push(self, chunk: np.ndarray) -> np.ndarray:
        if self._finished:
            raise RuntimeError("MelStream.push after finish")
        x = np.asarray(chunk, dtype=np.float64).ravel()
        if not len(x):
            return np.zeros((0, N_MELS), np.float32)
        emphasised = self._emphasise(x)
        self.samples += len(x)
        if self._head is not None:  # reflect padding needs samples 1..400 before frame 0 exists
            self._head = np.concatenate([self._head, emphasised])
            if len(self._head) <= _PAD:
                return np.zeros((0, N_MELS), np.float32)
            emphasised = np.concatenate([self._head[_PAD:0:-1], self._head])
            self._head = None
        self._buf = np.concatenate([self._buf, emphasised])
        return self._take(None)

    def finish(self) -> np.ndarray:
        """The remaining frames up to frame_count(samples)."""
        if self._finished:
            return np.zeros((0, N_MELS), np.float32)
        self._finished = True
        total = frame_count(self.samples)
        if self._head is not None:  # a signal too short to have started: pad it whole
            self._buf = np.pad(self._head, _PAD, mode="reflect") if len(self._head) else np.zeros(N_FFT)
            self._head = None
        elif self.pad_mode == "reflect":
            tail = self._buf[-(_PAD + 1) : -1][::-1]
            self._buf = np.concatenate([self._buf, tail])
        else:
            self._buf = np.concatenate([self._buf, np.zeros(_PAD)])
        return self._take(total)

    def beyond(self, count: int) -> np.ndarray:
        """`count` frames after the last one returned, the padded signal continuing with zeros."""
        if not self._finished:
            raise RuntimeError("MelStream.beyond before finish")
        if count <= 0:
            return np.zeros((0, N_MELS), np.float32)
        need = (self.frames + count - 1) * HOP + N_FFT - self._buf_start
        if need > len(self._buf):
            self._buf = np.concatenate([self._buf, np.zeros(need - len(self._buf))])
        return self._take(self.frames + count)
