"""`lipsync validate-mel`: is our mel-spectrogram the one the models were trained on?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer
from rich.markup import escape
from rich.table import Table

from lipsync_cli.audio.loading import CHUNK_SAMPLES, RESAMPLERS, AudioInfo, Resampler, probe_audio, read_audio
from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.cli.common import Debug, console, run_reporting
from lipsync_cli.errors import InputError
from lipsync_cli.features.mel import PadMode
from lipsync_cli.features.validation import load_reference, validate
from lipsync_cli.resources import bundled_dir


def _default_inputs() -> list[Path]:
    samples = bundled_dir("samples")
    if samples is None:
        return []
    return sorted(p for p in samples.iterdir() if p.suffix.lower() in (".wav", ".flac", ".ogg"))


def validate_mel(
    audio: Annotated[
        list[Path] | None,
        typer.Argument(metavar="AUDIO...",
                       help="Audio files to check (default: the bundled samples, or a synthetic signal).",
                       show_default=False),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option("--reference", "-r", metavar="FILE",
                     help="A reference mel .npy, [T, 80] or [80, T], for one AUDIO file."),
    ] = None,
    pad_mode: Annotated[
        str, typer.Option("--pad-mode", metavar="constant|reflect",
                          help="STFT padding: constant (librosa >= 0.10) or reflect (old librosa).")
    ] = "constant",
    chunk_samples: Annotated[
        int, typer.Option("--chunk-samples", metavar="N",
                          min=1, help="Chunk size of the streamed pipeline, in 16 kHz samples.")
    ] = CHUNK_SAMPLES,
    resample: Annotated[str, typer.Option("--resample", metavar="soxr|polyphase",
                                          help="Resampler for files not at 16 kHz: soxr (what "
                                          "librosa.load does) or polyphase.")] = "soxr",
    debug: Debug = False,
) -> None:
    """Check the mel-spectrogram against librosa, a reference .npy and the chunked stream.

    Exit status 0 when every comparison is within tolerance (1e-4 against references, 1e-6 chunked vs
    whole), 1 when one is not, 2 for bad input.
    """

    def work() -> int:
        if pad_mode not in ("constant", "reflect"):
            raise InputError(f"--pad-mode must be constant or reflect, not {pad_mode!r}")
        if resample not in RESAMPLERS:
            raise InputError(f"--resample must be soxr or polyphase, not {resample!r}")
        resampler, padding = cast(Resampler, resample), cast(PadMode, pad_mode)
        inputs = list(audio or _default_inputs())
        if reference is not None and len(inputs) != 1:
            raise InputError(f"{reference}: --reference needs exactly one AUDIO file, got {len(inputs)}")
        ref = load_reference(reference) if reference is not None else None
        jobs: list[tuple[str, AudioInfo | None]] = [(p.name, probe_audio(p)) for p in inputs]  # refused before work
        if not jobs:
            jobs = [("synthetic 3 s", None)]
        table = Table(show_edge=False, title=f"mel-spectrogram check (pad {pad_mode}, chunks of {chunk_samples} "
                      f"samples, resampling with {'soxr HQ' if resample == 'soxr' else 'resample_poly'})")
        table.add_column("audio", overflow="fold", min_width=min(32, max(len(name) for name, _ in jobs)))
        for column in ("frames", "against", "max diff", "mean diff", "result"):
            table.add_column(column, no_wrap=True, justify="right" if "diff" in column or column == "frames"
                             else "left")
        notes: list[str] = []
        failed, with_librosa = 0, False
        for name, info in jobs:
            x = read_audio(info.path, resampler) if info is not None else speech_like(3.0)
            whole, results = validate(x, info, ref, padding, chunk_samples, resampler,
                                      reference.name if reference is not None else "reference")
            for k, r in enumerate(results):
                failed += not r.ok
                with_librosa |= r.name.startswith("librosa")
                table.add_row(name if k == 0 else "", str(len(whole)) if k == 0 else "", r.name,
                              f"{r.max_abs:.2e}", f"{r.mean_abs:.2e}",
                              f"[green]ok[/] ≤{r.tolerance:.0e}" if r.ok else f"[red]FAIL[/] >{r.tolerance:.0e}")
                if r.note:
                    notes.append(f"{name} against {r.name}: {r.note}")
                if r.name == "librosa resample":
                    notes.append(f"{name}: librosa.load would decode it through audioread, another decoder (other "
                                 "padding and length), so librosa resampled the samples of our decoder")
        console.print(table)
        for line in notes:
            console.print(escape(line), soft_wrap=True)
        if failed:
            console.print(f"[red]FAIL[/]: {failed} comparison{'s' if failed > 1 else ''} out of tolerance")
        elif with_librosa:
            console.print("[green]ok[/]: every comparison within tolerance")
        else:
            console.print("[yellow]partial[/]: librosa is not installed, so our mel was not compared with "
                          "librosa's (pip install librosa); the rest is within tolerance", soft_wrap=True)
        return 1 if failed else 0

    code = run_reporting(work, debug)
    raise typer.Exit(code)


