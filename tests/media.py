"""Read back what ffmpeg wrote, with the bundled ffmpeg (no system ffprobe is assumed)."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

import imageio_ffmpeg
import numpy as np

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


@dataclass
class Probe:
    video: str
    audio: str
    width: int
    height: int
    fps: float
    frames: int
    audio_seconds: float


def probe(path) -> Probe:
    info = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    video = re.search(r"Stream #\S+: Video: (.*)", info).group(1)
    audio = re.search(r"Stream #\S+: Audio: (.*)", info)
    size = re.search(r", (\d+)x(\d+)", video)
    fps = float(re.search(r", ([\d.]+) fps", video).group(1))
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    pcm = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "s16le", "-ac", "1",
                          "-ar", "16000", "-"], capture_output=True).stdout if audio else b""
    return Probe(video, audio.group(1) if audio else "", int(size.group(1)), int(size.group(2)), fps, frames,
                 len(pcm) / 2 / 16000)


def decoded_frames(path) -> np.ndarray:
    """All frames of a video as BGR uint8 [n, h, w, 3]."""
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="bgr24")
    meta = reader.__next__()
    w, h = meta["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader])


def ffmpeg_processes_writing(path_fragment):
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                argv = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if "ffmpeg" in os.path.basename(argv[0]) and any(path_fragment in a for a in argv):
                found.append(int(pid))
    return found
