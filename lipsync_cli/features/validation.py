"""Is our mel the reference's? Compare it with librosa's pipeline, a given .npy, and our own chunked stream."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from lipsync_cli.audio.loading import CHUNK_SAMPLES, AudioInfo, Resampler, read_native, stream_audio
from lipsync_cli.errors import InputError
from lipsync_cli.features.mel import (
    FMAX,
    FMIN,
    HOP,
    MAX_ABS,
    MIN_LEVEL_DB,
    N_FFT,
    N_MELS,
    PREEMPHASIS,
    REF_LEVEL_DB,
    SAMPLE_RATE,
    MelStream,
    PadMode,
    mel_spectrogram,
)

REFERENCE_TOLERANCE = 1e-4  # max abs difference against librosa or a given reference
CHUNKED_TOLERANCE = 1e-6  # max abs difference of the chunked stream against the whole file


@dataclass(frozen=True)
class Comparison:
    name: str
    max_abs: float
    mean_abs: float
    tolerance: float
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.note and self.max_abs <= self.tolerance


@contextmanager
def _quiet() -> Iterator[None]:
    """librosa's warnings (about its decoders, deprecations) are not the user's business here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _librosa() -> ModuleType | None:
    try:
        with _quiet():
            import librosa
    except ImportError:
        return None
    return librosa


def librosa_mel(x: np.ndarray, pad_mode: PadMode = "constant") -> np.ndarray | None:
    """The same mel computed with librosa's STFT and filters, or None when librosa is not installed."""
    librosa = _librosa()
    if librosa is None:
        return None
    from scipy.signal import lfilter

    y = lfilter([1.0, -PREEMPHASIS], [1.0], x.astype(np.float64))
    with _quiet():
        spec = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, center=True,
                                   pad_mode=pad_mode))
        mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX) @ spec
    db = 20 * np.log10(np.maximum(1e-5, mel)) - REF_LEVEL_DB
    return np.clip(2 * MAX_ABS * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS, -MAX_ABS, MAX_ABS).T


def load_reference(path: str | Path) -> np.ndarray:
    """A reference mel .npy as [T, 80] (also accepted as [80, T])."""
    path = Path(path)
    try:
        ref = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None
    if ref.ndim != 2 or N_MELS not in ref.shape:
        raise InputError(f"{path}: expected a [T, 80] or [80, T] mel array, got shape {list(ref.shape)}")
    if not np.issubdtype(ref.dtype, np.floating):
        raise InputError(f"{path}: expected floating-point mel values, got {ref.dtype}")
    return ref if ref.shape[1] == N_MELS else ref.T


def compare(name: str, ours: np.ndarray, theirs: np.ndarray, tolerance: float) -> Comparison:
    if ours.shape != theirs.shape:
        return Comparison(name, float("nan"), float("nan"), tolerance,
                          f"shape {list(theirs.shape)} differs from ours {list(ours.shape)}")
    diff = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    return Comparison(name, float(diff.max()), float(diff.mean()), tolerance)


def librosa_load_mel(info: AudioInfo, pad_mode: PadMode = "constant") -> np.ndarray | None:
    """The mel of `librosa.load(path, sr=16000)`, the training scripts' loading, or None without librosa.

    librosa.load decodes what soundfile cannot read (M4A, AAC, video) through audioread, another decoder
    whose output starts and ends elsewhere; for those files librosa resamples the samples of our decoder, as
    librosa.load does after decoding (channels averaged, soxr HQ, padded to the ceil length)."""
    librosa = _librosa()
    if librosa is None:
        return None
    with _quiet():
        if info.decoder == "soundfile":
            y, _ = librosa.load(str(info.path), sr=SAMPLE_RATE, mono=True)
        else:
            y = librosa.resample(read_native(info), orig_sr=info.sample_rate, target_sr=SAMPLE_RATE,
                                 res_type="soxr_hq")
    return librosa_mel(y, pad_mode)


def librosa_load_name(info: AudioInfo) -> str:
    return "librosa.load" if info.decoder == "soundfile" else "librosa resample"


def chunked_mel(info: AudioInfo, pad_mode: PadMode = "constant", chunk: int = CHUNK_SAMPLES,
                resampler: Resampler = "soxr") -> np.ndarray:
    stream = MelStream(pad_mode)
    parts = [stream.push(c) for c in stream_audio(info, chunk, resampler)]
    parts.append(stream.finish())
    return np.concatenate(parts)


def validate(
    x: np.ndarray,
    info: AudioInfo | None,
    reference: np.ndarray | None = None,
    pad_mode: PadMode = "constant",
    chunk: int = CHUNK_SAMPLES,
    resampler: Resampler = "soxr",
    reference_name: str = "reference",
) -> tuple[np.ndarray, list[Comparison]]:
    """Our whole-file mel of x and its comparisons with every reference available; for a file not at 16 kHz,
    also with the mel of `librosa.load(path, sr=16000)` (resampling included)."""
    whole = mel_spectrogram(x, pad_mode)
    results = []
    lib = librosa_mel(x, pad_mode)
    if lib is not None:
        results.append(compare("librosa", whole, lib, REFERENCE_TOLERANCE))
    if info is not None and info.sample_rate != 16000:
        loaded = librosa_load_mel(info, pad_mode)
        if loaded is not None:
            results.append(compare(librosa_load_name(info), whole, loaded, REFERENCE_TOLERANCE))
    if reference is not None:
        results.append(compare(reference_name, whole, reference, REFERENCE_TOLERANCE))
    if info is not None:
        streamed = chunked_mel(info, pad_mode, chunk, resampler)
    else:
        stream = MelStream(pad_mode)
        streamed = np.concatenate([stream.push(x[i : i + chunk]) for i in range(0, len(x), chunk)] + [stream.finish()])
    results.append(compare("chunked vs whole", streamed, whole, CHUNKED_TOLERANCE))
    return whole, results
