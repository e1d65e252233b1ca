"""The realistic-cost character: alice's template and boxes driven by full-size random-weight models,
built once with the `onnx` package into a cache directory and reused."""

from __future__ import annotations

import os
from pathlib import Path

from lipsync_cli.errors import InputError
from lipsync_cli.resources import bundled_dir, cache_root

VERSION = "realistic-v1"


def cache_dir() -> Path:
    return cache_root() / VERSION


def _write_once(path: Path, build) -> None:
    if path.is_file():
        return
    from lipsync_cli.models.graphs.builder import save

    temp = path.with_name(f".{path.name}.{os.getpid()}.part")
    save(build(), temp)
    os.replace(temp, path)


def realistic_character(folder: Path | None = None) -> Path:
    """A character folder using the Wav2Lip encoder and the SyncTalk_2D UNet (random weights)."""
    try:
        from lipsync_cli.models.graphs import realistic
    except ImportError as exc:
        raise InputError(f"the realistic models need the onnx package ({exc}): pip install onnx") from None
    folder = folder or cache_dir()
    alice = bundled_dir("characters")
    if alice is None or not (alice / "alice" / "template.mp4").is_file():
        raise InputError("the realistic models borrow alice's template, which is not installed")
    alice = alice / "alice"
    folder.mkdir(parents=True, exist_ok=True)
    _write_once(folder / "audio_encoder.onnx",
                lambda: realistic.wav2lip_audio_encoder().model("Wav2Lip audio encoder, random weights"))
    _write_once(folder / "model_best.onnx",
                lambda: realistic.synctalk_unet().model("SyncTalk_2D 328 UNet (ave), random weights"))
    manifest = (alice / "character.toml").read_text()
    manifest = manifest.replace('name = "alice"', 'name = "realistic"')
    manifest = manifest.replace('"template.mp4"', f'"{(alice / "template.mp4").as_posix()}"')
    manifest = manifest.replace('"boxes.npy"', f'"{(alice / "boxes.npy").as_posix()}"')
    (folder / "character.toml").write_text(manifest)
    return folder


PARAMETERS = {"audio_encoder": 2_812_672, "unet": 12_186_935}
