"""A character: a folder with `character.toml`, a template video, crop boxes and two ONNX models.

`load_character` validates everything before any work: the manifest's keys and values, the files, the
template's size and frame count against the boxes, and both models' signatures (opened with onnxruntime).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import cast

import cv2
import numpy as np

from lipsync_cli.characters.variants import Variant, parse_variants
from lipsync_cli.errors import CharacterError, LipsyncError, RenderError
from lipsync_cli.features.layouts import Layout
from lipsync_cli.features.windows import parse_fps
from lipsync_cli.models.contracts import EncoderContract, UNetContract, check_audio_encoder, check_unet
from lipsync_cli.models.precision import Precision
from lipsync_cli.models.sessions import read_signature
from lipsync_cli.resources import bundled_dir
from lipsync_cli.specs import (  # noqa: F401  (CropSpec, InputSpec, AudioSpec: also read from here)
    AudioSpec,
    Channel,
    Color,
    CropSpec,
    InputSpec,
    PadMode,
    Resampler,
    TemplateSpec,
    WindowEnd,
)

MANIFEST = "character.toml"
MIN_FPS, MAX_FPS = 1, 240
_TOP_KEYS = {"name", "fps", "fps_override", "first_frame", "template", "boxes", "protect", "model", "audio_encoder",
             "crop", "input", "audio", "variants"}
_SECTIONS = {
    "crop": {"size", "border"},
    "input": {"channels", "color", "mask"},
    "audio": {"pad_mode", "window_end", "resample"},
}


@dataclass(frozen=True)
class TemplateInfo:
    width: int
    height: int
    frames: int
    fps: float


@dataclass(frozen=True)
class Character:
    name: str
    root: Path
    fps: Fraction
    template: Path
    boxes: np.ndarray = field(repr=False)  # int [frames, 4]: x1, y1, x2, y2
    model: Path
    audio_encoder: Path
    crop: CropSpec
    input: InputSpec
    audio: AudioSpec
    video: TemplateInfo
    encoder_contract: EncoderContract
    unet_contract: UNetContract
    boxes_path: Path | None = None
    first_frame: int = 0  # the template frame of output frame 0 (the ping-pong walk starts there)
    protect: Path | None = None  # a folder of per-frame masks (N.png): pure blue or white pixels keep the template
    variants: tuple[Variant, ...] = ()  # optimised variants named in the manifest (`lipsync characters optimize`)
    precision: Precision = "fp32"  # what this object renders with: its float models, or one variant's

    @property
    def model_files(self) -> tuple[Path, Path]:
        """The files its sessions are made of: (audio encoder, UNet)."""
        return self.audio_encoder, self.model

    def with_variant(self, variant: Variant) -> Character:
        """The same character rendering with `variant`'s files and precision (their contracts are the float
        models': a QDQ model keeps float inputs and outputs)."""
        model, encoder = self.root / variant.model, self.root / variant.audio_encoder
        return replace(self, model=model, audio_encoder=encoder, precision=variant.precision,
                       unet_contract=replace(self.unet_contract, path=model),
                       encoder_contract=replace(self.encoder_contract, path=encoder))

    @property
    def template_spec(self) -> TemplateSpec:
        return TemplateSpec(self.name, self.template, self.boxes, self.video.width, self.video.height,
                            self.video.frames, self.crop, self.first_frame)

    def template_index(self, i: int) -> int:
        """The template frame of output frame i."""
        return self.template_spec.index(i)

    def protect_mask(self, k: int, region: tuple[int, int, int, int]) -> np.ndarray | None:
        """Bool mask of the region (x0, y0, x1, y1) of template frame k: True where the template is kept."""
        if self.protect is None:
            return None
        image = cv2.imread(str(self.protect / f"{k}.png"), cv2.IMREAD_COLOR)
        x0, y0, x1, y1 = region
        if image is None:
            raise RenderError(f"{self.protect / f'{k}.png'}: the protect mask cannot be read")
        part = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        h, w = min(y1, image.shape[0]) - y0, min(x1, image.shape[1]) - x0
        part[:h, :w] = image[y0 : y0 + h, x0 : x0 + w]
        blue = (part[:, :, 0] == 255) & (part[:, :, 1] == 0) & (part[:, :, 2] == 0)
        return blue | (part == 255).all(axis=2)

    @property
    def layout(self) -> Layout:
        return self.unet_contract.layout


def search_dirs() -> list[Path]:
    """Where characters are looked up by name, in order."""
    dirs = [Path.cwd() / "characters"]
    dirs += [Path(p) for p in os.environ.get("LIPSYNC_CHARACTERS", "").split(os.pathsep) if p]
    bundled = bundled_dir("characters")
    if bundled is not None:
        dirs.append(bundled)
    seen, out = set(), []
    for d in dirs:
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def find_character(name_or_path: str | Path) -> Path:
    """The folder of a character given by path or by name."""
    candidate = Path(name_or_path)
    if candidate.is_dir():
        return candidate
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate.parent
    if len(candidate.parts) == 1:
        for base in search_dirs():
            if (base / candidate).is_dir():
                return base / candidate
    names = {folder.name.lower(): folder.name for folder in list_characters()}
    close = difflib.get_close_matches(str(name_or_path).lower(), list(names), n=3, cutoff=0.6)
    if close:
        raise CharacterError(f"{name_or_path}: no such character; did you mean {' or '.join(names[n] for n in close)}?")
    where = ", ".join(str(d) for d in search_dirs())
    raise CharacterError(f"{name_or_path}: no such character (not a folder, nor a name found in {where})")


