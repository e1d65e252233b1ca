"""`lipsync render`: the main job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from lipsync_cli.characters.manifest import load_character
from lipsync_cli.cli.common import Debug, err_console, is_interactive, run_reporting, settle_heap
from lipsync_cli.encoding.ffmpeg import CODECS, EncodeSettings
from lipsync_cli.models.sessions import parse_device
from lipsync_cli.render import default_output, render


def render_command(
    audio: Annotated[Path, typer.Argument(help="Speech recording: WAV, FLAC, OGG, ... at any rate, any channels.",
                                          show_default=False)],
    character: Annotated[str, typer.Option("--character", "-c", help="Character name or folder.",
                                           show_default=False)],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output MP4 (default: "
                                                "<audio stem>_<character>.mp4 in the current directory).",
                                                show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", "-d", help="auto, cpu, cuda or cuda:N.")] = "auto",
    gpu: Annotated[int | None, typer.Option("--gpu", help="Short for --device cuda:N.", show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", "-b", help="Frames per model call "
                                                   "(default: 4 on the CPU, 32 on a GPU).", show_default=False)
                          ] = None,
    blend: Annotated[str, typer.Option("--blend", help="feather (soft edge, no visible box) or hard (paste).")
                     ] = "feather",
    crf: Annotated[int, typer.Option("--crf", help="Quality: 0 lossless .. 51 worst (cq for h264_nvenc).")] = 18,
    preset: Annotated[str | None, typer.Option("--preset", help="Encoder preset (default veryfast for libx264, "
                                               "p4 for h264_nvenc).", show_default=False)] = None,
    codec: Annotated[str, typer.Option("--codec", help=" or ".join(CODECS) + ".")] = "libx264",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    debug: Debug = False,
) -> None:
    """Render AUDIO spoken by a character into an H.264 MP4 with the audio muxed in."""

    def work() -> None:
        request = parse_device(device, gpu)
        char = load_character(character)
        target = output if output is not None else default_output(audio, char)
        settle_heap()
        bar: tqdm | None = None

        def on_start(total: int, resolved: str, notice: str | None) -> None:
            nonlocal bar
            if notice and not quiet:
                err_console.print(f"[yellow]note:[/] {notice}", soft_wrap=True)
            if not quiet and is_interactive():
                bar = tqdm(total=total, unit="frame", desc=f"{char.name} on {resolved}", dynamic_ncols=True)

        try:
            result = render(audio, char, target, request, batch_size, blend,
                            EncodeSettings(codec=codec, preset=preset, crf=crf), overwrite,
                            on_start=on_start, on_frame=lambda n: bar.update(n) if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        if not quiet:
            err_console.print(
                f"{result.frames} frames ({result.audio_seconds:.2f} s of audio) in {result.elapsed:.2f} s: "
                f"{result.fps:.1f} fps, {result.realtime:.2f}x real time on {result.device} -> {result.output}",
                soft_wrap=True,
            )

    run_reporting(work, debug)
