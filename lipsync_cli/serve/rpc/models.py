"""Model management of `MonolithicService` without the network: the server's characters as the seed's
models, with the registry's own numbers (requests, inference time per frame, measured memory, device, last
use), loading on a preferred GPU where that can be done, and unloading only what no one uses."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lipsync_cli.errors import DeviceError, InputError, LipsyncError
from lipsync_cli.models.devices import Device, DeviceRequest
from lipsync_cli.models.registry import ModelStats
from lipsync_cli.render.planning import resolve_character, resolve_device

if TYPE_CHECKING:
    from lipsync_cli.runtime import Runtime

LOAD_TIMEOUT = 60.0


@dataclass(frozen=True)
class ModelFacts:
    """One character's model (its encoder and UNet) over every device it was on."""

    model_id: str
    loaded: bool
    gpu_id: int  # -1: the CPU, or not loaded
    memory_mb: int
    requests: int
    total_inference_ms: int
    avg_inference_ms: float  # per frame
    last_used: int  # unix seconds, 0 when never used


@dataclass(frozen=True)
class Loaded:
    device: Device
    load_ms: float
    note: str  # why the preferred GPU was not used ("" when it was, or none was asked for)


@dataclass(frozen=True)
class HealthFacts:
    loaded_models: int
    max_models: int  # per device; 0: no limit
    gpu_ids: tuple[int, ...]
    gpu_memory_used_gb: tuple[float, ...]


def gpu_id(device: Device) -> int:
    return device.index if device.is_cuda else -1


def _files(runtime: Runtime, folder: Path) -> tuple[Path, ...] | None:
    try:
        character = runtime.character(folder)
    except LipsyncError:
        return None
    return tuple(p.resolve() for p in (character.audio_encoder, character.model))


def model_facts(runtime: Runtime, characters: dict[str, Path]) -> list[ModelFacts]:
    stats = runtime.registry.stats()
    loaded = runtime.registry.loaded()
    out = []
    for name, folder in sorted(characters.items()):
        files = _files(runtime, folder)
        mine: list[ModelStats] = [s for s in stats if files is not None and s.files == tuple(map(str, files))]
        on = [device for f, device in loaded if f == files]
        frames = sum(s.frames for s in mine)
        seconds = sum(s.inference_seconds for s in mine)
        memory = sum(s.bytes for s in mine if s.device in {str(d) for d in on})
        last = max((s.last_use for s in mine if s.last_use is not None), default=None)
        out.append(ModelFacts(name, bool(on), gpu_id(on[0]) if on else -1, math.ceil(memory / 2**20),
                              sum(s.requests for s in mine), round(seconds * 1000),
                              1000 * seconds / frames if frames else 0.0, int(last) if last is not None else 0))
    return out


def load_model(runtime: Runtime, folder: Path, preferred_gpu: int) -> Loaded:
    """Load a character's model where it is asked for (a GPU index, or -1 for the server's choice)."""
    if preferred_gpu < -1:
        raise InputError(f"preferred_gpu must be a GPU index or -1, not {preferred_gpu}")
    character = resolve_character(runtime, str(folder))
    note = ""
    request = DeviceRequest("auto")
    if preferred_gpu >= 0:
        usable = [d for d in runtime.devices()[0] if d.is_cuda]
        wanted = Device("cuda", preferred_gpu)
        if wanted in usable:
            request = DeviceRequest("cuda", preferred_gpu)
        else:
            why = "this server has no usable GPU" if not usable else \
                f"this server runs on {', '.join(map(str, usable))}"
            note = f"preferred_gpu {preferred_gpu} cannot be honoured ({why})"
    started = time.perf_counter()
    try:
        device, _ = resolve_device(runtime, character, request)
    except DeviceError as exc:
        note = f"preferred_gpu {preferred_gpu} cannot be honoured ({exc})"
        device, _ = resolve_device(runtime, character, DeviceRequest("auto"))
    files = (character.audio_encoder, character.model)
    with runtime.registry.lease(files, device, character.name, LOAD_TIMEOUT, count=False):
        pass
    if note:
        note += f": loaded on {device}"
    return Loaded(device, (time.perf_counter() - started) * 1000, note)


def unload_model(runtime: Runtime, name: str, folder: Path) -> None:
    files = _files(runtime, folder)
    if files is None or not runtime.registry.unload(files):
        raise InputError(f"{name} is not loaded")


def health_facts(runtime: Runtime) -> HealthFacts:
    devices = [d for d in runtime.devices()[0] if d.is_cuda]
    used = []
    for device in devices:
        reading = runtime.registry.memory_used(device)
        used.append(round(reading / 2**30, 3) if reading is not None else 0.0)
    return HealthFacts(len(runtime.registry.loaded()), runtime.registry.budget.max_models or 0,
                       tuple(d.index for d in devices), tuple(used))