def list_characters() -> list[Path]:
    """Every folder with a character.toml in the search directories (first of each name wins)."""
    found: dict[str, Path] = {}
    for base in search_dirs():
        if base.is_dir():
            for sub in sorted(base.iterdir()):
                if (sub / MANIFEST).is_file() and sub.name not in found:
                    found[sub.name] = sub
    return list(found.values())


def _read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not path.is_file():
        raise CharacterError(f"{path}: missing (a character folder needs a {MANIFEST})")
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise CharacterError(f"{path}: malformed TOML ({exc})") from None
    except OSError as exc:
        raise CharacterError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    unknown = sorted(set(data) - _TOP_KEYS)
    for section, keys in _SECTIONS.items():
        if section in data:
            if not isinstance(data[section], dict):
                raise CharacterError(f"{path}: [{section}] must be a table")
            unknown += [f"{section}.{k}" for k in sorted(set(data[section]) - keys)]
    if unknown:
        raise CharacterError(f"{path}: unknown key(s) {', '.join(unknown)}")
    if "variants" in data and not isinstance(data["variants"], list):
        raise CharacterError(f"{path}: 'variants' must be an array of tables ([[variants]])")
    for key in ("template", "boxes", "model", "audio_encoder"):
        if not isinstance(data.get(key), str):
            raise CharacterError(f"{path}: '{key}' must be given as a file name")
    return data


def _file(root: Path, data: dict, key: str) -> Path:
    path = root / data[key]
    inside = root.resolve()
    if not path.resolve().is_relative_to(inside):  # resolved before anything opens it: a FIFO outside never blocks
        raise CharacterError(f"{path}: '{key}' in {root / MANIFEST} is outside the character's folder (it resolves "
                             f"to {path.resolve()}); a character may only use its own files")
    if not path.is_file():
        raise CharacterError(f"{path}: missing ('{key}' in {root / MANIFEST})")
    if not os.access(path, os.R_OK):
        raise CharacterError(f"{path}: cannot be read ('{key}' in {root / MANIFEST})")
    return path


