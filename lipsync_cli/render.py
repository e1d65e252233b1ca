"""`render`: audio file + character -> MP4, checked before work, written atomically."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipsync_cli.audio.loading import probe_audio
from lipsync_cli.characters.manifest import Character
from lipsync_cli.encoding.ffmpeg import EncodeSettings, VideoWriter, check_encoder, check_output_path
from lipsync_cli.encoding.yuv import even
from lipsync_cli.errors import InputError
from lipsync_cli.models.sessions import DeviceRequest, SessionFactory, shared_factory
from lipsync_cli.pipeline import PipelineOptions, frame_count, output_shape, render_frames
from lipsync_cli.stages import BufferPool

MAX_BATCH = 1024
CPU_BATCH, GPU_BATCH = 4, 32  # on a CPU bigger batches buy no speed, only memory (bench: 4 vs 16)


def default_batch(device: str) -> int:
    return CPU_BATCH if device == "cpu" else GPU_BATCH


@dataclass(frozen=True)
class RenderResult:
    output: Path
    frames: int
    audio_seconds: float
    elapsed: float
    device: str
    providers: tuple[str, ...]
    notice: str | None

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed if self.elapsed > 0 else float("inf")

    @property
    def realtime(self) -> float:
        return self.audio_seconds / self.elapsed if self.elapsed > 0 else float("inf")


def default_output(audio: Path, character: Character) -> Path:
    return Path.cwd() / f"{Path(audio).stem}_{character.name}.mp4"


def render(
    audio: Path,
    character: Character,
    output: Path,
    device: DeviceRequest = DeviceRequest("auto"),
    batch_size: int | None = None,
    blend: str = "feather",
    settings: EncodeSettings = EncodeSettings(),
    overwrite: bool = False,
    on_start: Callable[[int, str, str | None], None] | None = None,
    on_frame: Callable[[int], None] | None = None,
    factory: SessionFactory | None = None,
) -> RenderResult:
    """Render `audio` spoken by `character` into `output`; every input is checked before work starts."""
    if batch_size is not None and not 1 <= batch_size <= MAX_BATCH:
        raise InputError(f"--batch-size must be 1 to {MAX_BATCH}, not {batch_size}")
    if blend not in ("feather", "hard"):
        raise InputError(f"--blend must be feather or hard, not {blend!r}")
    settings = settings.checked()
    info = probe_audio(audio)
    output = check_output_path(Path(output), overwrite)
    check_encoder(settings)
    factory = factory or shared_factory()
    resolved, notice = factory.resolve(device, character.model)
    factory.session(character.audio_encoder, resolved)
    providers = tuple(factory.session(character.model, resolved).get_providers())
    options = PipelineOptions(device=resolved, batch_size=batch_size or default_batch(resolved),
                              blend=blend)  # type: ignore[arg-type]
    total = frame_count(character, info)
    if on_start:
        on_start(total, resolved, notice)
    started = time.perf_counter()
    width, height = even(character.video.width), even(character.video.height)
    writer = VideoWriter(output, width, height, character.fps, info.path, settings, pix_fmt="yuv420p")
    try:
        pool = BufferPool(output_shape(character), np.uint8)
        frames = render_frames(character, info, options, factory, pool)
        try:
            for frame in frames:
                writer.write(frame)
                pool.give(frame)
                if on_frame:
                    on_frame(1)
        finally:
            frames.close()
        writer.finish()
        writer.publish(overwrite)
    finally:
        writer.abort()
    return RenderResult(output, writer.frames, info.duration, time.perf_counter() - started, resolved, providers,
                        notice)
