"""`lipsync characters optimize`: a faster variant of a character's models, made from its own frames and speech,
checked against the float models before it is kept (design.md section 19).

Everything is checked before any work (options, the backend and the device's capabilities, the calibration
speech, the folder to write); a variant below the bar is never written (unless forced), and what is written
appears whole: the int8 file under its final name only once the check passed, the manifest replaced
atomically. An int8 file is named by its content (`model_best.int8.<sha256 prefix>.onnx`), so a variant never
overwrites a file another variant was checked with; files of this form that no variant names any more are
removed.
"""

from __future__ import annotations

import datetime
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from lipsync_cli.characters.manifest import MANIFEST, Character, find_character, load_character
from lipsync_cli.characters.variants import Quality, Variant, sha256_file, write_manifest_variants
from lipsync_cli.errors import CharacterError, InputError, RenderError
from lipsync_cli.models.devices import CPU, Backend, Device, openvino_device
from lipsync_cli.models.inference import MouthModel
from lipsync_cli.models.precision import OPTIMISED, Precision
from lipsync_cli.models.sessions import SessionMaker, precision_refusal
from lipsync_cli.optimize import check
from lipsync_cli.optimize.quantize import CALIBRATION_BATCH, import_quantization, quantize_unet
from lipsync_cli.optimize.samples import collect, float_renderer, speech_files
from lipsync_cli.runtime import Runtime, RuntimeConfig

DEFAULT_MIN_PSNR = 40.0


@dataclass(frozen=True)
class OptimizeOptions:
    precision: Precision = "int8"
    backend: Backend = "onnxruntime"
    calibration: tuple[Path, ...] = ()  # speech for the calibration and the check (default: the bundled samples)
    min_psnr: float = DEFAULT_MIN_PSNR  # dB of the mouth patch against the float models
    force: bool = False  # keep a variant below the bar (marked as such: auto never picks it)
    output: Path | None = None  # write an optimised copy of the character here instead of into its folder
    calibration_frames: int = 64
    check_frames: int = 32
    threads: int | None = None


@dataclass(frozen=True)
class Outcome:
    variant: Variant
    folder: Path  # where the variant was written
    reused: bool  # the int8 file an earlier variant was checked with, checked again on this backend
    seconds: float


class QualityRefused(RenderError):
    """The variant is below the bar: nothing was written."""

    def __init__(self, message: str, quality: Quality) -> None:
        super().__init__(message)
        self.quality = quality


def _device(options: OptimizeOptions) -> Device:
    return openvino_device("CPU") if options.backend == "openvino" else CPU


def _check_options(options: OptimizeOptions) -> Device:
    if options.precision not in OPTIMISED:
        raise InputError(f"precision must be int8, bf16 or fp16, not {options.precision!r}", option="precision")
    if options.backend not in ("onnxruntime", "openvino"):
        raise InputError(f"backend must be onnxruntime or openvino, not {options.backend!r}", option="backend")
    if not 10 <= options.min_psnr <= 99:
        raise InputError(f"the PSNR bar must be 10 to 99 dB, not {options.min_psnr:g}", option="min_psnr")
    device = _device(options)
    refusal = precision_refusal(device, options.precision)
    if refusal is not None:
        raise InputError(f"{options.precision} on {options.backend}: {refusal}", option="precision")
    if options.precision == "int8":
        import_quantization()
    return device


def _writable(folder: Path) -> str | None:
    if not os.access(folder, os.W_OK | os.X_OK):
        return "no permission to write in it"
    manifest = folder / MANIFEST
    if manifest.exists() and not os.access(manifest, os.W_OK):
        return f"{MANIFEST} cannot be written"
    return None


def _check_destination(character: Character, output: Path | None) -> None:
    if output is None:
        problem = _writable(character.root)
        if problem is not None:
            raise CharacterError(f"{character.root}: the character's folder cannot be written ({problem}): "
                                 "optimise a copy into another folder", option="output")
        return
    if output.exists() and not (output.is_dir() and not any(output.iterdir())):
        raise InputError(f"{output}: exists and is not an empty folder", option="output")
    parent = output.resolve().parent
    if not parent.is_dir():
        raise InputError(f"{output}: its folder {parent} does not exist", option="output")
    problem = _writable(parent)
    if problem is not None:
        raise InputError(f"{output}: {parent} cannot be written ({problem})", option="output")
    if output.resolve().is_relative_to(character.root.resolve()):
        raise InputError(f"{output}: is inside the character's own folder", option="output")


def _reusable(character: Character) -> Variant | None:
    """An int8 variant whose file is still the one it was checked with, made from the float UNet the character
    has now (the same QDQ file serves both backends)."""
    source = sha256_file(character.model)
    for variant in character.variants:
        path = character.root / variant.model
        if (variant.precision == "int8" and variant.source_sha256 == source and path.is_file()
                and sha256_file(path) == variant.model_sha256):
            return variant
    return None


