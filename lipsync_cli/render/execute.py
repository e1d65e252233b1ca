"""`execute(plan, runtime, on_event)`: render a planned job into its output, written atomically."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from lipsync_cli.encoding.ffmpeg import VideoWriter
from lipsync_cli.encoding.yuv import even
from lipsync_cli.errors import Interrupted
from lipsync_cli.render.jobs import Finished, FramesDone, RenderEvent, RenderPlan, RenderResult, Started
from lipsync_cli.render.pipeline import PipelineOptions, output_shape, render_frames
from lipsync_cli.runtime import Runtime
from lipsync_cli.stages import BufferPool


def execute(plan: RenderPlan, runtime: Runtime, on_event: Callable[[RenderEvent], None] | None = None,
            cancel: threading.Event | None = None) -> RenderResult:
    """Render `plan`; the output appears under its name only when complete. Setting `cancel` (from another
    thread) stops the render within a frame or so, with Interrupted raised and nothing published."""
    emit = on_event or (lambda event: None)
    job, character = plan.job, plan.character
    emit(Started(job, plan.frames, str(plan.device), plan.notice))
    started = time.perf_counter()
    options = PipelineOptions(device=plan.device, batch_size=plan.batch_size, blend=job.options.blend,
                              composite_threads=plan.composite_threads)
    writer = VideoWriter(plan.output, even(character.video.width), even(character.video.height), character.fps,
                         plan.audio.path, plan.encode, pix_fmt="yuv420p",
                         audio_format=(plan.audio.sample_rate, plan.audio.channels))
    try:
        pool = BufferPool(output_shape(character), np.uint8)
        frames = render_frames(character, plan.audio, options, runtime, pool)
        try:
            for frame in frames:
                if cancel is not None and cancel.is_set():
                    raise Interrupted("stopped")
                writer.write(frame)
                pool.give(frame)
                emit(FramesDone(job, 1, writer.frames, plan.frames))
        finally:
            frames.close()
        writer.finish(cancel)
        writer.publish(job.options.overwrite)
    finally:
        writer.abort()
    result = RenderResult(plan.output, writer.frames, plan.audio.duration, time.perf_counter() - started,
                          str(plan.device), plan.precision)
    emit(Finished(job, result))
    return result
