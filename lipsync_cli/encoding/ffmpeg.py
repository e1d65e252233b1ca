"""Raw BGR frames -> H.264 MP4 through the ffmpeg binary that imageio-ffmpeg ships.

The file is written under a temporary name beside the target and published only by `VideoWriter.publish`,
so the output name never holds a partial file. ffmpeg's last stderr lines are kept for error messages.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from lipsync_cli.encoding.folders import folder_problem, make_folders
from lipsync_cli.errors import EncoderError, InputError, Interrupted, OutputError, OutputExists
from lipsync_cli.processes import ErrorTail, host_tag, process_exists, stop

CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}  # output extension -> ffmpeg muxer
AAC_RATES = (8_000, 48_000)  # AAC at the input's rate inside this range (plays everywhere), else 48 kHz
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
NVENC_PRESETS = ("p1", "p2", "p3", "p4", "p5", "p6", "p7")
CODECS = ("libx264", "h264_nvenc")


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class EncodeSettings:
    codec: str = "libx264"
    preset: str | None = None  # veryfast for libx264, p4 for h264_nvenc
    crf: int = 18
    audio_bitrate: str = "160k"
    threads: int = 0  # 0: ffmpeg's choice

    def checked(self) -> EncodeSettings:
        if self.codec not in CODECS:
            raise InputError(f"unknown codec {self.codec!r}: use {' or '.join(CODECS)}", option="codec")
        presets = X264_PRESETS if self.codec == "libx264" else NVENC_PRESETS
        preset = self.preset or presets[2 if self.codec == "libx264" else 3]
        if preset not in presets:
            raise InputError(f"preset {preset!r} does not exist for {self.codec}: use one of {', '.join(presets)}",
                             option="preset")
        if not 0 <= self.crf <= 51:
            raise InputError(f"crf must be 0-51, not {self.crf}", option="crf")
        return EncodeSettings(self.codec, preset, self.crf, self.audio_bitrate, self.threads)

    def video_args(self) -> list[str]:
        s = self.checked()
        preset = str(s.preset)
        if s.codec == "libx264":
            args = ["-c:v", "libx264", "-preset", preset, "-crf", str(s.crf)]
        else:
            args = ["-c:v", "h264_nvenc", "-preset", preset, "-rc", "vbr", "-cq", str(s.crf), "-b:v", "0"]
        if s.threads:
            args += ["-threads", str(s.threads)]
        return args + ["-pix_fmt", "yuv420p"]


def temporary_path(target: Path) -> Path:
    """`.NAME.PID.HEX.part` beside the target; HEX starts with the host tag. The machine and the process id let
    a later render tell a leftover of a killed process from a render in progress."""
    return target.with_name(f".{target.name}.{os.getpid()}.{host_tag()}{uuid.uuid4().hex[:4]}.part")


_TEMPORARY = re.compile(r"\.(.+)\.(\d+)\.([0-9a-f]{4})[0-9a-f]{4}\.part")


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporary files beside `target` of renders that no longer run (killed with SIGKILL, say):
    this machine's, whatever output they were for, and the target's own from any machine (one output is
    rendered once at a time). Another machine's process ids mean nothing here, so its other files stay."""
    removed: list[Path] = []
    try:
        candidates = [(p, _TEMPORARY.fullmatch(p.name)) for p in target.parent.iterdir()]
    except OSError:
        return removed
    here = host_tag()
    for path, match in candidates:
        if match is None or (match.group(3) != here and match.group(1) != target.name):
            continue
        pid = int(match.group(2))
        if pid == os.getpid() or process_exists(pid):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


