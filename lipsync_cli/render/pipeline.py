"""The file pipeline (design.md section 5): a FrameRenderer driven over a file's audio, as a chain of
generators on threads:

    audio chunks -> mel windows -> encoder (batched) -> features in the UNet's layout --+
    template frames -> the model's inputs (batches of the same frames) -----------------+-> UNet (batched)
    -> patches -> composite into the template frame -> I420 frames (what ffmpeg encodes)

Each arrow with a thread behind it is a bounded queue, so memory does not grow with the audio length.
Batches are filled to size (a file's frames are all known); live sessions drive the same renderer with
batches of what is ready (`lipsync_cli.live`). On a GPU (models/device_chain.py) the uint8 crops go to the
device instead, where ONNX graphs make the UNet's input and, for feather and hard, composite the patch and
convert the box region to I420; only the region's planes come back.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lipsync_cli.audio.loading import CHUNK_SAMPLES, AudioInfo, stream_audio
from lipsync_cli.characters.manifest import Character
from lipsync_cli.compositing.blend import Blend
from lipsync_cli.encoding.yuv import even
from lipsync_cli.features.stream import FeatureBatch, FeatureStream, rebatch
from lipsync_cli.features.windows import FrameWindows, frame_windows
from lipsync_cli.frames.template import TemplateFrame
from lipsync_cli.models.devices import CPU, Device
from lipsync_cli.render.compositor import Compositor
from lipsync_cli.render.renderer import FrameRenderer, Patch
from lipsync_cli.stages import BufferPool, regroup, threaded

if TYPE_CHECKING:
    from collections.abc import Callable

    from lipsync_cli.runtime import Runtime


@dataclass(frozen=True)
class PipelineOptions:
    device: Device = CPU
    batch_size: int = 16
    blend: Blend = "match"
    chunk_samples: int = CHUNK_SAMPLES
    composite_threads: int = 1
    queue_batches: int = 2  # batches of model inputs prepared ahead of the UNet


@dataclass(frozen=True)
class _Inputs:
    first: int
    frames: list[TemplateFrame]
    inputs: np.ndarray  # [len(frames), ...], a view of a pooled buffer
    buffer: np.ndarray


def frame_count(character: Character, audio: AudioInfo) -> int:
    frames = FrameWindows(audio.samples_16k, character.fps).frames
    assert frames is not None
    return frames


def output_shape(character: Character) -> tuple[int, int]:
    """I420 frame shape [H * 3 // 2, W] of a character's output (its size rounded up to even)."""
    return even(character.video.height) * 3 // 2, even(character.video.width)


def audio_windows(character: Character, audio: AudioInfo, chunk: int) -> Iterator[np.ndarray]:
    """[k, 80, 16] mel windows of consecutive video frames, as the audio streams in."""
    chunks = stream_audio(audio, chunk, character.audio.resample)
    for batch in frame_windows(chunks, audio.samples_16k, character.fps, character.audio.pad_mode,
                               character.audio.window_end):
        yield batch.windows


def audio_features(character: Character, audio: AudioInfo, encode: Callable[[np.ndarray], np.ndarray],
                   batch_size: int, chunk: int = CHUNK_SAMPLES) -> Iterator[FeatureBatch]:
    """Per-frame audio inputs in the UNet's layout, encoded `batch_size` windows at a time."""
    stream = FeatureStream(encode, character.layout)
    for windows in regroup(audio_windows(character, audio, chunk), batch_size):
        batch = stream.push(windows)
        if batch is not None:
            yield batch
    rest = stream.finish()
    if rest is not None:
        yield rest


def model_inputs(renderer: FrameRenderer, frames: int, pool: BufferPool, stop: threading.Event | None = None
                 ) -> Iterator[_Inputs]:
    """The model inputs of output frames 0 .. frames-1, in batches of the renderer's size."""
    for first in range(0, frames, renderer.batch):
        batch = renderer.frames(first, min(renderer.batch, frames - first), stop)
        buffer = pool.take()
        yield _Inputs(first, batch, renderer.prepare(batch, buffer), buffer)


def generate(renderer: FrameRenderer, features: Iterator[FeatureBatch], frames: int, queue: int = 2
             ) -> Iterator[tuple[TemplateFrame, Patch]]:
    """Each frame with its patch, the model inputs prepared on a thread of their own."""
    pool = BufferPool((renderer.batch, *renderer.input_shape), renderer.input_dtype)
    stop = threading.Event()
    inputs = threaded(model_inputs(renderer, frames, pool, stop), queue, "lipsync-crops", stop)
    try:
        for batch in rebatch(features, renderer.batch):
            visual = next(inputs)
            if (visual.first, len(visual.frames)) != (batch.first, len(batch)):  # both are cut alike
                raise AssertionError(f"inputs of frames {visual.first}+{len(visual.frames)} for audio features "
                                     f"of {batch.first}+{len(batch)}")
            patches = renderer.infer(visual.frames, visual.inputs, batch.features, batch.first)
            pool.give(visual.buffer)
            yield from zip(visual.frames, patches, strict=True)
    finally:
        inputs.close()


def render_frames(character: Character, audio: AudioInfo, options: PipelineOptions, runtime: Runtime,
                  pool: BufferPool | None = None) -> Generator[np.ndarray, None, None]:
    """Every output frame as I420 uint8 [H * 3 // 2, W] (the template's size rounded up to even), in order;
    exactly frame_count() of them. The models are leased from the runtime's registry and the template is
    read through its store for as long as the frames flow. With a `pool` (of output_shape), frames are
    taken from it, and the caller may give each back once it is done with it."""
    frames = frame_count(character, audio)
    with FrameRenderer(runtime, character, options.device, options.batch_size, options.blend) as renderer:
        features = audio_features(character, audio, renderer.encode, options.batch_size, options.chunk_samples)
        generated = threaded(generate(renderer, features, frames, options.queue_batches), 2 * renderer.batch,
                             "lipsync-inference")
        composited = threaded(Compositor(character, options.blend, pool).stream(generated, options.composite_threads),
                              options.batch_size, "lipsync-composite")
        try:
            yield from composited
        finally:
            composited.close()
