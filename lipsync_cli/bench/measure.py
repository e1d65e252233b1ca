"""Time each stage of the real pipeline on one machine, side by side, and the whole render against a
plain ffmpeg transcode of the same frames (the physical limit of decode + encode)."""

from __future__ import annotations

import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from lipsync_cli.audio.loading import CHUNK_SAMPLES, probe_audio
from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.bench.in_flight import LEVELS, in_flight_fps
from lipsync_cli.characters.manifest import Character
from lipsync_cli.compositing.blend import composite_i420, to_uint8
from lipsync_cli.compositing.color_match import ColorMatcher, apply, measure
from lipsync_cli.compositing.seam import seam_scores
from lipsync_cli.encoding.ffmpeg import EncodeSettings, VideoWriter, ffmpeg_exe
from lipsync_cli.encoding.yuv import even
from lipsync_cli.features.layouts import SyncTalkGatherer
from lipsync_cli.features.windows import FrameWindows
from lipsync_cli.frames.crops import visual_input
from lipsync_cli.frames.store import TemplateStore
from lipsync_cli.frames.template import ping_pong
from lipsync_cli.models.devices import Device, DeviceRequest, parse_device
from lipsync_cli.models.inference import AudioEncoder, Bindings, MouthModel
from lipsync_cli.render import RenderJob, RenderOptions, default_batch, execute, plan
from lipsync_cli.render.jobs import BLENDS
from lipsync_cli.render.pipeline import PipelineOptions, frame_count, render_frames
from lipsync_cli.runtime import Runtime, RuntimeConfig

# The seed's targets (design.md section 7) and ours, in ms.
TARGETS = {
    "audio front end": (5.0, 0.5),
    "audio encoder": (2.0, 1.0),
    "UNet": (10.0, None),  # the seed's is a GPU figure
    "end to end": (50.0, None),
}
TRANSCODE_RATIO_TARGET = 1.25
OVER_UNET_TARGET = 1.10  # end to end / UNet alone, for a model that costs more than the work around it


@dataclass
class Stage:
    name: str
    per: str
    samples_ms: list[float] = field(repr=False)
    seed_target_ms: float | None = None
    our_target_ms: float | None = None

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def spread_ms(self) -> tuple[float, float]:
        q = np.percentile(self.samples_ms, [10, 90])
        return float(q[0]), float(q[1])

    def met(self, device: str) -> bool | None:
        target = self.our_target_ms
        if target is None and (self.name != "UNet" or device != "cpu"):  # the seed's UNet figure is a GPU one
            target = self.seed_target_ms
        return None if target is None else self.median_ms <= target

    def to_dict(self, device: str) -> dict:
        p10, p90 = self.spread_ms
        return {"per": self.per, "median_ms": self.median_ms, "p10_ms": p10, "p90_ms": p90,
                "samples": len(self.samples_ms), "seed_target_ms": self.seed_target_ms,
                "our_target_ms": self.our_target_ms, "met": self.met(device)}


@dataclass
class BenchReport:
    character: str
    device: str
    provider: str
    layout: str
    threads: int
    batch_size: int
    seconds: float
    frames: int
    frame_size: str
    stages: list[Stage]
    render_seconds: float
    transcode_seconds: float
    peak_memory_mb: float
    cold_render_seconds: float  # the first render of the character: template decoded and prepared
    warm_render_seconds: float  # the second, in a fresh runtime: template read from the on-disk cache
    seam: dict = field(default_factory=dict)  # blend -> {"ring_difference", "boundary_step"} in levels
    parameters: dict = field(default_factory=dict)
    in_flight_fps: dict = field(default_factory=dict)  # renders at once -> aggregate frames per second
    io_binding: bool = False
    device_processing: bool = False

    @property
    def fps(self) -> float:
        return self.frames / self.render_seconds

    @property
    def realtime(self) -> float:
        return self.seconds / self.render_seconds

    @property
    def transcode_ratio(self) -> float:
        return self.render_seconds / self.transcode_seconds

    @property
    def warm_speedup(self) -> float:
        return self.cold_render_seconds / self.warm_render_seconds

    def median(self, stage: str) -> float:
        return next(s.median_ms for s in self.stages if s.name == stage)

    @property
    def over_unet(self) -> float:
        """End to end per frame / the UNet's own run per frame: 1.0 means the model is all that costs."""
        return self.median("end to end") / self.median("UNet alone")

    def to_json(self) -> dict:
        data = asdict(self)
        data["stages"] = {s.name: s.to_dict(self.device) for s in self.stages}
        data.update(fps=self.fps, realtime=self.realtime, transcode_ratio=self.transcode_ratio,
                    warm_speedup=self.warm_speedup, end_to_end_over_unet=self.over_unet,
                    end_to_end_over_unet_target=OVER_UNET_TARGET,
                    transcode_ratio_target=TRANSCODE_RATIO_TARGET,
                    transcode_ratio_met=self.transcode_ratio <= TRANSCODE_RATIO_TARGET)
        return data


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _stage(name: str, per: str, samples: list[float]) -> Stage:
    seed, ours = TARGETS.get(name, (None, None))
    return Stage(name, per, samples, seed, ours)


