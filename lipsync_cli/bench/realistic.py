"""The realistic-cost character: alice's template and boxes driven by full-size random-weight models,
built once with the `onnx` package into a cache directory and reused."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, cast

from lipsync_cli.characters.variants import without_variants
from lipsync_cli.errors import InputError
from lipsync_cli.resources import bundled_dir, cache_root

if TYPE_CHECKING:
    from lipsync_cli.models.devices import Backend
    from lipsync_cli.models.precision import Precision

VERSION = "realistic-v1"


def cache_dir(dtype: str = "float32") -> Path:
    return cache_root() / (VERSION if dtype == "float32" else f"{VERSION}-{dtype}")


def _write_once(path: Path, build) -> None:
    if path.is_file():
        return
    from lipsync_cli.models.graphs.builder import save

    temp = path.with_name(f".{path.name}.{os.getpid()}.part")
    save(build(), temp)
    os.replace(temp, path)


def realistic_character(folder: Path | None = None, dtype: str = "float32") -> Path:
    """A character folder using the Wav2Lip encoder and the SyncTalk_2D UNet (random weights), in float32 or
    in float16 (weights, inputs and outputs, as users export them for GPU speed)."""
    try:
        from lipsync_cli.models.graphs import realistic
        from lipsync_cli.models.graphs.builder import to_float16
    except ImportError as exc:
        raise InputError(f"the realistic models need the onnx package ({exc}): pip install onnx") from None
    if dtype not in ("float32", "float16"):
        raise InputError(f"dtype must be float32 or float16, not {dtype!r}", option="dtype")
    convert = to_float16 if dtype == "float16" else (lambda model: model)
    folder = folder or cache_dir(dtype)
    alice = bundled_dir("characters")
    if alice is None or not (alice / "alice" / "template.mp4").is_file():
        raise InputError("the realistic models borrow alice's template, which is not installed")
    alice = alice / "alice"
    folder.mkdir(parents=True, exist_ok=True)
    _write_once(folder / "audio_encoder.onnx",
                lambda: convert(realistic.wav2lip_audio_encoder().model("Wav2Lip audio encoder, random weights")))
    _write_once(folder / "model_best.onnx",
                lambda: convert(realistic.synctalk_unet().model("SyncTalk_2D 328 UNet (ave), random weights")))
    for name in ("template.mp4", "boxes.npy"):  # a character reads only its own folder: copies, not links
        if not (folder / name).is_file() or (folder / name).stat().st_size != (alice / name).stat().st_size:
            temp = folder / f".{name}.{os.getpid()}.part"
            shutil.copyfile(alice / name, temp)
            os.replace(temp, folder / name)
    manifest = (alice / "character.toml").read_text().replace('name = "alice"', 'name = "realistic"')
    existing = folder / "character.toml"
    if not existing.is_file() or without_variants(existing.read_text()) != without_variants(manifest):
        existing.write_text(manifest)  # its variants (bench --precision) are kept while the rest is the same
    return folder


PARAMETERS = {"audio_encoder": 2_812_672, "unet": 12_186_935}


def realistic_variant(folder: Path, precision: str, backend: str, say=lambda s: None) -> None:
    """Make the realistic pair's `precision` variant for `backend` once (kept in its cache folder), for timing.

    Random weights are no test of quality (their outputs barely vary), so the variant is kept whatever its
    figures: checked against a bar of 99 dB and kept by force, so that `auto` never picks it; it is asked for
    by name. The quality gate is measured on a fitted model (docs/cpu.md)."""
    from lipsync_cli.characters.manifest import load_character
    from lipsync_cli.optimize import OptimizeOptions, optimize
    from lipsync_cli.render.precision import stale_reason
    from lipsync_cli.runtime import Runtime

    if precision in ("auto", "fp32"):
        return
    character = load_character(folder)
    with Runtime() as runtime:
        for variant in character.variants:
            if (variant.precision, variant.backend) == (precision, backend) and \
                    stale_reason(runtime, character, variant) is None:
                return
    say(f"making the realistic pair's {precision} variant for {backend} (once)")
    options = OptimizeOptions(cast("Precision", precision), cast("Backend", backend), min_psnr=99, force=True,
                              calibration_frames=16, check_frames=8)
    optimize(folder, options, say)