def _whole(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be a whole number, not {value!r}")
    return value


def _specs(root: Path, data: dict) -> tuple[Fraction, CropSpec, InputSpec, AudioSpec]:
    manifest = root / MANIFEST
    try:
        fps = parse_fps(data.get("fps", 25))
        crop_d, input_d, audio_d = data.get("crop", {}), data.get("input", {}), data.get("audio", {})
        crop = CropSpec(_whole(crop_d.get("size", 328), "crop.size"), _whole(crop_d.get("border", 4), "crop.border"))
        channels = tuple(input_d.get("channels", ("reference", "masked")))
        color = str(input_d.get("color", "bgr")).lower()
        mask = tuple(_whole(v, "input.mask") for v in input_d.get("mask", (5, 5, 310, 305)))
        audio = AudioSpec(cast(PadMode, str(audio_d.get("pad_mode", "constant"))),
                          cast(WindowEnd, str(audio_d.get("window_end", "silence"))),
                          cast(Resampler, str(audio_d.get("resample", "soxr"))))
    except (TypeError, ValueError) as exc:
        raise CharacterError(f"{manifest}: bad value ({exc})") from None
    if not MIN_FPS <= fps <= MAX_FPS:
        raise CharacterError(f"{manifest}: fps {float(fps):g} is outside {MIN_FPS} to {MAX_FPS} frames per second")
    if crop.border < 0 or crop.inner < 16:
        raise CharacterError(f"{manifest}: crop size {crop.size} with border {crop.border} leaves no inner square")
    if sorted(channels) != ["masked", "reference"]:
        raise CharacterError(f"{manifest}: input.channels must be [\"reference\", \"masked\"] in some order")
    if color not in ("bgr", "rgb"):
        raise CharacterError(f"{manifest}: input.color must be bgr or rgb, not {color!r}")
    if len(mask) != 4 or mask[0] < 0 or mask[1] < 0 or mask[2] <= 0 or mask[3] <= 0 \
            or mask[0] + mask[2] > crop.inner or mask[1] + mask[3] > crop.inner:
        raise CharacterError(f"{manifest}: input.mask {list(mask)} must be x, y, w, h inside {crop.inner}x{crop.inner}")
    if audio.pad_mode not in ("constant", "reflect"):
        raise CharacterError(f"{manifest}: audio.pad_mode must be constant or reflect, not {audio.pad_mode!r}")
    if audio.resample not in ("soxr", "polyphase"):
        raise CharacterError(f"{manifest}: audio.resample must be soxr or polyphase, not {audio.resample!r}")
    if audio.window_end not in ("silence", "clamp"):
        raise CharacterError(f"{manifest}: audio.window_end must be silence or clamp, not {audio.window_end!r}")
    return fps, crop, InputSpec(cast(tuple[Channel, Channel], channels), cast(Color, color),
                                cast(tuple[int, int, int, int], mask)), audio


def probe_template(path: Path) -> TemplateInfo:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise CharacterError(f"{path}: not a readable video")
        ok, frame = capture.read()
        if not ok or frame is None:
            raise CharacterError(f"{path}: has no decodable video frame")
        height, width = frame.shape[:2]
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
    finally:
        capture.release()
    if frames <= 0:
        raise CharacterError(f"{path}: the video does not state its frame count")
    return TemplateInfo(width, height, frames, fps)


def _load_boxes(path: Path, video: TemplateInfo, template: Path) -> np.ndarray:
    try:
        boxes = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CharacterError(f"{path}: not a readable .npy array ({exc})") from None
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.issubdtype(boxes.dtype, np.number):
        raise CharacterError(f"{path}: expected a numeric [frames, 4] array of x1, y1, x2, y2, got {list(boxes.shape)}")
    if len(boxes) != video.frames:
        raise CharacterError(f"{path}: {len(boxes)} boxes for {video.frames} frames of {template.name}")
    if not np.all(np.isfinite(boxes)) or not np.array_equal(boxes, np.round(boxes)):
        raise CharacterError(f"{path}: box coordinates must be whole pixels")
    limit = 1 << 20  # before any cast: absurd values would overflow it (and numpy would warn on stderr)
    if np.abs(boxes).max() > limit:
        i = int(np.flatnonzero((np.abs(boxes) > limit).any(axis=1))[0])
        shown = ", ".join(f"{v:.3g}" for v in np.asarray(boxes[i], np.float64))
        raise CharacterError(f"{path}: box {i} [{shown}] is outside the {video.width}x{video.height} frame")
    boxes = boxes.astype(np.int64)
    x1, y1, x2, y2 = boxes.T
    bad = np.flatnonzero((x1 < 0) | (y1 < 0) | (x2 > video.width) | (y2 > video.height) | (x2 - x1 < 8) | (y2 - y1 < 8))
    if len(bad):
        i = int(bad[0])
        raise CharacterError(
            f"{path}: box {i} {boxes[i].tolist()} is empty or outside the {video.width}x{video.height} frame"
            + (f" ({len(bad)} bad boxes)" if len(bad) > 1 else "")
        )
    return boxes


def load_character(name_or_path: str | Path) -> Character:
    """Find, read and fully check a character; raise CharacterError/ModelError with a one-line reason.
    The models' signatures are read without keeping a session open."""
    root = find_character(name_or_path)
    data = _read_manifest(root)
    fps, crop, input_spec, audio = _specs(root, data)
    template, boxes_path = _file(root, data, "template"), _file(root, data, "boxes")
    model, encoder = _file(root, data, "model"), _file(root, data, "audio_encoder")
    video = probe_template(template)
    override = data.get("fps_override", False)
    if not isinstance(override, bool):
        raise CharacterError(f"{root / MANIFEST}: fps_override must be true or false")
    if video.fps > 0 and abs(float(fps) - video.fps) > 0.01 and not override:
        raise CharacterError(f"{root / MANIFEST}: fps {float(fps):g} differs from the template's own {video.fps:g} fps "
                             f"({template.name}); set fps_override = true to render at {float(fps):g} anyway")
    boxes = _load_boxes(boxes_path, video, template)
    first_frame = data.get("first_frame", 0)
    if isinstance(first_frame, bool) or not isinstance(first_frame, int) or not 0 <= first_frame < video.frames:
        raise CharacterError(f"{root / MANIFEST}: first_frame must be a frame of the template, 0 to {video.frames - 1}")
    protect = None
    if "protect" in data:
        if not isinstance(data["protect"], str):
            raise CharacterError(f"{root / MANIFEST}: 'protect' must be given as a folder name")
        protect = root / data["protect"]
        if not protect.resolve().is_relative_to(root.resolve()) or not protect.is_dir():
            raise CharacterError(f"{protect}: 'protect' in {root / MANIFEST} must be a folder inside the character's")
        missing = [k for k in range(video.frames) if not (protect / f"{k}.png").is_file()]
        if missing:
            raise CharacterError(f"{protect / f'{missing[0]}.png'}: missing ({len(missing)} protect masks missing)")
    encoder_contract = check_audio_encoder(read_signature(encoder), encoder)
    unet_contract = check_unet(read_signature(model), model, crop.inner)
    name = data.get("name", root.name)
    variants = parse_variants(data.get("variants"), root / MANIFEST)
    return Character(str(name), root, fps, template, boxes, model, encoder, crop, input_spec, audio, video,
                     encoder_contract, unet_contract, boxes_path, first_frame, protect, variants)


def check_character(path: Path) -> tuple[Character | None, str]:
    """(character, "ok") or (None, the problem) for listings."""
    try:
        return load_character(path), "ok"
    except LipsyncError as exc:
        return None, str(exc)