def transcode_seconds(template: Path, frames: int, settings: EncodeSettings, out: Path) -> float:
    """A plain decode + encode of `frames` template frames with the same encoder settings."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-stream_loop", "-1",
           "-i", str(template), "-frames:v", str(frames), "-an", *settings.video_args(),
           "-movflags", "+faststart", "-f", "mp4", str(out)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def run_bench(character: Character, device: DeviceRequest, seconds: float, batch_size: int | None,
              threads: int | None = None, say: Callable[[str], None] = lambda s: None,
              settings: EncodeSettings = EncodeSettings(), in_flight: tuple[int, ...] = LEVELS,
              io_binding: bool | None = None, device_processing: bool | None = None) -> BenchReport:
    """Time each stage, then whole renders: two in fresh runtimes sharing a fresh template cache (cold, then
    warm), the end-to-end figure from a third render in the warm runtime, and the aggregate speed of
    `in_flight` renders at once."""
    with tempfile.TemporaryDirectory(prefix="lipsync-bench-") as tmp:
        config = RuntimeConfig(threads=threads, cache_dir=Path(tmp) / "templates", io_binding=io_binding,
                               device_processing=device_processing)
        with Runtime(config) as runtime:
            report = _bench(runtime, Path(tmp), character, device, seconds, batch_size, say, settings.checked())
        if in_flight:
            request = parse_device(report.device)  # where the stages ran, not `auto` again
            report.in_flight_fps = in_flight_fps(config, Path(tmp), str(character.root), request,
                                                 report.batch_size, min(seconds, 2.0), in_flight, say)
        return report


def _bench(runtime: Runtime, tmp_path: Path, character: Character, device: DeviceRequest, seconds: float,
           batch_size: int | None, say: Callable[[str], None], settings: EncodeSettings) -> BenchReport:
    files = (character.audio_encoder, character.model)
    resolved, notice = runtime.resolve(device, files, character.name)
    if notice:
        say(f"note: {notice}")
    batch_size = batch_size or default_batch(resolved)
    x = speech_like(seconds, seed=3)
    n16 = len(x)
    audio = tmp_path / "speech.wav"
    sf.write(audio, x, 16000, subtype="FLOAT")

    def whole_render(rt: Runtime, name: str, on_event=None):
        job = RenderJob(audio, str(character.root), tmp_path / name,
                        RenderOptions(DeviceRequest(resolved.kind, resolved.index), batch_size, encode=settings,
                                      overwrite=True))
        return execute(plan(job, rt), rt, on_event)

    say("first render (template decoded and prepared)")
    with Runtime(runtime.config) as fresh:
        cold = whole_render(fresh, "cold.mp4")
    say("second render (template from the cache)")
    with Runtime(runtime.config) as fresh:
        warm = whole_render(fresh, "warm.mp4")

    with runtime.registry.lease(files, resolved, character.name) as lease:
        bind_on = runtime.bind_on(resolved)
        encoder = AudioEncoder(lease.sessions[0], character.encoder_contract, bind_on)
        unet = MouthModel(lease.sessions[1], character.unet_contract, bind_on=bind_on)
        provider = lease.sessions[1].get_providers()[0]
        stages = _stages(tmp_path, character, encoder, unet, resolved, x, batch_size, settings, say)

    say("end to end")
    stamps: list[float] = []
    result = whole_render(runtime, "render.mp4", lambda event: stamps.append(time.perf_counter()))
    # frames leave the pipeline in bursts (a batch at a time): time blocks of 25 frames
    blocks = [(stamps[a + 25] - stamps[a]) * 40 for a in range(0, len(stamps) - 25, 25)]
    stages.append(_stage("end to end", "frame", blocks or [result.elapsed * 1000 / result.frames]))

    say("plain ffmpeg transcode")
    transcode = transcode_seconds(character.template, result.frames, settings, tmp_path / "transcode.mp4")
    say("seam of each blend")
    seam = seam_by_blend(runtime, character, audio, resolved, batch_size)
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return BenchReport(character.name, str(resolved), provider, character.layout, runtime.threads, batch_size,
                       n16 / 16000, result.frames, f"{character.video.width}x{character.video.height}",
                       stages, result.elapsed, transcode, usage, cold.elapsed, warm.elapsed, seam,
                       io_binding=runtime.bind_on(resolved) is not None,
                       device_processing=runtime.processes_on(resolved))


def seam_by_blend(runtime: Runtime, character: Character, audio: Path, device, batch_size: int,
                  seconds: float = 2.0) -> dict:
    """Ring difference and boundary step (seam.py) of each blend, on the frames before encoding (no codec
    noise), over the first `seconds` of the bench's audio."""
    info = probe_audio(audio)
    frames = min(frame_count(character, info), round(seconds * float(character.fps)))
    scores = {}
    with runtime.templates.open(character) as template:
        for blend in BLENDS:
            rings, steps = [], []
            options = PipelineOptions(device=device, batch_size=batch_size, blend=blend)
            generated = render_frames(character, info, options, runtime)
            try:
                for i, frame in zip(range(frames), generated, strict=False):  # the first `frames`
                    reference = template.frame(character.template_index(i))
                    out = cv2.cvtColor(frame, cv2.COLOR_YUV2BGR_I420)
                    base = cv2.cvtColor(np.asarray(reference.i420), cv2.COLOR_YUV2BGR_I420)
                    ring, step = seam_scores(out, base, reference.box, character.crop)
                    rings.append(ring)
                    steps.append(step)
            finally:
                generated.close()
            scores[blend] = {"ring_difference": float(np.mean(rings)), "boundary_step": float(np.mean(steps))}
    return scores