class InputIndex:
    """Files that must not be written over ({path: what it is}), indexed by resolved path and by inode, so that
    each output is checked with two look-ups however many inputs a batch has (links, symbolic or hard, count)."""

    def __init__(self, inputs: dict[Path, str]) -> None:
        self._paths: dict[Path, tuple[Path, str]] = {}
        self._inodes: dict[tuple[int, int], tuple[Path, str]] = {}
        for path, what in inputs.items():
            self._paths.setdefault(path.resolve(), (path, what))
            try:
                st = path.stat()
                self._inodes.setdefault((st.st_dev, st.st_ino), (path, what))
            except OSError:
                pass

    def find(self, target: Path) -> tuple[Path, str] | None:
        """The input that `target` is (path, what), or None."""
        found = self._paths.get(target.resolve())
        if found is None:
            try:
                st = target.stat()
                found = self._inodes.get((st.st_dev, st.st_ino))
            except OSError:
                pass
        return found

    def check(self, target: Path) -> None:
        found = self.find(target)
        if found is not None:
            path, what = found
            raise OutputError(f"{target}: is {what} ({path}); writing the video there would destroy it")


def check_not_an_input(target: Path, inputs: dict[Path, str]) -> None:
    """Refuse an output that is one of the inputs ({path: what it is}), through links (symbolic or hard) too."""
    InputIndex(inputs).check(target)


def check_output_path(target: Path, overwrite: bool, containers: dict[str, str] = CONTAINERS) -> Path:
    """Refuse an output that cannot or must not be written, before any work (`containers`: the extensions
    allowed)."""
    target = Path(target)
    try:
        target.lstat()
    except (FileNotFoundError, NotADirectoryError):  # a missing folder, or a file in the way: told below
        pass
    except OSError as exc:  # a name too long for the file system, a loop of links
        raise OutputError(f"{target}: {exc.strerror or exc}") from None
    if target.is_symlink() and not target.exists():
        raise OutputError(f"{target}: is a symbolic link to a missing file; give a plain file name")
    if target.is_dir():
        raise OutputError(f"{target}: is a directory; give a file name such as {target / 'out.mp4'}")
    if target.suffix.lower() not in containers:
        raise OutputError(f"{target}: the output must be a {', '.join(containers)} file")
    if target.exists() and not overwrite:
        raise OutputExists(f"{target}: exists")
    parent = target.parent if str(target.parent) else Path(".")
    problem = folder_problem(parent)
    if problem is not None:
        if parent.exists():
            raise OutputError(f"{target}: the directory {problem}")
        raise OutputError(f"{target}: the directory {parent} cannot be made: {problem}")
    return target


def check_encoder(settings: EncodeSettings) -> None:
    """Refuse an encoder that this ffmpeg cannot open here (h264_nvenc without an NVIDIA GPU) before work."""
    if settings.codec == "libx264":
        return
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
           "color=size=256x256:rate=25:duration=0.1", *settings.video_args(), "-f", "null", "-"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"{settings.codec}: cannot be tested ({exc})") from None
    if done.returncode != 0:
        lines = [re.sub(r"\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", line).strip() for line in done.stderr.splitlines()]
        lines = [line for line in lines if line]
        raise InputError(f"{settings.codec}: this ffmpeg cannot encode with it here: {' | '.join(lines[:2])}")


def publish_file(temp: Path, target: Path, overwrite: bool) -> Path:
    """Move a finished temporary file to its target name; never replaces an existing file unless told to."""
    if overwrite:
        os.replace(temp, target)
        return target
    try:
        os.link(temp, target)  # fails if the target appeared meanwhile
    except FileExistsError:
        temp.unlink(missing_ok=True)
        raise OutputExists(f"{target}: appeared during the render") from None
    except OSError:  # file systems without hard links
        if target.exists():
            temp.unlink(missing_ok=True)
            raise OutputExists(f"{target}: exists") from None
        os.replace(temp, target)
        return target
    temp.unlink(missing_ok=True)
    return target