def _int8_name(character: Character, digest: str) -> str:
    return f"{character.model.stem}.int8.{digest[:12]}.onnx"


def optimize(name_or_path: str | Path, options: OptimizeOptions, say: Callable[[str], None] = lambda s: None
             ) -> Outcome:
    """Make, check and keep one variant of a character (see the module's docstring)."""
    started = time.perf_counter()
    device = _check_options(options)
    character = load_character(find_character(name_or_path))
    _check_destination(character, options.output)
    speech = speech_files(tuple(Path(p) for p in options.calibration))
    scratch = character.root / f".{character.model.stem}.int8.{os.getpid()}.part"
    if options.output is not None:
        scratch = options.output.resolve().parent / f".{options.output.name}.int8.{os.getpid()}.part"
    reused = _reusable(character) if options.precision == "int8" and not options.calibration else None
    try:
        with Runtime(RuntimeConfig(devices="cpu", threads=options.threads)) as runtime, \
                float_renderer(runtime, character) as renderer:
            say(f"reading {character.name}'s frames with speech ({', '.join(p.name for p in speech)})")
            calibration, held_out = collect(renderer, speech, options.calibration_frames, options.check_frames)
            model = character.model
            if options.precision == "int8":
                if reused is not None:
                    model = character.root / reused.model
                    say(f"int8: the file of the {reused.label} variant ({reused.model}), checked on {options.backend}")
                else:
                    say(f"int8: calibrating on {len(calibration)} frames ({options.calibration_frames} asked)")
                    quantize_unet(character.model, character.unet_contract, calibration.batches(CALIBRATION_BATCH),
                                  scratch)
                    model = scratch
            say(f"checking {options.precision} on {device} against float32 on {len(held_out)} held-out frames")
            color = character.input.color
            reference = check.generate(renderer.unet.generate, held_out, color, CALIBRATION_BATCH)
            session = SessionMaker(runtime.threads)(model, device, options.precision)
            mine = MouthModel(session, replace(character.unet_contract, path=model))
            variant_patches = check.generate(mine.generate, held_out, color, CALIBRATION_BATCH)
            del session, mine
            quality = check.measure(character, held_out, reference, variant_patches, options.min_psnr)
        say(figures(quality))
        if quality.psnr_db < options.min_psnr and not options.force:
            raise QualityRefused(f"{character.name}: the {options.precision} variant on {options.backend} is "
                                 f"{quality.psnr_db:.1f} dB from the float models' mouth, below the bar of "
                                 f"{options.min_psnr:g} dB: nothing written", quality)
        variant = _publish(character, options, device, model, scratch, quality)
    finally:
        scratch.unlink(missing_ok=True)
    folder = options.output if options.output is not None else character.root
    return Outcome(variant, folder, reused is not None, time.perf_counter() - started)


def figures(q: Quality) -> str:
    return (f"PSNR of the mouth patch {q.psnr_db:.2f} dB (bar {q.min_psnr_db:g}), largest difference {q.max_diff} "
            f"levels, seam {q.seam_ring:.2f} / {q.seam_step:+.2f} (float {q.float_seam_ring:.2f} / "
            f"{q.float_seam_step:+.2f}), mouth-activity correlation {q.sync:.4f}, {q.frames} held-out frames")


def _publish(character: Character, options: OptimizeOptions, device: Device, model: Path, scratch: Path,
             quality: Quality) -> Variant:
    digest = sha256_file(model)
    name = _int8_name(character, digest) if model == scratch else model.name
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    variant = Variant(options.precision, options.backend, name, digest, character.audio_encoder.name,
                      sha256_file(character.audio_encoder), str(device), created, quality,
                      forced=quality.psnr_db < options.min_psnr,
                      source_sha256=sha256_file(character.model) if options.precision == "int8" else None)
    kept = [v for v in character.variants if (v.precision, v.backend) != (options.precision, options.backend)]
    variants = [*kept, variant]
    if options.output is None:
        if model == scratch:
            os.replace(scratch, character.root / name)
        write_manifest_variants(character.root / MANIFEST, variants)
        _remove_orphans(character.root, character.model.stem, variants)
        return variant
    assert options.output is not None
    temp = options.output.resolve().parent / f".{options.output.name}.{os.getpid()}.part"
    try:
        shutil.copytree(character.root, temp, ignore=shutil.ignore_patterns(".*.part"))
        if model == scratch:
            os.replace(scratch, temp / name)
        write_manifest_variants(temp / MANIFEST, variants)
        _remove_orphans(temp, character.model.stem, variants)
        if options.output.is_dir():
            options.output.rmdir()  # empty (checked before the work)
        os.replace(temp, options.output)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return variant


def _remove_orphans(folder: Path, stem: str, variants: list[Variant]) -> None:
    named = {v.model for v in variants}
    for path in folder.glob(f"{stem}.int8.*.onnx"):
        if path.name not in named and len(path.name.split(".")) == 4:
            path.unlink(missing_ok=True)
