"""Audio that soundfile cannot read (M4A/AAC, the audio track of MP4/MOV/MKV/WebM, ...), decoded by the bundled
ffmpeg: its first audio stream as float32 at the stream's own rate and channel count, streamed through a pipe
as a WAV (whose header tells the rate and channels), so memory stays flat whatever the length."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lipsync_cli.errors import AudioError
from lipsync_cli.processes import ErrorTail, stop


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


class _Decoder:
    def __init__(self, path: Path) -> None:
        self.path = path
        cmd = [_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:a:0",
               "-vn", "-sn", "-dn", "-c:a", "pcm_f32le", "-f", "wav", "pipe:1"]
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
        except OSError as exc:
            raise AudioError(f"{path}: cannot start ffmpeg to decode it ({exc})") from None
        assert self.proc.stderr is not None
        self.errors = ErrorTail(self.proc.stderr, strip_context=True)

    def _read(self, n: int) -> bytes:
        assert self.proc.stdout is not None
        return self.proc.stdout.read(n)

    def failure(self, what: str) -> AudioError:
        self.close()
        said = self.errors.last(2) or f"exit status {self.proc.returncode}"
        if any("matches no streams" in line or "does not contain any stream" in line for line in self.errors.lines):
            return AudioError(f"{self.path}: has no audio stream")
        return AudioError(f"{self.path}: not a readable audio file ({what}; ffmpeg: {said})")

    def header(self) -> tuple[int, int]:
        """(sample rate, channels) from the WAV header ffmpeg writes first."""
        head = self._read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            self.proc.wait()
            raise self.failure("no audio decoded")
        rate = channels = 0
        while True:
            chunk = self._read(8)
            if len(chunk) < 8:
                raise self.failure("truncated stream")
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"data":
                break
            body = self._read(size + (size & 1))
            if name == b"fmt ":
                channels, rate = struct.unpack("<HI", body[2:8])
        if not rate or not channels:
            raise self.failure("no audio format")
        return rate, channels

    def blocks(self, channels: int, frames_per_block: int) -> Iterator[np.ndarray]:
        """float32 [frames, channels] blocks until the end of the stream."""
        size = 4 * channels * frames_per_block
        while True:
            data = self._read(size)
            usable = len(data) - len(data) % (4 * channels)
            if usable:
                yield np.frombuffer(data[:usable], np.float32).reshape(-1, channels)
            if len(data) < size:
                break
        if self.proc.wait() != 0:
            self.errors.join()
            raise self.failure("decoding stopped")

    def close(self) -> None:
        stop(self.proc, self.errors, self.proc.stdout)


def probe(path: Path, block: int) -> tuple[int, int, int, float | None]:
    """(rate, channels, frames, seconds at the first non-finite sample or None), decoding the whole stream."""
    decoder = _Decoder(path)
    try:
        rate, channels = decoder.header()
        frames, bad = 0, None
        for data in decoder.blocks(channels, block):
            if bad is None and not np.isfinite(data).all():
                bad = frames / rate
            frames += len(data)
        return rate, channels, frames, bad
    finally:
        decoder.close()


def stream(path: Path, block: int) -> Iterator[np.ndarray]:
    """float32 [frames, channels] blocks of the first audio stream."""
    decoder = _Decoder(path)
    try:
        _, channels = decoder.header()
        yield from decoder.blocks(channels, block)
    finally:
        decoder.close()
