"""`plan(job, runtime)`: every check a render needs, before any work.

The checks run cheapest first (options, audio, character, output path, encoder) and the device last, so a
refused job has started no process and loaded no model. `resolve_character` and `resolve_device` are what
a live session needs too; the file checks stay here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lipsync_cli.audio.loading import probe_audio
from lipsync_cli.characters.manifest import MANIFEST, Character
from lipsync_cli.encoding.ffmpeg import check_encoder, check_not_an_input, check_output_path
from lipsync_cli.errors import InputError
from lipsync_cli.models.devices import Device, DeviceRequest
from lipsync_cli.models.precision import as_precision_request
from lipsync_cli.models.sessions import default_threads
from lipsync_cli.render.cores import share_cores
from lipsync_cli.render.jobs import MAX_BATCH, RenderJob, RenderPlan, as_blend, as_window_end, default_batch
from lipsync_cli.render.pipeline import frame_count
from lipsync_cli.render.precision import Resolved, resolve_models
from lipsync_cli.runtime import Runtime
from lipsync_cli.specs import WindowEnd


def default_output(audio: Path, character_name: str) -> Path:
    return Path.cwd() / f"{Path(audio).stem}_{character_name}.mp4"


def job_inputs(audio: Path, character: Character) -> dict[Path, str]:
    """Every file a job reads, and what it is to the job."""
    files = {Path(audio): "the audio input", character.root / MANIFEST: f"{character.name}'s manifest"}
    for path, what in ((character.template, "template"), (character.model, "UNet"),
                       (character.audio_encoder, "audio encoder"), (character.boxes_path, "boxes")):
        if path is not None:
            files[Path(path)] = f"{character.name}'s {what}"
    return files


def check_options(job: RenderJob) -> None:
    options = job.options
    if options.batch_size is not None and not 1 <= options.batch_size <= MAX_BATCH:
        raise InputError(f"batch size must be 1 to {MAX_BATCH}, not {options.batch_size}", option="batch_size")
    as_blend(options.blend)
    if options.window_end is not None:
        as_window_end(options.window_end)
    as_precision_request(options.precision)


def resolve_character(runtime: Runtime, name_or_path: str, window_end: WindowEnd | None = None) -> Character:
    """The character, fully checked (once per runtime), with a window end other than its own if asked."""
    character = runtime.character(name_or_path)
    if window_end is not None and window_end != character.audio.window_end:
        character = replace(character, audio=replace(character.audio, window_end=window_end))
    return character


def resolve_device(runtime: Runtime, character: Character, request: DeviceRequest) -> tuple[Device, str | None]:
    """Where the character's models (as it holds them: float, or one variant) run, and a notice when `auto`
    fell back to the CPU."""
    return runtime.resolve(request, character.model_files, character.name, character.precision)


def notice_of(resolved: Resolved) -> str | None:
    """What to tell the user of a resolution: the device's notice and the precision's note, as one line."""
    return "; ".join(n for n in (resolved.notice, resolved.note) if n) or None


def plan(job: RenderJob, runtime: Runtime, renders: int = 1) -> RenderPlan:
    """Check `job` completely; raise an InputError naming the file or option at fault. `renders`: how many
    renders will run at once on its device (they share the cores)."""
    check_options(job)
    encode = job.options.encode.checked()
    audio = probe_audio(job.audio)
    character = resolve_character(runtime, job.character, job.options.window_end)
    output = job.output or default_output(job.audio, character.name)
    check_not_an_input(output, job_inputs(job.audio, character))
    output = check_output_path(output, job.options.overwrite)
    check_encoder(encode)
    resolved = resolve_models(runtime, character, job.options.device, job.options.precision)
    character, device = resolved.character, resolved.device
    share = share_cores(device, default_threads(), renders)
    if encode.codec == "libx264" and not encode.threads:
        encode = replace(encode, threads=share.x264)
    return RenderPlan(job, character, audio, output, device, job.options.batch_size or default_batch(device),
                      encode, frame_count(character, audio), notice_of(resolved), share.composite)
