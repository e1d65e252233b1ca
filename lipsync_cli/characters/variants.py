"""A character's optimised variants: what `[[variants]]` in `character.toml` holds, and how it is written.

Each variant names the files it runs (a new UNet file for int8; the float files for bf16 and fp16, which are
execution precisions), their sha256 when it was checked, the backend it was checked on, and the figures of
that check against the float models. A manifest without variants reads as before.

    [[variants]]
    precision = "int8"
    backend = "onnxruntime"
    model = "model_best.int8.onnx"
    model_sha256 = "..."
    source_sha256 = "..."             # int8: the float UNet it was made from
    audio_encoder = "audio_encoder.onnx"
    audio_encoder_sha256 = "..."
    checked_on = "cpu"
    created = "2026-01-01T00:00:00Z"
    forced = false
    [variants.quality]
    psnr_db = 46.2
    ...
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import cast

from lipsync_cli.characters.toml_out import to_toml
from lipsync_cli.errors import CharacterError
from lipsync_cli.models.devices import Backend
from lipsync_cli.models.precision import OPTIMISED, Precision


@dataclass(frozen=True)
class Quality:
    """A variant against the float models on held-out frames of the character speaking (levels are 0-255)."""

    psnr_db: float  # of the generated mouth patch (the UNet's output) against the float model's
    max_diff: int  # the largest difference of one patch pixel, in levels
    seam_ring: float  # seam score of the composited frame (compositing/seam.py): ring difference, levels
    seam_step: float  # and the step across the patch edge beyond the template's own
    float_seam_ring: float  # the same of the float models' frames
    float_seam_step: float
    sync: float  # mouth-activity correlation: how the mouth moves frame to frame, variant against float
    frames: int  # held-out frames compared
    min_psnr_db: float  # the bar it was checked against


@dataclass(frozen=True)
class Variant:
    precision: Precision
    backend: Backend
    model: str  # file names inside the character's folder
    model_sha256: str
    audio_encoder: str
    audio_encoder_sha256: str
    checked_on: str  # the device of the check (cpu, openvino, openvino:GPU, ...)
    created: str
    quality: Quality | None  # None: never checked (refused by --precision)
    forced: bool = False  # kept below the bar with --force: never chosen by auto
    source_sha256: str | None = None  # int8: the float UNet it was made from (older manifests: not recorded)

    @property
    def passed(self) -> bool:
        return self.quality is not None and not self.forced and self.quality.psnr_db >= self.quality.min_psnr_db

    @property
    def label(self) -> str:
        return f"{self.precision} on {self.backend}"

    def to_toml_table(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "quality" and getattr(self, f.name) is not None}
        if self.quality is not None:
            data["quality"] = asdict(self.quality)
        return data


_SHA = re.compile(r"^[0-9a-f]{64}$")


def _field(table: dict, key: str, kind: type, where: str):
    value = table.get(key)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise CharacterError(f"{where}: '{key}' must be a {kind.__name__}")
    return value


def parse_variants(data: object, manifest: Path) -> tuple[Variant, ...]:
    """The `[[variants]]` of a manifest, checked for form (their files are checked when one is chosen)."""
    if data is None:
        return ()
    if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
        raise CharacterError(f"{manifest}: 'variants' must be an array of tables ([[variants]])")
    out = []
    for i, table in enumerate(data):
        where = f"{manifest}: variant {i + 1}"
        known = {f.name for f in fields(Variant)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise CharacterError(f"{where}: unknown key(s) {', '.join(unknown)}")
        precision = _field(table, "precision", str, where)
        if precision not in OPTIMISED:
            raise CharacterError(f"{where}: precision must be int8, bf16 or fp16, not {precision!r}")
        backend = _field(table, "backend", str, where)
        if backend not in ("onnxruntime", "openvino"):
            raise CharacterError(f"{where}: backend must be onnxruntime or openvino, not {backend!r}")
        for key in ("model_sha256", "audio_encoder_sha256", "source_sha256"):
            if (key != "source_sha256" or key in table) and not _SHA.match(_field(table, key, str, where)):
                raise CharacterError(f"{where}: '{key}' must be a sha256 in hex")
        quality = None
        if "quality" in table:
            q = table["quality"]
            if not isinstance(q, dict) or sorted(q) != sorted(f.name for f in fields(Quality)):
                raise CharacterError(f"{where}: [variants.quality] must hold exactly "
                                     f"{', '.join(f.name for f in fields(Quality))}")
            quality = Quality(**{f.name: _field(q, f.name, int if f.name in ("max_diff", "frames") else float,
                                                where) for f in fields(Quality)})
        out.append(Variant(cast(Precision, precision), backend, _field(table, "model", str, where),
                           table["model_sha256"], _field(table, "audio_encoder", str, where),
                           table["audio_encoder_sha256"], _field(table, "checked_on", str, where),
                           _field(table, "created", str, where), quality,
                           _field(table, "forced", bool, where) if "forced" in table else False,
                           table.get("source_sha256")))
    return tuple(out)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_HEADER = re.compile(r"^\s*\[")
_VARIANT_HEADER = re.compile(r"^\s*\[\[\s*variants\s*\]\]|^\s*\[\s*variants\s*\.")


def without_variants(text: str) -> str:
    """The manifest's text less its `[[variants]]` tables (and their sub-tables); everything else as written."""
    kept, inside = [], False
    for line in text.splitlines():
        if _HEADER.match(line):
            inside = bool(_VARIANT_HEADER.match(line))
        if not inside:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join(kept) + "\n"


def variants_toml(variants: tuple[Variant, ...] | list[Variant]) -> str:
    parts = []
    for variant in variants:
        table = variant.to_toml_table()
        quality = table.pop("quality", None)
        body = to_toml(table).rstrip("\n")
        parts.append("[[variants]]\n" + body + ("\n[variants.quality]\n" + to_toml(quality).rstrip("\n")
                                                 if quality else ""))
    return "\n\n".join(parts) + "\n" if parts else ""


def write_manifest_variants(manifest: Path, variants: tuple[Variant, ...] | list[Variant]) -> None:
    """Replace the manifest's variants, atomically (a temporary file beside it, renamed over it)."""
    text = without_variants(manifest.read_text())
    body = variants_toml(variants)
    temp = manifest.with_name(f".{manifest.name}.{os.getpid()}.part")
    try:
        temp.write_text(text + ("\n" + body if body else ""))
        os.replace(temp, manifest)
    finally:
        temp.unlink(missing_ok=True)
