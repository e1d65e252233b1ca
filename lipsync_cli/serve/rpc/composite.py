"""`InferBatchComposite` without the network: one request's batch rendered by the same pieces as files and
live sessions (design.md section 15).

The request's audio is a clip of its own: its frames are those of an offline render of the clip (the same
resampling, mel, windows and features), and batch frame j is composited into template frame
(start_frame_idx + j) modulo the template's length (the seed's rule, not the ping-pong playback order). The
visual input is the character's own crops, or the client's UNet input when it sends one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lipsync_cli.audio.resample import StreamResampler
from lipsync_cli.characters.manifest import Character
from lipsync_cli.errors import InputError
from lipsync_cli.features.stream import FeatureStream
from lipsync_cli.features.windows import FrameWindows
from lipsync_cli.live.frames import MAX_RATE, MIN_RATE
from lipsync_cli.models.devices import Device, DeviceRequest
from lipsync_cli.render.compositor import Compositor
from lipsync_cli.render.jobs import RenderOptions
from lipsync_cli.render.planning import resolve_character, resolve_device
from lipsync_cli.render.renderer import FrameRenderer
from lipsync_cli.serve.encoders import JpegEncoder

if TYPE_CHECKING:
    from lipsync_cli.runtime import Runtime

MAX_BATCH = 32
MAX_AUDIO_SECONDS = 10.0
DEFAULT_RATE = 16_000
LEASE_TIMEOUT = 30.0  # waiting for room in a full model budget


@dataclass(frozen=True)
class BatchRequest:
    """The fields of a CompositeBatchRequest, as they came."""

    model_id: str
    visual_frames: bytes
    raw_audio: bytes
    audio_features: bytes
    batch_size: int
    start_frame_idx: int
    sample_rate: int


@dataclass(frozen=True)
class BatchResult:
    frames: list[bytes]  # JPEG
    inference_ms: float
    composite_ms: float  # compositing and JPEG encoding
    audio_ms: float  # resampling, mel, windows and the audio encoder
    total_ms: float


def check_shape(request: BatchRequest) -> None:
    """What can be checked before the character is looked at."""
    if not 1 <= request.batch_size <= MAX_BATCH:
        raise InputError(f"batch_size must be 1 to {MAX_BATCH}, not {request.batch_size}")
    if request.start_frame_idx < 0:
        raise InputError(f"start_frame_idx must be 0 or more, not {request.start_frame_idx}")
    if request.raw_audio and request.audio_features:
        raise InputError("send raw_audio or audio_features, not both")
    if not request.raw_audio and not request.audio_features:
        raise InputError("raw_audio is empty (and no audio_features were sent)")
    rate = request.sample_rate or DEFAULT_RATE
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InputError(f"sample_rate must be {MIN_RATE} to {MAX_RATE} Hz (0 for 16000), not {request.sample_rate}")
    seconds = len(request.raw_audio) / 4 / rate
    if seconds > MAX_AUDIO_SECONDS:
        raise InputError(f"raw_audio holds {seconds:.1f} s; a request is limited to {MAX_AUDIO_SECONDS:g} s")


def floats(data: bytes, what: str) -> np.ndarray:
    """Little-endian float32 values, every one finite."""
    if len(data) % 4:
        raise InputError(f"{what} must hold whole float32 values: {len(data)} bytes is not a multiple of 4")
    values = np.frombuffer(data, "<f4")
    if not np.isfinite(values.sum(dtype=np.float64)):
        raise InputError(f"{what} contains NaN or infinite values")
    return values


def clip_features(renderer: FrameRenderer, character: Character, audio: np.ndarray, rate: int, frames: int
                  ) -> np.ndarray:
    """The UNet's audio input of the clip's first `frames` frames, as an offline render of the clip has them."""
    seconds = len(audio) / rate
    resampler = StreamResampler(rate, character.audio.resample)
    x16 = np.concatenate([resampler.push(audio), resampler.finish()])
    windows = FrameWindows(len(x16), character.fps, character.audio.pad_mode, character.audio.window_end)
    parts = [b.windows for b in (windows.push(x16), windows.finish()) if b is not None]
    total = windows.frames or 0
    if total < frames:
        raise InputError(f"raw_audio holds {seconds * 1000:.0f} ms at {rate} Hz: {total} frame(s) at "
                         f"{float(character.fps):g} fps, fewer than batch_size {frames}")
    stream = FeatureStream(renderer.encode, character.layout)
    batches = [stream.push(np.concatenate(parts)), stream.finish()]
    features = np.concatenate([b.features for b in batches if b is not None])
    return features[:frames]


def given_features(character: Character, data: bytes, frames: int) -> np.ndarray:
    tail = (512,) if character.layout == "per_frame" else (32, 16, 16)
    values = floats(data, "audio_features")
    if values.size != frames * int(np.prod(tail)):
        raise InputError(f"audio_features must be batch_size x {list(tail)} float32 ({frames * int(np.prod(tail)) * 4} "
                         f"bytes for {frames} frames), not {len(data)} bytes")
    return values.reshape(frames, *tail)


def given_visual(character: Character, data: bytes, frames: int) -> np.ndarray:
    inner = character.crop.inner
    values = floats(data, "visual_frames")
    if values.size != frames * 6 * inner * inner:
        raise InputError(f"visual_frames must be batch_size x 6x{inner}x{inner} float32 for {character.name} "
                         f"({frames * 6 * inner * inner * 4} bytes for {frames} frames), not {len(data)} bytes")
    return values.reshape(frames, 6, inner, inner)


@dataclass(frozen=True)
class ReadyModel:
    character: Character
    device: Device
    load_ms: float | None  # what loading it took here; None: it was loaded already


def ready_model(runtime: Runtime, folder: Path, device_request: DeviceRequest = DeviceRequest("auto")) -> ReadyModel:
    """The request's character, checked, with its models loaded on their device (a thread of its own: a load
    never holds up the batches of models already loaded)."""
    character = resolve_character(runtime, str(folder))
    files = tuple(p.resolve() for p in (character.audio_encoder, character.model))
    if device_request.kind == "auto":  # a loaded model stays where it is, without the check of a new placement
        candidates = runtime.devices()[0]
        loaded = [d for f, d in runtime.registry.loaded() if f == files and d in candidates]
        if loaded:
            return ReadyModel(character, loaded[0], None)
    device, _ = resolve_device(runtime, character, device_request)
    if (files, device) in runtime.registry.loaded():
        return ReadyModel(character, device, None)
    started = time.perf_counter()
    with runtime.registry.lease(files, device, character.name, LEASE_TIMEOUT, count=False):
        pass
    return ReadyModel(character, device, (time.perf_counter() - started) * 1000)


def render_batch(runtime: Runtime, model: ReadyModel, request: BatchRequest, quality: int) -> BatchResult:
    """Every frame of the request as JPEG; raises a LipsyncError (one line) for anything it cannot do."""
    started = time.perf_counter()
    character, n = model.character, request.batch_size
    visual = given_visual(character, request.visual_frames, n) if request.visual_frames else None
    audio = floats(request.raw_audio, "raw_audio") if request.raw_audio else None
    blend = RenderOptions().blend
    with FrameRenderer(runtime, character, model.device, n, blend, LEASE_TIMEOUT) as renderer:
        leased = time.perf_counter()
        if audio is not None:
            features = clip_features(renderer, character, audio, request.sample_rate or DEFAULT_RATE, n)
        else:
            features = given_features(character, request.audio_features, n)
        audio_done = time.perf_counter()
        count = renderer.template.count
        frames = [renderer.template.frame((request.start_frame_idx + j) % count) for j in range(n)]
        renderer.unet.done = 0
        if visual is not None:
            patches = list(renderer.unet.generate(visual, features))
        else:
            inputs = renderer.prepare(frames, np.empty((n, *renderer.input_shape), renderer.input_dtype))
            patches = renderer.infer(frames, inputs, features, 0)
        inferred = time.perf_counter()
        compositor, encoder = Compositor(character, blend), JpegEncoder(quality)
        jpegs = [encoder.encode(compositor.one(frame, patch))[0] for frame, patch in zip(frames, patches, strict=True)]
    ended = time.perf_counter()
    return BatchResult(jpegs, (inferred - audio_done) * 1000, (ended - inferred) * 1000,
                       (audio_done - leased) * 1000, (ended - started) * 1000)
