"""`lipsync live`: a live stream of a character speaking, at real-time pace, to an RTMP/SRT/UDP ingest or a
file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, cast

import typer

from lipsync_cli.audio.loading import AudioInfo, probe_audio
from lipsync_cli.cli.batching import DEVICE_HELP, DEVICE_METAVAR, BlendOption, PrecisionOption
from lipsync_cli.cli.common import Debug, err_console, is_interactive, print_note, run_reporting, settle_heap
from lipsync_cli.encoding.yuv import even
from lipsync_cli.errors import InputError
from lipsync_cli.live import LiveOptions, LiveSession
from lipsync_cli.live.broadcast import PcmFormat, Progress, broadcast, file_chunks, file_rate, pcm_chunks
from lipsync_cli.live.frames import MAX_RATE, MIN_RATE
from lipsync_cli.live.stream_out import StreamOutput, parse_target
from lipsync_cli.models.devices import parse_device
from lipsync_cli.models.precision import as_precision_request
from lipsync_cli.render.jobs import as_blend
from lipsync_cli.render.planning import resolve_character
from lipsync_cli.runtime import Runtime, RuntimeConfig


def live_command(
    audio: Annotated[str, typer.Argument(metavar="AUDIO|-", help="A speech file, played at real-time pace, or - for "
                                         "raw mono PCM on standard input (--format, --rate): idle frames while "
                                         "nothing comes, the end of input ends the stream.", show_default=False)],
    character: Annotated[str, typer.Option("--character", "-c", metavar="NAME|PATH", help="Character name or folder.",
                                           show_default=False)],
    to: Annotated[str, typer.Option("--to", metavar="TARGET", help="rtmp://... (FLV), srt://... or udp://... "
                                    "(MPEG-TS), or a .ts, .flv or .mkv file.", show_default=False)],
    pcm_format: Annotated[str, typer.Option("--format", metavar="s16le|f32le",
                                            help="Sample format of standard input.")] = "s16le",
    rate: Annotated[int, typer.Option("--rate", metavar="HZ", help="Sample rate of standard input (8000-48000).")
                    ] = 16000,
    keep_alive: Annotated[bool, typer.Option("--keep-alive", help="After the audio ends, stay on with idle frames "
                                             "until Ctrl-C or SIGTERM.")] = False,
    latency_ms: Annotated[float | None, typer.Option("--latency-ms", metavar="MS", help="Latency budget: each frame "
                                                     "goes out this long after its audio's time (default: the "
                                                     "character's look-ahead + 350 ms).", show_default=False)] = None,
    chunk_ms: Annotated[float, typer.Option("--chunk-ms", metavar="MS", help="A file is pushed in chunks of this "
                                            "length, each at its time.")] = 40.0,
    device: Annotated[str, typer.Option("--device", "-d", metavar=DEVICE_METAVAR, help=DEVICE_HELP)] = "auto",
    precision: PrecisionOption = "auto",
    blend: BlendOption = "match",
    crf: Annotated[int, typer.Option("--crf", metavar="0-51", help="x264 quality (lower is better).")] = 20,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    debug: Debug = False,
) -> None:
    """Stream a character speaking AUDIO live, at real-time pace, to TARGET. Ctrl-C or SIGTERM ends the stream
    cleanly (a file stays playable)."""

    def work() -> int:
        if pcm_format not in ("s16le", "f32le"):
            raise InputError(f"--format must be s16le or f32le, not {pcm_format!r}")
        if not MIN_RATE <= rate <= MAX_RATE:
            raise InputError(f"--rate must be {MIN_RATE} to {MAX_RATE} Hz, not {rate}")
        if not 0 <= crf <= 51:
            raise InputError(f"--crf must be 0-51, not {crf}")
        if chunk_ms <= 0:
            raise InputError(f"--chunk-ms must be positive, not {chunk_ms:g}")
        target = parse_target(to, overwrite)
        info = None
        if audio == "-":
            if sys.stdin is None or sys.stdin.closed:
                raise InputError("standard input is closed: give an audio file, or pipe raw PCM into -")
        else:
            info = probe_audio(Path(audio))
        notify = None if quiet else print_note
        audio_rate = file_rate(info) if info is not None else rate
        options = LiveOptions(rate=audio_rate, return_rate=audio_rate, latency_ms=latency_ms,
                              start="first_audio" if info is not None else "now",
                              device=parse_device(device, None), blend=as_blend(blend),
                              precision=as_precision_request(precision))
        with Runtime(RuntimeConfig(devices="auto" if device == "auto" else device), notify=notify) as runtime:
            found = resolve_character(runtime, character)
            video = found.video
            output = StreamOutput(target, even(video.width), even(video.height), found.fps, crf, overwrite,
                                  audio_rate)
            settle_heap()
            try:
                session = LiveSession(runtime, found, options)  # its clock starts now: the models are loaded
            except BaseException:
                output.abort()
                raise
            with session:
                return _stream(session, runtime, output, target.where, info, keep_alive, quiet, chunk_ms, pcm_format)

    raise typer.Exit(run_reporting(work, debug))


def _stream(session: LiveSession, runtime: Runtime, output: StreamOutput, where: str, info: AudioInfo | None,
            keep_alive: bool, quiet: bool, chunk_ms: float, pcm_format: str) -> int:
    if session.notice:
        runtime.notify(session.notice)
    chunks = file_chunks(info, session.character.audio.resample, chunk_ms) if info is not None else \
        pcm_chunks(sys.stdin.buffer, cast(PcmFormat, pcm_format))
    fps = float(session.fps)
    if not quiet:
        err_console.print(f"streaming {session.character.name} to {where} (latency budget "
                          f"{session.latency * 1000:.0f} ms, on {session.device})", soft_wrap=True, markup=False)
    progress = Progress()
    try:
        progress = broadcast(session, chunks, output, paced_input=info is not None, keep_alive=keep_alive,
                             on_progress=None if quiet else _progress_printer(fps))
    finally:
        _end(output, quiet, progress, fps)
    return 0


def _end(output: StreamOutput, quiet: bool, progress: Progress, fps: float) -> None:
    """Close the stream so that what went out stays playable (also on Ctrl-C)."""
    try:
        where = output.finish()
    except BaseException:
        output.abort()
        raise
    if not quiet:
        err_console.print(f"{output.frames} frames ({output.frames / fps:.2f} s) -> {where}", soft_wrap=True,
                          markup=False)


def _progress_printer(fps: float):
    interactive = is_interactive()
    last = [0.0]

    def show(progress: Progress) -> None:
        import time

        if interactive:
            err_console.print(progress.line(fps), end="\r", soft_wrap=True, markup=False)
        elif time.monotonic() - last[0] >= 5:
            last[0] = time.monotonic()
            err_console.print(progress.line(fps), soft_wrap=True, markup=False)

    return show
