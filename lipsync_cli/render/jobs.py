"""A render as plain data: the job (what the user asked for), its plan (what was checked and resolved before
any work), the progress events and the result. All frozen and picklable, so jobs can travel to workers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

from lipsync_cli.audio.loading import AudioInfo
from lipsync_cli.characters.manifest import Character
from lipsync_cli.compositing.blend import Blend
from lipsync_cli.encoding.ffmpeg import EncodeSettings
from lipsync_cli.errors import InputError
from lipsync_cli.models.devices import Device, DeviceRequest
from lipsync_cli.models.precision import PrecisionRequest
from lipsync_cli.specs import WindowEnd

BLENDS: tuple[Blend, ...] = ("match", "feather", "hard")
MAX_BATCH = 1024
CPU_BATCH, GPU_BATCH = 4, 32  # on a CPU bigger batches buy no speed, only memory (bench: 4 vs 16)


def as_blend(value: str) -> Blend:
    """A blend named on a command line or in a job file, checked."""
    if value not in BLENDS:
        raise InputError(f"blend must be match, feather or hard, not {value!r}", option="blend")
    return cast(Blend, value)


def as_window_end(value: str) -> WindowEnd:
    if value not in ("silence", "clamp"):
        raise InputError(f"window end must be silence or clamp, not {value!r}", option="window_end")
    return cast(WindowEnd, value)


def default_batch(device: Device | str) -> int:
    """Frames per model call: CPU_BATCH where the models run on the CPU cores (onnxruntime's or OpenVINO's)."""
    if isinstance(device, Device):
        return CPU_BATCH if device.on_cpu else GPU_BATCH
    return CPU_BATCH if str(device) in ("cpu", "openvino", "openvino:CPU") else GPU_BATCH


@dataclass(frozen=True)
class RenderOptions:
    device: DeviceRequest = DeviceRequest("auto")
    batch_size: int | None = None  # frames per model call; None: CPU_BATCH on the CPU, GPU_BATCH on a GPU
    blend: Blend = "match"
    encode: EncodeSettings = EncodeSettings()
    overwrite: bool = False
    window_end: WindowEnd | None = None  # None: the character's own `[audio] window_end`
    precision: PrecisionRequest = "auto"  # auto: the fastest checked variant for the device (render/precision.py)


@dataclass(frozen=True)
class RenderJob:
    audio: Path
    character: str  # a name looked up in the character folders, or a folder
    output: Path | None = None  # default: <audio stem>_<character>.mp4 in the current directory
    options: RenderOptions = RenderOptions()


@dataclass(frozen=True)
class RenderPlan:
    """A job with everything checked and resolved: `execute` needs nothing else."""

    job: RenderJob
    character: Character
    audio: AudioInfo
    output: Path
    device: Device
    batch_size: int
    encode: EncodeSettings
    frames: int
    notice: str | None  # e.g. why `auto` runs on the CPU, which variant `auto` chose
    composite_threads: int = 1

    @property
    def precision(self) -> str:
        return self.character.precision


@dataclass(frozen=True)
class RenderResult:
    output: Path
    frames: int
    audio_seconds: float
    elapsed: float
    device: str
    precision: str = "fp32"

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed if self.elapsed > 0 else float("inf")

    @property
    def realtime(self) -> float:
        return self.audio_seconds / self.elapsed if self.elapsed > 0 else float("inf")


@dataclass(frozen=True)
class Started:
    job: RenderJob
    frames: int
    device: str
    notice: str | None


@dataclass(frozen=True)
class FramesDone:
    job: RenderJob
    frames: int  # frames finished since the last event
    done: int
    total: int


@dataclass(frozen=True)
class Finished:
    job: RenderJob
    result: RenderResult


RenderEvent = Started | FramesDone | Finished
