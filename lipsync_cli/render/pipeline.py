"""The streaming render pipeline (design.md section 5), as a chain of generators on threads:

    audio chunks -> mel windows -> encoder (batched) -> features in the UNet's layout --+
    template frames -> crops -> 6-channel input batches --------------------------------+-> UNet (batched)
    -> uint8 patches -> composite into the template frame -> I420 frames (what ffmpeg encodes)

Each arrow with a thread behind it is a bounded queue, so memory does not grow with the audio length.
On a GPU (models/device_chain.py) the uint8 crops go to the device instead, where ONNX graphs make the
UNet's input and, for feather and hard, composite the patch and convert the box region to I420; only the
region's planes come back. The composite stage runs on `composite_threads` threads.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lipsync_cli.audio.loading import CHUNK_SAMPLES, AudioInfo, stream_audio
from lipsync_cli.characters.manifest import Character
from lipsync_cli.compositing.blend import Blend, composite_i420, region_changes, to_uint8, write_region
from lipsync_cli.compositing.color_match import ColorMatcher, apply, measure
from lipsync_cli.encoding.yuv import even
from lipsync_cli.features.layouts import SyncTalkGatherer
from lipsync_cli.features.windows import FrameWindows
from lipsync_cli.frames.crops import fill_visual_input
from lipsync_cli.frames.store import Template
from lipsync_cli.frames.template import TemplateFrame
from lipsync_cli.models.device_chain import DeviceChain, RegionPlanes, chain_supports
from lipsync_cli.models.devices import CPU, Device
from lipsync_cli.models.inference import AudioEncoder, MouthModel
from lipsync_cli.stages import BufferPool, ordered_map, regroup, threaded

if TYPE_CHECKING:
    from lipsync_cli.runtime import Runtime


@dataclass(frozen=True)
class PipelineOptions:
    device: Device = CPU
    batch_size: int = 16
    blend: Blend = "match"
    chunk_samples: int = CHUNK_SAMPLES
    composite_threads: int = 1


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
    windows = FrameWindows(audio.samples_16k, character.fps, character.audio.pad_mode, character.audio.window_end)
    for samples in stream_audio(audio, chunk, character.audio.resample):
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


def visual_batches(character: Character, template: Template, frames: int, batch_size: int, pool: BufferPool,
                   stop: threading.Event | None = None) -> Iterator[_VisualBatch]:
    """The UNet's visual inputs for frames 0 .. frames-1, in batches of batch_size (the last may be short)."""
    for first in range(0, frames, batch_size):
        count = min(batch_size, frames - first)
        buffer = pool.take()
        batch = [template.frame(character.template_index(i), stop) for i in range(first, first + count)]
        for slot, frame in enumerate(batch):
            fill_visual_input(buffer[slot], frame.crop, character.input)
        yield _VisualBatch(batch, buffer[:count], buffer)


def crop_batches(character: Character, template: Template, frames: int, batch_size: int,
                 stop: threading.Event | None = None) -> Iterator[tuple[list[TemplateFrame], np.ndarray]]:
    """The template frames and their uint8 crops [n, inner, inner, 3], in batches (for the device chain)."""
    for first in range(0, frames, batch_size):
        last = min(frames, first + batch_size)
        batch = [template.frame(character.template_index(i), stop) for i in range(first, last)]
        yield batch, np.stack([frame.crop for frame in batch])


def _generate(character: Character, audio: AudioInfo, options: PipelineOptions, encoder: AudioEncoder,
              unet: MouthModel, template: Template, frames: int
              ) -> Iterator[tuple[TemplateFrame, np.ndarray | RegionPlanes]]:
    inner = character.crop.inner
    pool = BufferPool((options.batch_size, 6, inner, inner), np.float32)
    stop = threading.Event()
    visuals = threaded(visual_batches(character, template, frames, options.batch_size, pool, stop), 2,
                       "lipsync-crops", stop)
    try:
        for features in regroup(audio_features(character, audio, encoder, options), options.batch_size):
            batch = next(visuals)
            if len(batch.frames) != len(features):  # both are cut at the same frame numbers
                raise AssertionError(f"visual batch of {len(batch.frames)} for {len(features)} audio features")
            patches = unet.generate(batch.tensor, features)
            pool.give(batch.buffer)
            yield from zip(batch.frames, patches, strict=True)
    finally:
        visuals.close()


