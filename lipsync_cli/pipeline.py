"""The streaming render pipeline (design.md section 5), as a chain of generators on threads:

    audio chunks -> mel windows -> encoder (batched) -> features in the UNet's layout --+
    template frames -> crops -> 6-channel inputs ---------------------------------------+-> UNet (batched)
    -> uint8 patches -> composite into the template frame -> BGR frames

Each arrow with a thread behind it is a bounded queue, so memory does not grow with the audio length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from lipsync_cli.audio.loading import CHUNK_SAMPLES, AudioInfo, stream_audio
from lipsync_cli.characters.manifest import Character
from lipsync_cli.compositing.blend import Blend, composite, to_uint8
from lipsync_cli.features.layouts import SyncTalkGatherer
from lipsync_cli.features.windows import FrameWindows
from lipsync_cli.frames.crops import visual_input
from lipsync_cli.frames.template import open_template, ping_pong
from lipsync_cli.models.inference import AudioEncoder, MouthModel
from lipsync_cli.models.sessions import SessionFactory, shared_factory
from lipsync_cli.stages import threaded


@dataclass(frozen=True)
class PipelineOptions:
    device: str = "cpu"  # a resolved device: "cpu" or "cuda:N"
    batch_size: int = 16
    blend: Blend = "feather"
    chunk_samples: int = CHUNK_SAMPLES


@dataclass(frozen=True)
class _Visual:
    index: int
    frame: np.ndarray
    box: np.ndarray
    tensor: np.ndarray


def frame_count(character: Character, audio: AudioInfo) -> int:
    windows = FrameWindows(audio.samples_16k, character.fps)
    return windows.frames


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


def _rebatch(parts: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    held: list[np.ndarray] = []
    count = 0
    for part in parts:
        held.append(part)
        count += len(part)
        while count >= size:
            joined = np.concatenate(held)
            yield joined[:size]
            held, count = [joined[size:]], count - size
    if count:
        yield np.concatenate(held)


def audio_features(character: Character, audio: AudioInfo, encoder: AudioEncoder, options: PipelineOptions
                   ) -> Iterator[np.ndarray]:
    """Per-frame audio inputs in the UNet's layout, in batches."""
    gatherer = SyncTalkGatherer() if character.layout == "synctalk" else None
    for windows in _rebatch(audio_windows(character, audio, options.chunk_samples), options.batch_size):
        features = encoder.encode(windows)
        out = gatherer.push(features) if gatherer else features
        if len(out):
            yield out
    if gatherer:
        rest = gatherer.finish()
        if len(rest):
            yield rest


def visual_inputs(character: Character, frames: int) -> Iterator[_Visual]:
    template = open_template(character.template, character.video.frames)
    for i in range(frames):
        k = ping_pong(i, template.count)
        frame = template.frame(k)
        box = character.boxes[k]
        yield _Visual(i, frame, box, visual_input(frame, box, character.crop, character.input))


def _generate(character: Character, audio: AudioInfo, options: PipelineOptions, factory: SessionFactory,
              frames: int) -> Iterator[tuple[_Visual, np.ndarray]]:
    encoder = AudioEncoder(factory.session(character.audio_encoder, options.device), character.encoder_contract)
    unet = MouthModel(factory.session(character.model, options.device), character.unet_contract)
    visuals = threaded(visual_inputs(character, frames), 2 * options.batch_size, "lipsync-crops")
    for features in _rebatch(audio_features(character, audio, encoder, options), options.batch_size):
        batch = [next(visuals) for _ in range(len(features))]
        patches = unet.generate(np.stack([v.tensor for v in batch]), features)
        yield from zip(batch, patches)


def _composite(items: Iterator[tuple[_Visual, np.ndarray]], character: Character, blend: Blend
               ) -> Iterator[np.ndarray]:
    for visual, patch in items:
        yield composite(visual.frame, visual.box, to_uint8(patch, character.input.color), character.crop, blend)


def render_frames(character: Character, audio: AudioInfo, options: PipelineOptions = PipelineOptions(),
                  factory: SessionFactory | None = None) -> Iterator[np.ndarray]:
    """Every output frame, BGR uint8 at the template's size, in order; exactly frame_count() of them."""
    factory = factory or shared_factory()
    frames = frame_count(character, audio)
    generated = threaded(_generate(character, audio, options, factory, frames), 2 * options.batch_size,
                         "lipsync-inference")
    yield from threaded(_composite(generated, character, options.blend), 2 * options.batch_size,
                        "lipsync-composite")
