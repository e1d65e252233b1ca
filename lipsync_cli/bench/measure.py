"""Time each stage of the real pipeline on one machine, side by side, and the whole render against a
plain ffmpeg transcode of the same frames (the physical limit of decode + encode)."""

from __future__ import annotations

import resource
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from lipsync_cli.audio.loading import probe_audio
from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.bench.in_flight import LEVELS, in_flight_fps
from lipsync_cli.bench.report import BenchReport, make_stage
from lipsync_cli.bench.stages import time_stages
from lipsync_cli.characters.manifest import Character
from lipsync_cli.compositing.blend import Blend
from lipsync_cli.compositing.seam import seam_scores
from lipsync_cli.encoding.ffmpeg import EncodeSettings, ffmpeg_exe
from lipsync_cli.models.devices import DeviceRequest, request_for
from lipsync_cli.models.inference import AudioEncoder, MouthModel
from lipsync_cli.models.precision import PrecisionRequest, as_precision_request
from lipsync_cli.render import RenderJob, RenderOptions, default_batch, execute, plan
from lipsync_cli.render.jobs import BLENDS
from lipsync_cli.render.pipeline import PipelineOptions, frame_count, render_frames
from lipsync_cli.render.planning import notice_of
from lipsync_cli.render.precision import resolve_models
from lipsync_cli.runtime import Runtime, RuntimeConfig


@dataclass(frozen=True)
class BenchOptions:
    seconds: float = 8.0  # of synthetic speech
    batch_size: int | None = None  # default: the device's
    threads: int | None = None  # onnxruntime's; default: every core
    encode: EncodeSettings = EncodeSettings()
    blend: Blend = "match"  # of the whole renders and the composite stage
    in_flight: tuple[int, ...] = LEVELS  # renders at once for the aggregate speed; () skips it
    io_binding: bool | None = None  # None: the runtime's default (on a GPU)
    device_processing: bool | None = None
    precision: PrecisionRequest = "auto"  # the character's float models or one of its checked variants


def transcode_seconds(template: Path, frames: int, settings: EncodeSettings, out: Path) -> float:
    """A plain decode + encode of `frames` template frames with the same encoder settings."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-stream_loop", "-1",
           "-i", str(template), "-frames:v", str(frames), "-an", *settings.video_args(),
           "-movflags", "+faststart", "-f", "mp4", str(out)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def run_bench(character: Character, device: DeviceRequest, options: BenchOptions = BenchOptions(),
              say: Callable[[str], None] = lambda s: None) -> BenchReport:
    """Time each stage, then whole renders: two in fresh runtimes sharing a fresh template cache (cold, then
    warm), the end-to-end figure from a third render in the warm runtime, and the aggregate speed of
    `in_flight` renders at once."""
    options = replace(options, encode=options.encode.checked())
    with tempfile.TemporaryDirectory(prefix="lipsync-bench-") as tmp:
        config = RuntimeConfig(threads=options.threads, cache_dir=Path(tmp) / "templates",
                               io_binding=options.io_binding, device_processing=options.device_processing)
        with Runtime(config) as runtime:
            report = _bench(runtime, Path(tmp), character, device, options, say)
        if options.in_flight:
            request = report.request  # where the stages ran, not `auto` again
            job_options = RenderOptions(request, report.batch_size, options.blend, options.encode, overwrite=True,
                                        precision=as_precision_request(report.precision))
            report.in_flight_fps = in_flight_fps(config, Path(tmp), str(character.root), job_options,
                                                 min(options.seconds, 2.0), options.in_flight, say)
        return report


def _bench(runtime: Runtime, tmp_path: Path, character: Character, device: DeviceRequest, options: BenchOptions,
           say: Callable[[str], None]) -> BenchReport:
    seconds, settings = options.seconds, options.encode
    chosen = resolve_models(runtime, character, device, options.precision)
    character, resolved = chosen.character, chosen.device
    files = character.model_files
    notice = notice_of(chosen)
    if notice:
        say(f"note: {notice}")
    batch_size = options.batch_size or default_batch(resolved)
    x = speech_like(seconds, seed=3)
    n16 = len(x)
    audio = tmp_path / "speech.wav"
    sf.write(audio, x, 16000, subtype="FLOAT")

    def whole_render(rt: Runtime, name: str, on_event=None):
        job = RenderJob(audio, str(character.root), tmp_path / name,
                        RenderOptions(request_for(resolved), batch_size, options.blend, settings, overwrite=True,
                                      precision=character.precision))
        return execute(plan(job, rt), rt, on_event)

    say("first render (template decoded and prepared)")
    with Runtime(runtime.config) as fresh:
        cold = whole_render(fresh, "cold.mp4")
    say("second render (template from the cache)")
    with Runtime(runtime.config) as fresh:
        warm = whole_render(fresh, "warm.mp4")

    with runtime.registry.lease(files, resolved, character.name, precision=character.precision) as lease:
        bind_on = runtime.bind_on(resolved)
        encoder = AudioEncoder(lease.sessions[0], character.encoder_contract, bind_on)
        unet = MouthModel(lease.sessions[1], character.unet_contract, bind_on=bind_on)
        provider = lease.sessions[1].get_providers()[0]
        stages = time_stages(tmp_path, character, encoder, unet, resolved, x, batch_size, settings, options.blend,
                             say)

    say("end to end")
    stamps: list[float] = []
    result = whole_render(runtime, "render.mp4", lambda event: stamps.append(time.perf_counter()))
    # frames leave the pipeline in bursts (a batch at a time): time blocks of 25 frames
    blocks = [(stamps[a + 25] - stamps[a]) * 40 for a in range(0, len(stamps) - 25, 25)]
    stages.append(make_stage("end to end", "frame", blocks or [result.elapsed * 1000 / result.frames]))

    say("plain ffmpeg transcode")
    transcode = transcode_seconds(character.template, result.frames, settings, tmp_path / "transcode.mp4")
    say("seam of each blend")
    seam = seam_by_blend(runtime, character, audio, resolved, batch_size)
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return BenchReport(character.name, str(resolved), provider, character.layout, runtime.threads, batch_size,
                       n16 / 16000, result.frames, f"{character.video.width}x{character.video.height}",
                       stages, result.elapsed, transcode, usage, cold.elapsed, warm.elapsed, seam,
                       blend=options.blend, io_binding=runtime.bind_on(resolved) is not None,
                       device_processing=runtime.processes_on(resolved), precision=character.precision)


def seam_by_blend(runtime: Runtime, character: Character, audio: Path, device, batch_size: int,
                  seconds: float = 2.0) -> dict:
    """Ring difference and boundary step (seam.py) of each blend, on the frames before encoding (no codec
    noise), over the first `seconds` of the bench's audio."""
    info = probe_audio(audio)
    frames = min(frame_count(character, info), round(seconds * float(character.fps)))
    scores = {}
    with runtime.templates.open(character.template_spec) as template:
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
