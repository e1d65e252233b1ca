"""Audio in: any file soundfile reads, or else any container the bundled ffmpeg decodes (M4A, AAC, the audio
of MP4/MOV/MKV/WebM, ...), any rate and channel count -> mono float32 at 16 kHz.

`probe_audio` checks a file completely (it decodes it once, so a truncated or non-finite file is refused
before work starts); `stream_audio` then yields it in fixed-size chunks without holding the whole file.
Channels are mixed to their mean, then resampled as the models' training data was: `librosa.load(path,
sr=16000)` is soxr at HQ quality, zero-padded to ceil(n * 16000 / rate) samples, and so is the default
here (soxr's streaming resampler gives the one-shot result whatever the chunk borders). `polyphase` (scipy's
`resample_poly`, block by block with enough context that every sample equals the whole-file result) stays
selectable for models trained that way.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

from lipsync_cli.audio import ffmpeg_decode
from lipsync_cli.audio.resample import StreamResampler, resampled_length
from lipsync_cli.errors import AudioError
from lipsync_cli.specs import Resampler
from lipsync_cli.stages import regroup

RESAMPLERS: tuple[Resampler, ...] = ("soxr", "polyphase")

CHUNK_SAMPLES = 10_240  # 640 ms at 16 kHz
MIN_RATE, MAX_RATE = 8_000, 192_000
MAX_CHANNELS = 8  # what AAC can carry into the output file
_SCAN_BLOCK = 1 << 16
_FLOAT_SUBTYPES = {"FLOAT", "DOUBLE", "VORBIS", "OPUS", "MPEG_LAYER_III"}


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    sample_rate: int
    channels: int
    frames: int  # at the file's own rate, as decoded (not as the header claims)
    format: str
    subtype: str
    decoder: Literal["soundfile", "ffmpeg"] = "soundfile"

    @property
    def samples_16k(self) -> int:
        """Length after resampling to 16 kHz: ceil(frames * 16000 / rate), for either resampler."""
        return resampled_length(self.frames, self.sample_rate)

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def _open(path: Path) -> sf.SoundFile | None:
    """The file opened by soundfile, or None when soundfile does not know its format (ffmpeg may)."""
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if not path.is_file():  # a FIFO or a device would block or never end
        raise AudioError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(1)
    except OSError as exc:
        raise AudioError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not head:
        raise AudioError(f"{path}: the file is empty")
    try:
        return sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError):
        return None


def _riff_shortfall(path: Path) -> tuple[int, int] | None:
    """(declared, present) bytes of a RIFF WAVE data chunk that the file cuts short, else None.

    libsndfile quietly reads what is there, so a truncated WAV would otherwise pass as a shorter one.
    """
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"RIFF":
                return None
            fh.read(4)
            if fh.read(4) != b"WAVE":
                return None
            size = path.stat().st_size
            while True:
                header = fh.read(8)
                if len(header) < 8:
                    return None
                chunk, length = header[:4], struct.unpack("<I", header[4:])[0]
                if chunk == b"data":
                    present = size - fh.tell()
                    if length in (0, 0xFFFFFFFF):  # written while streaming: size unknown
                        return None
                    return (length, present) if present < length else None
                fh.seek(length + (length & 1), 1)
    except OSError:
        return None


def probe_audio(path: str | Path) -> AudioInfo:
    """Open, decode once and check an audio file; raise AudioError with a one-line reason."""
    path = Path(path)
    opened = _open(path)
    if opened is None:
        return _probe_with_ffmpeg(path)
    with opened as f:
        rate, channels, claimed = f.samplerate, f.channels, f.frames
        _check_format(path, rate, channels)
        check_finite = f.subtype in _FLOAT_SUBTYPES
        frames = 0
        try:
            while True:
                block = f.read(_SCAN_BLOCK, dtype="float32", always_2d=True)
                if not len(block):
                    break
                if check_finite and not np.isfinite(block).all():
                    raise AudioError(f"{path}: contains NaN or infinite samples at {frames / rate:.3f} s")
                frames += len(block)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(f"{path}: corrupt audio data after {frames / rate:.3f} s ({exc})") from None
        fmt, subtype = f.format, f.subtype
    if frames == 0:
        raise AudioError(f"{path}: contains no audio samples")
    shortfall = _riff_shortfall(path)
    if shortfall:
        raise AudioError(f"{path}: truncated WAV (the header declares {shortfall[0]} bytes of audio, "
                         f"the file holds {shortfall[1]})")
    if claimed > 0 and frames < claimed:
        raise AudioError(f"{path}: truncated ({frames} of {claimed} frames present)")
    return AudioInfo(path, rate, channels, frames, fmt, subtype)


def _check_format(path: Path, rate: int, channels: int) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"{path}: sample rate {rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz")
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(f"{path}: {channels} channels are not supported (1 to {MAX_CHANNELS})")


def _probe_with_ffmpeg(path: Path) -> AudioInfo:
    rate, channels, frames, bad = ffmpeg_decode.probe(path, _SCAN_BLOCK)
    _check_format(path, rate, channels)
    if bad is not None:
        raise AudioError(f"{path}: contains NaN or infinite samples at {bad:.3f} s")
    if frames == 0:
        raise AudioError(f"{path}: contains no audio samples")
    return AudioInfo(path, rate, channels, frames, "ffmpeg", "float32", "ffmpeg")


def _mono(data: np.ndarray) -> np.ndarray:
    return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]


def _source_blocks(info: AudioInfo, block: int) -> Iterator[np.ndarray]:
    """Mono float32 blocks at the file's own rate."""
    if info.decoder == "ffmpeg":
        remaining = info.frames
        for data in regroup(ffmpeg_decode.stream(info.path, block), block):
            data = data[:remaining]
            remaining -= len(data)
            if len(data):
                yield _mono(data)
        if remaining > 0:
            raise AudioError(f"{info.path}: ended early while reading")
        return
    opened = _open(info.path)
    if opened is None:
        raise AudioError(f"{info.path}: changed since it was checked")
    with opened as f:
        remaining = info.frames
        while remaining > 0:
            data = f.read(min(block, remaining), dtype="float32", always_2d=True)
            if not len(data):
                raise AudioError(f"{info.path}: ended early while reading")
            remaining -= len(data)
            yield _mono(data)