def _unet_alone_ms(unet: MouthModel, device: Device, visual: np.ndarray, audio: np.ndarray, seconds: float
                   ) -> list[float]:
    """Per-frame time of the UNet's own run: inputs bound on its device once, output left there."""
    n = min(len(visual), len(audio))
    feeds = {name: np.ascontiguousarray(value[:n], dtype=unet.types.get(name, "float32"))
             for name, value in ((unet.visual, visual), (unet.audio, audio))}
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


def _stages(tmp_path: Path, character: Character, encoder: AudioEncoder, unet: MouthModel, device: Device,
            x: np.ndarray, batch_size: int, settings: EncodeSettings, say: Callable[[str], None]) -> list[Stage]:
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
    stages.append(_stage("audio front end", "640 ms chunk", chunk_ms or partial_ms))  # partial: under 640 ms
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
    stages.append(_stage("audio encoder", "window", enc_ms))
    feats = np.concatenate(features)
    if character.layout == "synctalk":
        gatherer = SyncTalkGatherer()
        feats = np.concatenate([gatherer.push(feats), gatherer.finish()])

    say("template decode + prepare")
    # a store without a disk cache: every template frame is decoded and prepared here, as on a first render
    store = TemplateStore(cache_dir=None)
    template = store.open(character)
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
    stages.append(_stage("template decode + prepare", "template frame", decode_ms))

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
    stages.append(_stage("UNet", "frame", unet_ms))
    say("UNet alone (inputs in place on the device, no copies)")
    stages.append(_stage("UNet alone", "frame", _unet_alone_ms(unet, device, visual_batch, feats[:n_batch],
                                                                 max(2.0, n16 / 32000))))

    assert patches is not None
    say("composite")
    comp_ms: list[float] = []
    rendered: list[np.ndarray] = []
    matcher = ColorMatcher()  # the default blend, match: colours corrected, then feathered
    for i in range(frames):
        k = ping_pong(i, template.count)
        frame = template.frame(k)
        start = time.perf_counter()
        measured = measure(to_uint8(patches[i % len(patches)], character.input.color), frame.ring)
        patch = apply(measured, matcher.smooth(measured))
        out = composite_i420(frame, patch, character.crop, "feather")
        comp_ms.append((time.perf_counter() - start) * 1000)
        if len(rendered) < 50:
            rendered.append(out)
    stages.append(_stage("composite", "frame", comp_ms))

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
        flush = _timed(writer.finish)
        enc_block_ms[-1] += flush / max(1, min(25, frames))
    finally:
        writer.abort()
    stages.append(_stage("encode", "frame", enc_block_ms))
    return stages
