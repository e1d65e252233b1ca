"""A live session's frames to anything ffmpeg writes, at real-time pace: an RTMP ingest (FLV), SRT or UDP
(MPEG-TS), or a file (.ts, .flv, .mkv) written under a temporary name and published when the stream ends.

Video goes to ffmpeg's stdin as raw I420 at the character's fps and the frames' audio to a second pipe as
s16le at the session's return rate (the input's), so the stream's timestamps come from the counts of frames
and samples: no second clock.
H.264 with zero-latency settings (no B-frames, a keyframe at least every 2 s), AAC audio at that rate.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from lipsync_cli.audio.pcm import float_to_s16_bytes
from lipsync_cli.audio.resample import TARGET_RATE
from lipsync_cli.encoding.ffmpeg import (
    check_output_path,
    ffmpeg_exe,
    publish_file,
    remove_stale_temporaries,
    temporary_path,
)
from lipsync_cli.encoding.folders import make_folders
from lipsync_cli.errors import EncoderError, InputError
from lipsync_cli.live.frames import LiveFrame
from lipsync_cli.processes import ErrorTail, stop

STREAMS = {"rtmp": "flv", "rtmps": "flv", "srt": "mpegts", "udp": "mpegts"}  # URL scheme -> muxer
FILES = {".ts": "mpegts", ".flv": "flv", ".mkv": "matroska"}  # file extension -> muxer
VIDEO_QUEUE = 8  # frames written ahead of ffmpeg (a 720p frame is 1.4 MB)


@dataclass(frozen=True)
class Target:
    where: str  # the URL, or the file's path
    muxer: str
    file: Path | None  # None: a network stream


def parse_target(text: str, overwrite: bool = False) -> Target:
    """A URL (rtmp://, rtmps://, srt://, udp://) or a file path, checked before any work."""
    scheme = text.split("://", 1)[0].lower() if "://" in text else None
    if scheme is not None:
        if scheme not in STREAMS:
            raise InputError(f"{text}: a live target is {', '.join(s + '://' for s in STREAMS)} or a "
                             f"{', '.join(FILES)} file", option="to")
        return Target(text, STREAMS[scheme], None)
    path = check_output_path(Path(text), overwrite, FILES)
    return Target(str(path), FILES[path.suffix.lower()], path)


def _close_quietly(close: Callable[[], object]) -> None:
    try:
        close()
    except OSError:  # closed already
        pass


class StreamOutput:
    def __init__(self, target: Target, width: int, height: int, fps: Fraction, crf: int = 20,
                 overwrite: bool = False, audio_rate: int = TARGET_RATE) -> None:
        self.target, self.overwrite, self.frames = target, overwrite, 0
        self.shape = (height * 3 // 2, width)
        self.temp: Path | None = None
        where = target.where
        if target.file is not None:
            make_folders(target.file.parent)
            remove_stale_temporaries(target.file)
            self.temp = temporary_path(target.file)
            where = str(self.temp)
        gop = max(1, int(2 * fps))
        read_audio, self._audio_fd = os.pipe()
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}",
               "-framerate", f"{fps.numerator}/{fps.denominator}", "-thread_queue_size", "64", "-i", "pipe:0",
               "-f", "s16le", "-ar", str(audio_rate), "-ac", "1", "-thread_queue_size", "64",
               "-i", f"pipe:{read_audio}", "-map", "0:v:0", "-map", "1:a:0",
               "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-crf", str(crf), "-bf", "0",
               "-g", str(gop), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k",
               "-f", target.muxer]
        if target.muxer == "flv" and target.file is None:
            cmd += ["-flvflags", "no_duration_filesize"]
        cmd.append(where)
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, pass_fds=(read_audio,), start_new_session=True)
        except OSError as exc:
            os.close(self._audio_fd)
            raise EncoderError(f"{cmd[0]}: cannot start ffmpeg ({exc})") from None
        finally:
            os.close(read_audio)
        assert self._proc.stderr is not None and self._proc.stdin is not None
        self._errors = ErrorTail(self._proc.stderr, strip_context=True)
        self._broken = threading.Event()
        # each pipe has its own writer, so that ffmpeg waiting for more of one input (its AAC encoder wants
        # about 2048 samples before its first packet: 5 frames at 8 kHz) never blocks the other
        self._pipes = [(self._audio_fd, queue.Queue[memoryview | None](maxsize=256)),
                       (self._proc.stdin.fileno(), queue.Queue[memoryview | None](maxsize=VIDEO_QUEUE))]
        self._closers = [lambda: os.close(self._audio_fd), lambda: self._proc.stdin and self._proc.stdin.close()]
        self._writers = [threading.Thread(target=self._feed, args=(*pipe, close), name="lipsync-live-pipe",
                                          daemon=True) for pipe, close in zip(self._pipes, self._closers, strict=True)]
        for writer in self._writers:
            writer.start()

    def _feed(self, fd: int, items: queue.Queue[memoryview | None], close: Callable[[], object]) -> None:
        while (view := items.get()) is not None:
            if self._broken.is_set():
                continue  # ffmpeg is gone: drain, so that nobody waits on a full queue
            try:
                while view:
                    view = view[os.write(fd, view) :]
            except OSError:
                self._broken.set()
        # the end of this input, as soon as it is written: ffmpeg may wait for the end of the audio (its last
        # block) before it reads the last pictures, so neither pipe waits for the other to be closed
        _close_quietly(close)

    def _failure(self, what: str) -> EncoderError:
        self._proc.wait()
        self._errors.join()
        return EncoderError(f"{self.target.where}: ffmpeg {what}: "
                            f"{self._errors.last(2) or f'exit status {self._proc.returncode}'}")

    def write(self, frame: LiveFrame) -> None:
        if frame.image.shape != self.shape:
            raise ValueError(f"frame of {frame.image.shape}, the stream is {self.shape}")
        if self._broken.is_set():
            raise self._failure("stopped while streaming")
        pcm = float_to_s16_bytes(frame.audio)
        (_, audio), (_, video) = self._pipes
        audio.put(memoryview(pcm))
        video.put(np.ascontiguousarray(frame.image).data.cast("B"))
        self.frames += 1

    def _close_inputs(self) -> None:
        for _, items in self._pipes:
            items.put(None)
        for writer in self._writers:
            writer.join(timeout=5)

    def finish(self) -> str:
        """End the stream; a file is published under its name. Returns where it went."""
        self._close_inputs()
        code = self._proc.wait()
        self._errors.join()
        if code != 0:
            raise self._failure("failed")
        if self.target.file is not None and self.temp is not None:
            publish_file(self.temp, self.target.file, self.overwrite)
            self.temp = None
        return self.target.where

    def abort(self) -> None:
        """Stop ffmpeg and remove a temporary file (idempotent)."""
        if self._proc.poll() is None:
            self._proc.kill()  # first: a writer blocked on its pipe then fails, and the queues drain
        self._close_inputs()
        stop(self._proc, self._errors)
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)


def paced(output: StreamOutput, frame: LiveFrame, clock: Callable[[], float], sleep: Callable[[float], None]
          ) -> float:
    """Write the frame once it is due on the session's clock; returns how late it went out (0 if on time)."""
    wait = frame.due - clock()
    if wait > 0:
        sleep(wait)
    output.write(frame)
    return max(0.0, clock() - frame.due)
