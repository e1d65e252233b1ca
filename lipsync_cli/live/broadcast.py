"""A live session fed from a file played at real-time pace or from raw PCM on a pipe (as a TTS engine writes
it), its frames streamed to a StreamOutput as they fall due: LiveTalking's push-to-RTMP mode with this
project's pipeline. `lipsync live` is a thin command line around `broadcast`."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

import numpy as np

from lipsync_cli.audio.loading import AudioInfo, stream_audio, stream_native
from lipsync_cli.audio.pcm import s16_to_float
from lipsync_cli.audio.resample import TARGET_RATE
from lipsync_cli.errors import InputError
from lipsync_cli.live.frames import MAX_RATE, MIN_RATE, LatencyParts, LiveFrame
from lipsync_cli.live.session import LiveSession
from lipsync_cli.live.stream_out import StreamOutput, paced

PcmFormat = Literal["s16le", "f32le"]
_READ = 1 << 12
LATE = 0.010  # a frame that goes out more than this after its due time is late


@dataclass
class Progress:
    frames: int = 0
    speech_frames: int = 0
    underrun_frames: int = 0
    late_frames: int = 0
    latency: LatencyParts | None = None  # of the last speech frame
    started: float = field(default_factory=time.monotonic)

    def add(self, frame: LiveFrame, late: float) -> None:
        self.frames += 1
        self.speech_frames += frame.speech
        self.underrun_frames += frame.underrun
        self.late_frames += late > LATE
        if frame.latency is not None:
            self.latency = frame.latency

    def line(self, fps: float) -> str:
        seconds = self.frames / fps
        rate = self.frames / max(1e-9, time.monotonic() - self.started)
        text = f"{self.frames} frames ({seconds:.1f} s, {self.speech_frames} speaking), {rate:.1f} fps"
        if self.latency is not None:
            p = self.latency
            text += (f", latency {p.total * 1000:.0f} ms (look-ahead {p.lookahead * 1000:.0f}, queue "
                     f"{p.queueing * 1000:.0f}, UNet {p.inference * 1000:.0f}, composite {p.composite * 1000:.0f})")
        return text + f", underruns {self.underrun_frames}, late {self.late_frames}"


def file_rate(info: AudioInfo) -> int:
    """The rate a file's audio is streamed at: its own where a live session takes it, else 16 kHz."""
    return info.sample_rate if MIN_RATE <= info.sample_rate <= MAX_RATE else TARGET_RATE


def file_chunks(info: AudioInfo, resample: str, chunk_ms: float) -> Iterator[np.ndarray]:
    """A file's audio, mono, in chunks of chunk_ms at `file_rate` (the session resamples it as a render does;
    a file above 48 kHz is resampled to 16 kHz here, as a render does)."""
    rate = file_rate(info)
    chunk = max(1, round(rate * chunk_ms / 1000))
    if rate == info.sample_rate:
        return stream_native(info, chunk)
    return stream_audio(info, chunk, resample)  # type: ignore[arg-type]


def pcm_chunks(stream: BinaryIO, fmt: PcmFormat) -> Iterator[np.ndarray]:
    """Raw mono PCM as it arrives on a pipe (whatever is there, as soon as it is there), until its end."""
    width = 2 if fmt == "s16le" else 4
    dtype = "<i2" if fmt == "s16le" else "<f4"
    fd, held = stream.fileno(), b""
    while data := os.read(fd, _READ):
        data = held + data
        cut = len(data) - len(data) % width
        held = data[cut:]
        if cut:
            samples = np.frombuffer(data[:cut], dtype)
            yield s16_to_float(samples) if fmt == "s16le" else samples.astype(np.float32)
    if held:
        raise InputError(f"standard input ended inside a sample ({len(held)} of {width} bytes)", option="audio")


def feed(session: LiveSession, chunks: Iterator[np.ndarray], stop: threading.Event, pace: float | None,
         sleep: Callable[[float], None] = time.sleep) -> None:
    """Push every chunk (at real time when `pace` is the audio's rate: chunk n no earlier than its start on
    the timeline; otherwise as it comes, waiting while the session's buffer ahead is full), then flush."""
    pushed = 0
    for chunk in chunks:
        if stop.is_set():
            return
        if pace is not None:
            wait = session.t0 + pushed / pace - session.clock()
            if wait > 0:
                sleep(wait)
        while session.room() * session.options.rate < len(chunk) and not stop.is_set():
            sleep(0.02)
        session.push(chunk)
        pushed += len(chunk)
    session.flush()


def broadcast(session: LiveSession, chunks: Iterator[np.ndarray], output: StreamOutput, *, paced_input: bool,
              keep_alive: bool = False, stop: threading.Event | None = None,
              on_progress: Callable[[Progress], None] | None = None, sleep: Callable[[float], None] = time.sleep,
              ) -> Progress:
    """Stream the session until its audio has ended and been shown (or, with keep_alive, until `stop`)."""
    stop = stop or threading.Event()
    progress = Progress()
    fed = threading.Event()
    failure: list[BaseException] = []

    def run_feed() -> None:
        try:
            feed(session, chunks, stop, session.options.rate if paced_input else None, sleep)
        except BaseException as exc:  # raised in the streaming thread
            failure.append(exc)
        finally:
            fed.set()

    feeder = threading.Thread(target=run_feed, name="lipsync-live-feed", daemon=True)
    feeder.start()
    last_report = 0.0
    try:
        while not stop.is_set():
            if failure:
                raise failure[0]
            if fed.is_set() and not keep_alive and session.drained():
                break
            frame = session.next_frame(timeout=0.2)
            if frame is None:
                continue
            progress.add(frame, paced(output, frame, session.clock, sleep))
            if on_progress is not None and time.monotonic() - last_report >= 1.0:
                last_report = time.monotonic()
                on_progress(progress)
    finally:
        stop.set()
        feeder.join(timeout=2)
    return progress