def _generate_on_device(character: Character, audio: AudioInfo, options: PipelineOptions, encoder: AudioEncoder,
                        chain: DeviceChain, template: Template, frames: int
                        ) -> Iterator[tuple[TemplateFrame, np.ndarray | RegionPlanes]]:
    stop = threading.Event()
    crops = threaded(crop_batches(character, template, frames, chain.batch, stop), 2, "lipsync-crops", stop)
    try:
        for features in regroup(audio_features(character, audio, encoder, options), chain.batch):
            batch, images = next(crops)
            if len(batch) != len(features):
                raise AssertionError(f"crop batch of {len(batch)} for {len(features)} audio features")
            chain.run(images, features)
            if chain.blends_here:
                for j, frame in enumerate(batch):
                    yield frame, chain.region_planes(j, frame)
            else:
                yield from zip(batch, chain.patches_on_host(), strict=True)
    finally:
        crops.close()


def _composite(items: Iterator[tuple[TemplateFrame, np.ndarray | RegionPlanes]], character: Character,
               options: PipelineOptions, pool: BufferPool | None) -> Iterator[np.ndarray]:
    """Patches into frames, on `options.composite_threads` threads; only the colour match's smoothing runs
    in order, between its measuring and its applying."""
    matcher = ColorMatcher() if options.blend == "match" else None
    blend = "feather" if options.blend == "match" else options.blend
    workers = max(1, options.composite_threads)
    executor = ThreadPoolExecutor(workers, thread_name_prefix="lipsync-composite") if workers > 1 else None
    ahead = 2 * workers

    def measured(item: tuple[TemplateFrame, np.ndarray | RegionPlanes]) -> tuple:
        frame, patch = item
        if isinstance(patch, RegionPlanes):
            return frame, patch, None
        image = to_uint8(patch, character.input.color)
        return frame, image, measure(image, frame.ring) if matcher is not None else None

    def smoothed(stream: Iterator[tuple]) -> Iterator[tuple]:
        for frame, image, facts in stream:
            yield frame, image, facts, matcher.smooth(facts) if matcher is not None and facts is not None else None

    def composited(item: tuple) -> np.ndarray:
        frame, image, facts, correction = item
        out = pool.take() if pool is not None else None
        if isinstance(image, RegionPlanes):  # blended on the device (never with a protect mask)
            return write_region(frame, (image.y, image.u, image.v), *region_changes(frame, character.crop, blend),
                                out)
        if facts is not None:
            image = apply(facts, correction)
        keep = character.protect_mask(frame.index, frame.region)
        return composite_i420(frame, image, character.crop, blend, out, keep)

    try:
        yield from ordered_map(composited, smoothed(ordered_map(measured, items, executor, ahead)), executor, ahead)
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        close = getattr(items, "close", None)
        if close is not None:
            close()


def render_frames(character: Character, audio: AudioInfo, options: PipelineOptions, runtime: Runtime,
                  pool: BufferPool | None = None) -> Generator[np.ndarray, None, None]:
    """Every output frame as I420 uint8 [H * 3 // 2, W] (the template's size rounded up to even), in order;
    exactly frame_count() of them. The models are leased from the runtime's registry and the template is
    read through its store for as long as the frames flow. With a `pool` (of output_shape), frames are
    taken from it, and the caller may give each back once it is done with it."""
    frames = frame_count(character, audio)
    files = (character.audio_encoder, character.model)
    with ExitStack() as stack:
        lease = stack.enter_context(runtime.registry.lease(files, options.device, character.name))
        template = stack.enter_context(runtime.templates.open(character))
        encoder_session, unet_session = lease.sessions
        bind_on = runtime.bind_on(options.device)
        encoder = AudioEncoder(encoder_session, character.encoder_contract, bind_on)
        unet = MouthModel(unet_session, character.unet_contract, on_run=lease.record, bind_on=bind_on)
        if runtime.processes_on(options.device) and chain_supports(character):
            prepare, composite = runtime.processing_sessions(options.device)
            chain = DeviceChain(unet, prepare, composite, character, options.device, options.batch_size, options.blend)
            source = _generate_on_device(character, audio, options, encoder, chain, template, frames)
        else:
            source = _generate(character, audio, options, encoder, unet, template, frames)
        generated = threaded(source, 2 * options.batch_size, "lipsync-inference")
        composited = threaded(_composite(generated, character, options, pool), options.batch_size,
                              "lipsync-composite")
        try:
            yield from composited
        finally:
            composited.close()
