"""Each stage of the pipeline timed alone on the bench's audio and the character's template: the audio front
end, the encoder, template decode + prepare, the UNet (with its copies, then alone with its inputs in
place), the composite with the bench's blend, and the encoder."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lipsync_cli.audio.loading import CHUNK_SAMPLES
from lipsync_cli.bench.report import Stage, make_stage, timed
from lipsync_cli.characters.manifest import Character
from lipsync_cli.compositing.blend import Blend, composite_i420, to_uint8
from lipsync_cli.compositing.color_match import ColorMatcher, apply, measure
from lipsync_cli.encoding.ffmpeg import EncodeSettings, VideoWriter
from lipsync_cli.encoding.yuv import even
from lipsync_cli.features.layouts import SyncTalkGatherer
from lipsync_cli.features.windows import FrameWindows
from lipsync_cli.frames.crops import visual_input
from lipsync_cli.frames.store import TemplateStore
from lipsync_cli.models.devices import Device
from lipsync_cli.models.inference import AudioEncoder, Bindings, MouthModel
from lipsync_cli.specs import ping_pong


def _unet_alone_ms(unet: MouthModel, device: Device, visual: np.ndarray, audio: np.ndarray, seconds: float
                   ) -> list[float]:
    """Per-frame time of the UNet's own run: inputs bound on its device once, output left there (onnxruntime's IO
    binding); on OpenVINO, a call on the same inputs, its output copied out (a few hundred microseconds)."""
    n = min(len(visual), len(audio))
    feeds = {name: np.ascontiguousarray(value[:n], dtype=unet.types.get(name, "float32"))
             for name, value in ((unet.visual, visual), (unet.audio, audio))}
    if device.backend != "onnxruntime":
        unet.session.run([unet.output], feeds)  # warm-up
        times: list[float] = []
        ends = time.perf_counter() + seconds
        while len(times) < 3 or time.perf_counter() < ends:
            start = time.perf_counter()
            unet.session.run([unet.output], feeds)
            times.append((time.perf_counter() - start) * 1000 / n)
        return times
    bound = Bindings(unet.session, device, unet.output, unet.types.get(unet.output, "float32"), feeds,
                     (n, *unet.tail))
    bound.run(unet.session, feeds)  # inputs copied in once; warm-up
    samples: list[float] = []
    budget = time.perf_counter() + seconds
    while len(samples) < 3 or time.perf_counter() < budget:
        start = time.perf_counter()
        unet.session.run_with_iobinding(bound.binding)
        samples.append((time.perf_counter() - start) * 1000 / n)
    return samples


def time_stages(tmp_path: Path, character: Character, encoder: AudioEncoder, unet: MouthModel, device: Device,
                x: np.ndarray, batch_size: int, settings: EncodeSettings, blend: Blend,
                say: Callable[[str], None]) -> list[Stage]:
    n16 = len(x)
    stages: list[Stage] = []

    say("audio front end")
    chunk_ms: list[float] = []
    partial_ms: list[float] = []
    windows: list[np.ndarray] = []
    for repeat in range(10):  # cheap: enough repeats for a median that does not flip with noise
        fw = FrameWindows(n16, character.fps, character.audio.pad_mode, character.audio.window_end)
        for a in range(0, n16, CHUNK_SAMPLES):
            chunk = x[a : a + CHUNK_SAMPLES]
            start = time.perf_counter()
            batch = fw.push(chunk)
            elapsed = (time.perf_counter() - start) * 1000
            (chunk_ms if len(chunk) == CHUNK_SAMPLES else partial_ms).append(elapsed)
            if repeat == 0 and batch is not None:
                windows.append(batch.windows)
        last = fw.finish()
        if repeat == 0 and last is not None:
            windows.append(last.windows)
    stages.append(make_stage("audio front end", "640 ms chunk", chunk_ms or partial_ms))  # partial: under 640 ms
    all_windows = np.concatenate(windows)
    frames = len(all_windows)

    say("audio encoder")
    encoder.encode(all_windows[:batch_size])  # warm-up
    enc_ms: list[float] = []
    features: list[np.ndarray] = []
    for repeat in range(3):
        for a in range(0, frames, batch_size):
            windows_batch = all_windows[a : a + batch_size]
            start = time.perf_counter()
            out = encoder.encode(windows_batch)
            enc_ms.append((time.perf_counter() - start) * 1000 / len(windows_batch))
            if repeat == 0:
                features.append(out)
    stages.append(make_stage("audio encoder", "window", enc_ms))
    feats = np.concatenate(features)
    if character.layout == "synctalk":
        gatherer = SyncTalkGatherer()
        feats = np.concatenate([gatherer.push(feats), gatherer.finish()])

    say("template decode + prepare")
    # a store without a disk cache: every template frame is decoded and prepared here, as on a first render
    store = TemplateStore(cache_dir=None)
    template = store.open(character.template_spec)
    decode_ms: list[float] = []
    visuals: list[np.ndarray] = []
    for i in range(frames):
        k = ping_pong(i, template.count)
        start = time.perf_counter()
        tensor = visual_input(template.frame(k).crop, character.input)
        elapsed = (time.perf_counter() - start) * 1000
        if i < template.count:  # first pass: decode included
            decode_ms.append(elapsed)
        if len(visuals) < batch_size:
            visuals.append(tensor)
    stages.append(make_stage("template decode + prepare", "template frame", decode_ms))

    say("UNet")
    visual_batch = np.stack(visuals)
    n_batch = len(visual_batch)
    unet.generate(visual_batch, feats[:n_batch])  # warm-up
    unet_ms: list[float] = []
    patches: np.ndarray | None = None
    budget = time.perf_counter() + max(3.0, n16 / 16000)
    for a in range(0, frames, n_batch):
        f = feats[a : a + n_batch]
        start = time.perf_counter()
        patches = unet.generate(visual_batch[: len(f)], f)
        unet_ms.append((time.perf_counter() - start) * 1000 / len(f))
        if len(unet_ms) >= 3 and time.perf_counter() > budget:
            break
    stages.append(make_stage("UNet", "frame", unet_ms))
    say("UNet alone (inputs in place on the device, no copies)")
    stages.append(make_stage("UNet alone", "frame", _unet_alone_ms(unet, device, visual_batch, feats[:n_batch],
                                                                 max(2.0, n16 / 32000))))

    assert patches is not None
    say("composite")
    comp_ms: list[float] = []
    rendered: list[np.ndarray] = []
    matcher = ColorMatcher()  # match: colours corrected, then feathered
    for i in range(frames):
        k = ping_pong(i, template.count)
        frame = template.frame(k)
        start = time.perf_counter()
        patch = to_uint8(patches[i % len(patches)], character.input.color)
        if blend == "match":
            measured = measure(patch, frame.ring)
            patch = apply(measured, matcher.smooth(measured))
        out = composite_i420(frame, patch, character.crop, "feather" if blend == "match" else blend)
        comp_ms.append((time.perf_counter() - start) * 1000)
        if len(rendered) < 50:
            rendered.append(out)
    stages.append(make_stage("composite", "frame", comp_ms))

    template.close()
    store.close()

    say("encode")
    writer = VideoWriter(tmp_path / "encode.mp4", even(character.video.width), even(character.video.height),
                         character.fps, None, settings, pix_fmt="yuv420p")
    enc_block_ms = []
    try:
        for a in range(0, frames, 25):
            block = range(a, min(frames, a + 25))
            start = time.perf_counter()
            for i in block:
                writer.write(rendered[i % len(rendered)])
            enc_block_ms.append((time.perf_counter() - start) * 1000 / len(block))
        flush = timed(writer.finish)
        enc_block_ms[-1] += flush / max(1, min(25, frames))
    finally:
        writer.abort()
    stages.append(make_stage("encode", "frame", enc_block_ms))
    return stages
