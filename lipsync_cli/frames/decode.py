"""A template's frames decoded by one ffmpeg process into two streams: I420 (8-bit 4:2:0) as the decoder
gives it, and BGR by ffmpeg's own conversion (what OpenCV's VideoCapture returns, so what a model trained on
OpenCV-read frames saw). Every frame as stored (no frame-rate conversion), sides padded to even with black.

The output's pixels that the patch does not touch are the I420 values themselves, not a BGR round trip of
them (which darkens a frame by about a level); the BGR frame is used only for the UNet's crop.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

from lipsync_cli.encoding.ffmpeg import ffmpeg_exe
from lipsync_cli.encoding.yuv import even
from lipsync_cli.errors import RenderError
from lipsync_cli.processes import ErrorTail, stop


class YuvDecoder:
    """Frames of one video file, in order: I420 uint8 [H * 3 // 2, W] and BGR uint8 [H, W, 3], H and W even."""

    def __init__(self, path: Path, width: int, height: int) -> None:
        self.path = Path(path)
        self.width, self.height = even(width), even(height)
        self.read_count = 0
        bgr_read, bgr_write = os.pipe()
        stream = ["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt"]
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(self.path),
               "-filter_complex", "[0:v:0]pad=ceil(iw/2)*2:ceil(ih/2)*2,split=2[yuv][bgr]",
               "-map", "[yuv]", *stream, "yuv420p", "pipe:1", "-map", "[bgr]", *stream, "bgr24", f"pipe:{bgr_write}"]
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, bufsize=0, pass_fds=(bgr_write,))
        except OSError as exc:
            os.close(bgr_read)
            raise RenderError(f"{self.path}: cannot start ffmpeg to decode it ({exc})") from None
        finally:
            os.close(bgr_write)
        self._bgr = os.fdopen(bgr_read, "rb", buffering=0)
        assert self._proc.stderr is not None
        self._errors = ErrorTail(self._proc.stderr, keep=6)

    def _fill(self, stream, array: np.ndarray) -> int:
        view = array.reshape(-1).data
        got = 0
        while got < array.nbytes:
            n = stream.readinto(view[got:])
            if not n:
                break
            got += n
        return got

    def read(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The next frame (I420, BGR), or None at the end of the video."""
        i420 = np.empty((self.height * 3 // 2, self.width), np.uint8)
        bgr = np.empty((self.height, self.width, 3), np.uint8)
        got = self._fill(self._proc.stdout, i420)
        if got == 0:
            return None
        if got < i420.nbytes or self._fill(self._bgr, bgr) < bgr.nbytes:
            raise RenderError(f"{self.path}: frame {self.read_count} was cut short while decoding")
        self.read_count += 1
        return i420, bgr

    def problem(self) -> str:
        """ffmpeg's last words, once it has ended (empty if it said nothing)."""
        try:
            self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return ""
        self._errors.join()
        return self._errors.last(6)

    def close(self) -> None:
        stop(self._proc, self._errors, self._proc.stdout, self._bgr)