def _resampled_blocks(info: AudioInfo, resampler: Resampler = "soxr") -> Iterator[np.ndarray]:
    stream = StreamResampler(info.sample_rate, resampler)
    for block in _source_blocks(info, _SCAN_BLOCK):
        out = stream.push(block)
        if len(out):
            yield out
    rest = stream.finish()
    if len(rest):
        yield rest


def stream_audio(info: AudioInfo, chunk: int = CHUNK_SAMPLES, resampler: Resampler = "soxr") -> Iterator[np.ndarray]:
    """The file as mono float32 16 kHz chunks of `chunk` samples (the last may be shorter)."""
    return regroup(_resampled_blocks(info, resampler), chunk)


def stream_native(info: AudioInfo, chunk: int) -> Iterator[np.ndarray]:
    """The file as mono float32 chunks of `chunk` samples at its own rate (the last may be shorter)."""
    return regroup(_source_blocks(info, _SCAN_BLOCK), chunk)


def read_native(info: AudioInfo) -> np.ndarray:
    """The whole file as mono float32 at its own rate (for tools and tests)."""
    return np.concatenate(list(_source_blocks(info, _SCAN_BLOCK)))


def read_audio(path: str | Path, resampler: Resampler = "soxr") -> np.ndarray:
    """The whole file as mono float32 at 16 kHz (for tools and tests; `render` streams)."""
    info = probe_audio(path)
    return np.concatenate(list(_resampled_blocks(info, resampler)))