class VideoWriter:
    """An ffmpeg process fed raw frames on stdin (BGR, or I420 at an even size); optionally muxes an
    audio file as AAC. I420 frames are taken as BT.601 limited range, and the file is tagged so."""

    def __init__(
        self,
        target: Path,
        width: int,
        height: int,
        fps: Fraction,
        audio: Path | None = None,
        settings: EncodeSettings = EncodeSettings(),
        extra_output_args: tuple[str, ...] = (),
        pix_fmt: str = "bgr24",
        audio_format: tuple[int, int] | None = None,  # the input's (rate, channels), for the output's AAC
    ) -> None:
        if pix_fmt not in ("bgr24", "yuv420p"):
            raise ValueError(f"pix_fmt must be bgr24 or yuv420p, not {pix_fmt}")
        if pix_fmt == "yuv420p" and (width % 2 or height % 2):
            raise ValueError(f"yuv420p frames need an even size, got {width}x{height}")
        self.target = Path(target)
        try:
            make_folders(self.target.parent)
        except OSError as exc:
            raise OutputError(f"{self.target}: the directory {self.target.parent} cannot be made "
                              f"({exc.strerror or exc})") from None
        remove_stale_temporaries(self.target)
        self.temp = temporary_path(self.target)
        self.width, self.height, self.fps = width, height, fps
        self.shape = (height * 3 // 2, width) if pix_fmt == "yuv420p" else (height, width, 3)
        self.frames = 0
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{width}x{height}",
               "-framerate", f"{fps.numerator}/{fps.denominator}", "-i", "pipe:0"]
        if audio is not None:
            cmd += ["-i", str(audio), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", settings.audio_bitrate]
            rate, channels = audio_format or (0, 0)
            if rate and not AAC_RATES[0] <= rate <= AAC_RATES[1]:
                cmd += ["-ar", str(AAC_RATES[1])]
            if channels > 2:
                cmd += ["-ac", "2"]
        cmd += settings.video_args()
        if pix_fmt == "yuv420p":
            cmd += ["-colorspace", "smpte170m", "-color_primaries", "smpte170m", "-color_trc", "smpte170m",
                    "-color_range", "tv"]
            if settings.codec == "libx264":  # libx264 writes primaries and transfer only when told directly
                cmd += ["-x264-params", "colorprim=smpte170m:transfer=smpte170m:colormatrix=smpte170m"]
        if width % 2 or height % 2:  # yuv420p needs even sides: pad one black row/column, never resample
            cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"]
        muxer = CONTAINERS.get(self.target.suffix.lower(), "mp4")
        if muxer != "matroska":
            cmd += ["-movflags", "+faststart"]
        cmd += [*extra_output_args, "-f", muxer, str(self.temp)]
        self.command = cmd
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise EncoderError(f"{cmd[0]}: cannot start ffmpeg ({exc})") from None
        assert self._proc.stderr is not None
        self._errors = ErrorTail(self._proc.stderr)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _failure(self, what: str) -> EncoderError:
        self._proc.wait()
        self._errors.join()
        tail = self._errors.last(3) or f"exit status {self._proc.returncode}"
        self._remove_temp()
        return EncoderError(f"{self.target}: ffmpeg {what}: {tail}")

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != self.shape or frame.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 {self.shape}, got {frame.dtype} {frame.shape}")
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(np.ascontiguousarray(frame).data)
        except (BrokenPipeError, OSError):
            raise self._failure("stopped while encoding") from None
        self.frames += 1

    def finish(self, cancel: threading.Event | None = None) -> Path:
        """Close the stream and wait for ffmpeg; the file stays under its temporary name. Setting `cancel`
        meanwhile raises Interrupted (the caller's `abort` then stops ffmpeg)."""
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        while True:
            try:
                code = self._proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set():
                    raise Interrupted("stopped") from None
        if code != 0:
            raise self._failure("failed")
        self._errors.join()
        return self.temp

    def publish(self, overwrite: bool) -> Path:
        """Move the finished file to the target name; never replaces an existing file unless told to."""
        return publish_file(self.temp, self.target, overwrite)

    def abort(self) -> None:
        """Stop ffmpeg and remove the temporary file (idempotent)."""
        stop(self._proc, self._errors, self._proc.stdin)
        self._remove_temp()

    def _remove_temp(self) -> None:
        try:
            self.temp.unlink()
        except FileNotFoundError:
            pass
