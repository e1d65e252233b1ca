"""The streaming render pipeline (design.md section 5), as a chain of generators on threads:

    audio chunks -> mel windows -> encoder (batched) -> features in the UNet's layout --+
    template frames -> crops -> 6-channel input batches --------------------------------+-> UNet (batched)
    -> uint8 patches -> composite into the template frame -> I420 frames (what ffmpeg encodes)

Each arrow with a thread behind it is a bounded queue, so memory does not grow with the audio length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from lipsync_cli.audio.loading import CHUNK_SAMPLES, AudioInfo, stream_audio
from lipsync_cli.characters.manifest import Character
from lipsync_cli.compositing.blend import Blend, composite_i420, to_uint8
from lipsync_cli.encoding.yuv import even
from lipsync_cli.features.layouts import SyncTalkGatherer
from lipsync_cli.features.windows import FrameWindows
from lipsync_cli.frames.crops import fill_visual_input
from lipsync_cli.frames.template import TemplateFrame, open_template, ping_pong
from lipsync_cli.models.inference import AudioEncoder, MouthModel
from lipsync_cli.models.sessions import SessionFactory, shared_factory
from lipsync_cli.stages import BufferPool, regroup, threaded


@dataclass(frozen=True)
class PipelineOptions:
    device: str = "cpu"  # a resolved device: "cpu" or "cuda:N"
    batch_size: int = 16
    blend: Blend = "feather"
    chunk_samples: int = CHUNK_SAMPLES


@dataclass(frozen=True)
class _VisualBatch:
    frames: list[TemplateFrame]
    tensor: np.ndarray  # [len(frames), 6, inner, inner], a view of a pooled buffer
    buffer: np.ndarray


def frame_count(character: Character, audio: AudioInfo) -> int:
    return FrameWindows(audio.samples_16k, character.fps).frames


def output_shape(character: Character) -> tuple[int, int]:
    """I420 frame shape [H * 3 // 2, W] of a character's output (its size rounded up to even)."""
    return even(character.video.height) * 3 // 2, even(character.video.width)


def audio_windows(character: Character, audio: AudioInfo, chunk: int) -> Iterator[np.ndarray]:
    """[k, 80, 16] mel windows of consecutive video frames, as the audio streams in."""
    windows = FrameWindows(audio.samples_16k, character.fps, character.audio.pad_mode,  # type: ignore[arg-type]
                           character.audio.window_end)  # type: ignore[arg-type]
    for samples in stream_audio(audio, chunk):
        batch = windows.push(samples)
        if batch is not None:
            yield batch.windows
    batch = windows.finish()
    if batch is not None:
        yield batch.windows


def audio_features(character: Character, audio: AudioInfo, encoder: AudioEncoder, options: PipelineOptions
                   ) -> Iterator[np.ndarray]:
    """Per-frame audio inputs in the UNet's layout, in batches."""
    gatherer = SyncTalkGatherer() if character.layout == "synctalk" else None
    for windows in regroup(audio_windows(character, audio, options.chunk_samples), options.batch_size):
        features = encoder.encode(windows)
        out = gatherer.push(features) if gatherer else features
        if len(out):
            yield out
    if gatherer:
        rest = gatherer.finish()
        if len(rest):
            yield rest


def visual_batches(character: Character, frames: int, batch_size: int, pool: BufferPool) -> Iterator[_VisualBatch]:
    """The UNet's visual inputs for frames 0 .. frames-1, in batches of batch_size (the last may be short)."""
    template = open_template(character)
    for first in range(0, frames, batch_size):
        count = min(batch_size, frames - first)
        buffer = pool.take()
        batch = [template.frame(ping_pong(i, template.count)) for i in range(first, first + count)]
        for slot, frame in enumerate(batch):
            fill_visual_input(buffer[slot], frame.crop, character.input)
        yield _VisualBatch(batch, buffer[:count], buffer)


def _generate(character: Character, audio: AudioInfo, options: PipelineOptions, factory: SessionFactory,
              frames: int) -> Iterator[tuple[TemplateFrame, np.ndarray]]:
    encoder = AudioEncoder(factory.session(character.audio_encoder, options.device), character.encoder_contract)
    unet = MouthModel(factory.session(character.model, options.device), character.unet_contract)
    inner = character.crop.inner
    pool = BufferPool((options.batch_size, 6, inner, inner), np.float32)
    visuals = threaded(visual_batches(character, frames, options.batch_size, pool), 2, "lipsync-crops")
    for features in regroup(audio_features(character, audio, encoder, options), options.batch_size):
        batch = next(visuals)
        if len(batch.frames) != len(features):  # both are cut at the same frame numbers
            raise AssertionError(f"visual batch of {len(batch.frames)} for {len(features)} audio features")
        patches = unet.generate(batch.tensor, features)
        pool.give(batch.buffer)
        yield from zip(batch.frames, patches, strict=True)


def _composite(items: Iterator[tuple[TemplateFrame, np.ndarray]], character: Character, blend: Blend,
               pool: BufferPool | None) -> Iterator[np.ndarray]:
    for frame, patch in items:
        out = pool.take() if pool is not None else None
        yield composite_i420(frame, to_uint8(patch, character.input.color), character.crop, blend, out)


def render_frames(character: Character, audio: AudioInfo, options: PipelineOptions = PipelineOptions(),
                  factory: SessionFactory | None = None, pool: BufferPool | None = None) -> Iterator[np.ndarray]:
    """Every output frame as I420 uint8 [H * 3 // 2, W] (the template's size rounded up to even), in order;
    exactly frame_count() of them. With a `pool` (of output_shape), frames are taken from it, and the
    caller may give each back once it is done with it."""
    factory = factory or shared_factory()
    frames = frame_count(character, audio)
    generated = threaded(_generate(character, audio, options, factory, frames), 2 * options.batch_size,
                         "lipsync-inference")
    yield from threaded(_composite(generated, character, options.blend, pool), options.batch_size,
                        "lipsync-composite")
