"""The seed's model folders as characters: `lipsync characters import seed CONFIG.yaml [--model ID]`.

The seed's `config.yaml` names a `models_root` and, per model (a mapping of model id to its settings, or a
list of settings with an `id`), `model_path` (the UNet), `background_dir` (the frames, `frame_%04d` or
`frame_%d`, PNG or JPEG, numbered from 0 or 1), `crop_rects_path` (a JSON list of `[x1, y1, x2, y2]`, one per
frame) and `num_frames`. Relative paths are relative to `models_root`, and `models_root` to the config's
folder. The audio encoder is the config's `audio_encoder_path` (or `audio_encoder`) if it has one, else
`audio_encoder.onnx` beside the config, else in `models_root`.

Each model becomes a character folder named after its id: the backgrounds encoded as the template (H.264,
visually lossless), the crop rectangles as `boxes.npy`, the two models copied in and checked against the
contracts (the seed's fixed batch of 1 included). What cannot be carried over is said, not guessed at.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lipsync_cli.characters.importers.synctalk2d import FPS, encode_template
from lipsync_cli.characters.manifest import MANIFEST, load_character
from lipsync_cli.characters.toml_out import to_toml
from lipsync_cli.errors import CharacterError
from lipsync_cli.models.contracts import check_audio_encoder, check_unet
from lipsync_cli.models.sessions import read_signature
from lipsync_cli.specs import CropSpec

MODEL_KEYS = {"id", "model_id", "name", "model_path", "background_dir", "crop_rects_path", "num_frames"}
FRAME = re.compile(r"frame_(\d+)\.(png|jpg|jpeg)", re.IGNORECASE)
ALWAYS = ("the seed walks its backgrounds forward and jumps back to frame 0 at the end; a character plays its "
          "template forward then backward (InferBatchComposite keeps the seed's rule)",
          "the crop follows lipsync's default (the rectangle resized to 328x328, the inner 320x320 to the UNet); "
          "a model trained on the rectangle resized straight to 320 needs [crop] size = 320, border = 0")


@dataclass(frozen=True)
class SeedModel:
    id: str
    unet: Path
    backgrounds: Path
    crop_rects: Path
    num_frames: int | None
    ignored: tuple[str, ...]  # keys of its settings that mean nothing here


@dataclass(frozen=True)
class Imported:
    id: str
    folder: Path
    notes: tuple[str, ...]  # what could not be carried over


def read_config(path: Path) -> tuple[list[SeedModel], Path, tuple[str, ...]]:
    """The models of a seed config, its audio encoder, and the top-level keys it ignores."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise CharacterError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise CharacterError(f"{path}: malformed YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict) or "models" not in data:
        raise CharacterError(f"{path}: not a seed config (no 'models' section)")
    base = Path(path).resolve().parent
    root = base / str(data.get("models_root", "."))
    entries = data["models"]
    if isinstance(entries, dict):
        items = [(str(k), v) for k, v in entries.items()]
    elif isinstance(entries, list):
        items = [(str(v.get("id") or v.get("model_id") or v.get("name") or ""), v) if isinstance(v, dict) else ("", v)
                 for v in entries]
    else:
        raise CharacterError(f"{path}: 'models' must be a mapping of model ids or a list")
    models = [_model(path, root, model_id, settings) for model_id, settings in items]
    given = data.get("audio_encoder_path") or data.get("audio_encoder")
    candidates = [base / str(given)] if given else [base / "audio_encoder.onnx", root / "audio_encoder.onnx"]
    encoder = next((c for c in candidates if c.is_file()), None)
    if encoder is None:
        raise CharacterError(f"{path}: no audio encoder found (looked for {', '.join(map(str, candidates))})")
    ignored = tuple(sorted(k for k in data if k not in ("models", "models_root", "audio_encoder_path",
                                                         "audio_encoder")))
    return models, encoder, ignored


def _model(config: Path, root: Path, model_id: str, settings: Any) -> SeedModel:
    if not model_id or not isinstance(settings, dict):
        raise CharacterError(f"{config}: every model needs an id and settings (model_path, background_dir, ...)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", model_id):
        raise CharacterError(f"{config}: model id {model_id!r} cannot name a character (letters, digits, . _ -)")
    missing = [k for k in ("model_path", "background_dir", "crop_rects_path") if not settings.get(k)]
    if missing:
        raise CharacterError(f"{config}: model {model_id} has no {', '.join(missing)}")
    frames = settings.get("num_frames")
    if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 1):
        raise CharacterError(f"{config}: model {model_id}: num_frames must be a positive whole number, not {frames!r}")
    return SeedModel(model_id, root / str(settings["model_path"]), root / str(settings["background_dir"]),
                     root / str(settings["crop_rects_path"]), frames,
                     tuple(sorted(k for k in settings if k not in MODEL_KEYS)))


