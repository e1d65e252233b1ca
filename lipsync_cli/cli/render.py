"""`lipsync render`: the main job."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from lipsync_cli.audio.loading import probe_audio
from lipsync_cli.batch.report import JobRecord
from lipsync_cli.batch.runner import DEFAULT_JOBS, BatchSettings
from lipsync_cli.batch.sources import DEFAULT_NAME, Entry, drop_repeats, expand_audio
from lipsync_cli.cli.batching import (
    DEVICE_HELP,
    DEVICE_METAVAR,
    BatchSize,
    BlendOption,
    Cluster,
    ClusterAddress,
    Codec,
    CpuWorkers,
    Crf,
    Devices,
    DryRun,
    Eviction,
    Jobs,
    KeepGoing,
    MaxMemory,
    MaxModels,
    NamePattern,
    NoCache,
    OutputDir,
    Overwrite,
    PrecisionOption,
    Preset,
    Report,
    Retries,
    SharedFs,
    SkipExisting,
    cluster_settings,
    run_batch,
    runtime_config,
)
from lipsync_cli.cli.common import Debug, err_console, is_interactive, print_note, run_reporting, settle_heap
from lipsync_cli.cli.progress import BatchProgress
from lipsync_cli.encoding.ffmpeg import EncodeSettings
from lipsync_cli.errors import AudioError, InputError
from lipsync_cli.models.devices import parse_device
from lipsync_cli.models.precision import as_precision_request
from lipsync_cli.render import FramesDone, RenderEvent, RenderJob, RenderOptions, Started, execute, plan
from lipsync_cli.render.jobs import as_blend
from lipsync_cli.runtime import Runtime, RuntimeConfig

STDIN = "standard input"


def render_command(
    audio: Annotated[list[str], typer.Argument(metavar="AUDIO...",
                                               help="Speech recordings (WAV, FLAC, OGG, MP3, M4A, the audio of a "
                                               "video, ... at any rate, any channels), folders of them, glob "
                                               "patterns, or - for standard input.",
                                               show_default=False)],
    character: Annotated[str, typer.Option("--character", "-c", metavar="NAME|PATH", help="Character name or folder.",
                                           show_default=False)],
    output: Annotated[Path | None, typer.Option("--output", "-o", metavar="FILE",
                                                help="Output MP4, for one input (default: "
                                                "<audio stem>_<character>.mp4 in the current directory).",
                                                show_default=False)] = None,
    output_dir: OutputDir = None,
    name: NamePattern = DEFAULT_NAME,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Take audio files from subfolders too.")
                         ] = False,
    device: Annotated[str, typer.Option("--device", "-d", metavar=DEVICE_METAVAR, help=DEVICE_HELP)] = "auto",
    precision: PrecisionOption = "auto",
    gpu: Annotated[int | None, typer.Option("--gpu", metavar="N",
                                            help="Short for --device cuda:N.", show_default=False)] = None,
    batch_size: BatchSize = None,
    blend: BlendOption = "match",
    crf: Crf = 18,
    preset: Preset = None,
    codec: Codec = "libx264",
    overwrite: Overwrite = False,
    skip_existing: SkipExisting = False,
    keep_going: KeepGoing = False,
    jobs: Jobs = DEFAULT_JOBS,
    devices: Devices = "auto",
    max_models: MaxModels = None,
    max_memory: MaxMemory = None,
    eviction: Eviction = "lfu",
    report: Report = None,
    dry_run: DryRun = False,
    cluster: Cluster = None,
    cluster_address: ClusterAddress = None,
    cpu_workers: CpuWorkers = None,
    retries: Retries = 1,
    shared_fs: SharedFs = False,
    no_cache: NoCache = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    debug: Debug = False,
) -> None:
    """Render AUDIO spoken by a character into an H.264 MP4 with the audio muxed in; several AUDIO (files,
    folders, globs) render as a batch."""

    def work() -> int:
        options = RenderOptions(parse_device(device, gpu), batch_size, as_blend(blend),
                                EncodeSettings(codec=codec, preset=preset, crf=crf), overwrite,
                                precision=as_precision_request(precision))
        if "-" not in audio:
            inputs, repeats = drop_repeats(expand_audio(audio, recursive))
            if repeats and not quiet:
                shown = ", ".join(str(p) for p in repeats[:3]) + (", ..." if len(repeats) > 3 else "")
                print_note(f"{len(repeats)} input{'s' if len(repeats) > 1 else ''} listed more than once, rendered "
                           f"once: {shown}")
            return render(inputs, options, stdin=False)
        if len(audio) > 1:
            raise InputError("standard input (-) can only be the one input")
        with _stdin_spooled() as spooled:
            return render([spooled], options, stdin=True)

    def render(inputs: list[Path], options: RenderOptions, stdin: bool) -> int:
        single = stdin or (len(audio) == 1 and len(inputs) == 1 and not Path(audio[0]).is_dir())
        if not inputs:
            folders = [a for a in audio if Path(a).is_dir()]
            raise InputError(f"{folders[0]}: is a directory with no audio files" if folders
                             else f"{', '.join(audio)}: no audio files found")
        if output is not None and not single:
            raise InputError(f"an output file (-o) is for one input, and {len(inputs)} were given: use --output-dir "
                             "and --name")
        batch_options = (dry_run, report, skip_existing, keep_going, output_dir, cluster, name != DEFAULT_NAME)
        if single and not any(batch_options):
            job = RenderJob(inputs[0], character, output, options)
            _render_one(job, RuntimeConfig(devices=devices, cache=not no_cache), quiet)
            return 0
        entries = [Entry(i, STDIN if stdin else str(path), RenderJob(path, character, output, options),
                         audio_name="-" if stdin else None) for i, path in enumerate(inputs, 1)]
        settings = BatchSettings(output_dir, name, keep_going, skip_existing, jobs)
        config = runtime_config(devices, max_models, max_memory, eviction, cache=not no_cache)
        on_cluster = cluster_settings(cluster, cluster_address, cpu_workers, retries, shared_fs)
        return run_batch(entries, settings, config, report, dry_run, quiet, on_cluster)

    raise typer.Exit(run_reporting(work, debug))


@contextmanager
def _stdin_spooled() -> Iterator[Path]:
    """Standard input copied to a temporary file named `stdin` (so the default output is stdin_<character>.mp4):
    the audio is checked in full before work, and ffmpeg reads it a second time to mux it. Problems with it
    are told of "standard input", not of the temporary file."""
    if sys.stdin is None:
        raise InputError(f"{STDIN}: is closed; pipe the audio in, or give an audio file")
    if sys.stdin.isatty():
        raise InputError(f"{STDIN}: is a terminal; pipe the audio in (lipsync render - ... < speech.wav)")
    with tempfile.TemporaryDirectory(prefix="lipsync-stdin-") as folder:
        path = Path(folder) / "stdin"
        with open(path, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
        if path.stat().st_size == 0:
            raise AudioError(f"{STDIN}: is empty (nothing was piped in)")
        try:
            probe_audio(path)
        except AudioError as exc:
            raise AudioError(str(exc).replace(str(path), STDIN)) from None
        yield path


def _render_one(job: RenderJob, config: RuntimeConfig, quiet: bool) -> None:
    notify = None if quiet else print_note
    with Runtime(config, notify=notify) as runtime:
        planned = plan(job, runtime)
        settle_heap()
        bar: tqdm | None = None
        record = JobRecord(1, str(job.audio), str(job.audio), planned.character.name, str(planned.output))
        plain = BatchProgress(1, planned.frames, interactive=False, enabled=not quiet and not is_interactive())

        def on_event(event: RenderEvent) -> None:
            nonlocal bar
            if isinstance(event, FramesDone):
                if bar is not None:
                    bar.update(event.frames)
                plain.update(record, event)
            elif isinstance(event, Started):
                if event.notice:
                    runtime.notify(event.notice)
                if not quiet and is_interactive():
                    bar = tqdm(total=event.frames, unit="frame", desc=f"{planned.character.name} on {event.device}",
                               dynamic_ncols=True)

        try:
            result = execute(planned, runtime, on_event)
        finally:
            if bar is not None:
                bar.close()
    if not quiet:
        err_console.print(
            f"{result.frames} frames ({result.audio_seconds:.2f} s of audio) in {result.elapsed:.2f} s: "
            f"{result.fps:.1f} fps, {result.realtime:.2f}x real time on {result.device}"
            f"{'' if result.precision == 'fp32' else ' in ' + result.precision} -> {result.output}",
            soft_wrap=True,
        )