def background_frames(folder: Path, count: int | None) -> list[Path]:
    """The frames in order: frame_N with N from 0 or 1, without a gap; the first `count` of them."""
    if not folder.is_dir():
        raise CharacterError(f"{folder}: missing (the model's background_dir)")
    numbered: dict[int, Path] = {}
    for p in folder.iterdir():
        match = FRAME.fullmatch(p.name)
        if match:
            if int(match.group(1)) in numbered:
                raise CharacterError(f"{p}: a second frame numbered {int(match.group(1))}")
            numbered[int(match.group(1))] = p
    if not numbered:
        raise CharacterError(f"{folder}: holds no frame_N.png or frame_N.jpg")
    first = min(numbered)
    if first > 1:
        raise CharacterError(f"{folder}: its frames start at {first}, not 0 or 1")
    frames = []
    for n in range(first, first + (count if count is not None else len(numbered))):
        if n not in numbered:
            raise CharacterError(f"{folder}: frame {n} is missing" + (f" (num_frames is {count})" if count else ""))
        frames.append(numbered[n])
    return frames


def read_background(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CharacterError(f"{path}: not a readable image")
    return image


def crop_rects(path: Path, count: int, width: int, height: int) -> np.ndarray:
    try:
        rects = np.array(json.loads(Path(path).read_text()), dtype=np.float64)
    except OSError as exc:
        raise CharacterError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (ValueError, TypeError) as exc:
        raise CharacterError(f"{path}: not a JSON list of [x1, y1, x2, y2] ({exc})") from None
    if rects.ndim != 2 or rects.shape[1] != 4:
        raise CharacterError(f"{path}: not a JSON list of [x1, y1, x2, y2]")
    if len(rects) < count:
        raise CharacterError(f"{path}: {len(rects)} rectangles for {count} frames")
    rects = rects[:count]
    if not np.isfinite(rects).all():
        raise CharacterError(f"{path}: holds a rectangle that is not made of numbers")
    boxes = np.rint(rects).astype(np.int32)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height or x2 - x1 < 8 or y2 - y1 < 8:
            raise CharacterError(f"{path}: rectangle {i} [{x1}, {y1}, {x2}, {y2}] is not inside the {width}x{height} "
                                 "frame")
    return boxes


def import_model(model: SeedModel, encoder: Path, out: Path, ignored: tuple[str, ...] = ()) -> Imported:
    """Make the character folder `out` from one seed model; raise CharacterError or ModelError naming the file."""
    if out.exists():
        raise CharacterError(f"{out}: exists; give another --out folder")
    if not model.unet.is_file():
        raise CharacterError(f"{model.unet}: no such model file (model {model.id}'s model_path)")
    unet = check_unet(read_signature(model.unet), model.unet, CropSpec().inner)
    encoder_contract = check_audio_encoder(read_signature(encoder), encoder)
    frames = background_frames(model.backgrounds, model.num_frames)
    height, width = read_background(frames[0]).shape[:2]
    boxes = crop_rects(model.crop_rects, len(frames), width, height)
    notes = list(ALWAYS)
    if model.ignored:
        notes.append(f"settings of model {model.id} with no meaning here: {', '.join(model.ignored)}")
    if ignored:
        notes.append(f"config sections that are server options here (lipsync serve --max-models, ...) or have no "
                     f"meaning: {', '.join(ignored)}")
    if unet.fixed_batch or encoder_contract.fixed_batch:
        notes.append("the models take a fixed batch of 1: they run frame by frame (slower than a dynamic batch)")
    temp = out.with_name(f".{out.name}.importing")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    try:
        encode_template(frames, width, height, temp / "template.mp4", read_background)
        np.save(temp / "boxes.npy", boxes)
        shutil.copyfile(model.unet, temp / "model_best.onnx")
        shutil.copyfile(encoder, temp / "audio_encoder.onnx")
        manifest = {"name": out.name, "fps": FPS, "template": "template.mp4", "boxes": "boxes.npy",
                    "model": "model_best.onnx", "audio_encoder": "audio_encoder.onnx"}
        comment = f"Imported from the seed's model {model.id} ({model.unet})."
        (temp / MANIFEST).write_text(to_toml(manifest, comment))
        load_character(temp)  # the models' contracts, the boxes against the template: all checked
        temp.rename(out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return Imported(model.id, out, tuple(notes))


def import_seed(config: Path, out_dir: Path, model_id: str | None = None, name: str | None = None) -> list[Imported]:
    """Every model of a seed config (or only `model_id`) as characters in `out_dir`, each named after its id
    (or `name`, for one model)."""
    models, encoder, ignored = read_config(config)
    if model_id is not None:
        models = [m for m in models if m.id == model_id]
        if not models:
            known = ", ".join(m.id for m in read_config(config)[0])
            raise CharacterError(f"{config}: no model {model_id!r} (it has {known})")
    if name is not None and len(models) != 1:
        raise CharacterError(f"{config}: a name is for one model, and this imports {len(models)} (give --model)")
    for m in models:
        if (Path(out_dir) / (name or m.id)).exists():
            raise CharacterError(f"{Path(out_dir) / (name or m.id)}: exists; give another --out folder")
    return [import_model(m, encoder, Path(out_dir) / (name or m.id), ignored) for m in models]
