"""A SyncTalk_2D dataset folder as a character (design.md section 12).

The dataset: `full_body_img/N.jpg` (the frames), `landmarks/N.lms` (110 lines of "x y"), optional
`parsing/N.png`. Boxes follow SyncTalk_2D's rule: xmin = lms[1].x, ymin = lms[52].y, xmax = lms[31].x,
ymax = ymin + (xmax - xmin). The template is encoded from the frames (H.264, visually lossless, padded to
an even size), the parsing masks are kept as the character's protect masks, the models are copied in and
checked, and SyncTalk_2D's walk through the template (1, 2, ..., n-1, ..., 0, 1, ...) is kept by starting
the ping-pong at frame 1.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from lipsync_cli.characters.manifest import MANIFEST, load_character
from lipsync_cli.characters.toml_out import to_toml
from lipsync_cli.encoding.ffmpeg import ffmpeg_exe
from lipsync_cli.errors import CharacterError
from lipsync_cli.models.contracts import check_audio_encoder, check_unet
from lipsync_cli.models.sessions import read_signature
from lipsync_cli.specs import CropSpec

POINTS = 110
FPS = 25
TEMPLATE_CRF = 12  # visually lossless


def _frames(dataset: Path) -> list[int]:
    folder = dataset / "full_body_img"
    if not folder.is_dir():
        raise CharacterError(f"{folder}: missing (a SyncTalk_2D dataset has full_body_img/N.jpg frames)")
    numbers = sorted(int(p.stem) for p in folder.glob("*.jpg") if p.stem.isdigit())
    if not numbers:
        raise CharacterError(f"{folder}: holds no N.jpg frame")
    for expected, number in enumerate(numbers):
        if number != expected:
            raise CharacterError(f"{folder / f'{expected}.jpg'}: missing (frames must be 0.jpg to "
                                 f"{numbers[-1]}.jpg without a gap)")
    return numbers


def read_landmarks(path: Path) -> np.ndarray:
    """[110, 2] float landmarks of one frame."""
    try:
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        points = np.array(rows, dtype=np.float64)
    except FileNotFoundError:
        raise CharacterError(f"{path}: missing (every frame needs its landmarks)") from None
    except (OSError, ValueError) as exc:
        raise CharacterError(f"{path}: not a landmark file of 'x y' lines ({exc})") from None
    if points.shape != (POINTS, 2):
        raise CharacterError(f"{path}: {len(rows)} points, a SyncTalk_2D landmark file has {POINTS}")
    bad = np.flatnonzero(~np.isfinite(points).all(axis=1))
    if len(bad):
        raise CharacterError(f"{path}: point {int(bad[0])} is not a finite number ({' '.join(rows[bad[0]])})")
    return points


def read_frame(path: Path) -> np.ndarray:
    """A dataset frame as BGR; a JPEG cut short is refused (libjpeg would fill it in grey, with a warning)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CharacterError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    scan, end = data.rfind(b"\xff\xda"), data.rfind(b"\xff\xd9")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if 0 < scan < end else None
    if image is None:
        raise CharacterError(f"{path}: not a readable JPEG image" + (" (cut short)" if data[:2] == b"\xff\xd8" else ""))
    return image


def check_masks(folder: Path, numbers: list[int], width: int, height: int) -> None:
    """Every parsing mask: a readable image of the frames' size."""
    for n in numbers:
        path = folder / f"{n}.png"
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise CharacterError(f"{path}: not a readable image")
        if mask.shape[:2] != (height, width):
            raise CharacterError(f"{path}: {mask.shape[1]}x{mask.shape[0]}, the frames are {width}x{height}")


def box_from_landmarks(points: np.ndarray) -> tuple[int, int, int, int]:
    xmin, ymin, xmax = int(points[1, 0]), int(points[52, 1]), int(points[31, 0])
    return xmin, ymin, xmax, ymin + (xmax - xmin)


def encode_template(frames: list[Path], width: int, height: int, out: Path,
                    read: Callable[[Path], np.ndarray] = read_frame) -> None:
    """The frames (BGR images of one size, read by `read`) as an H.264 template, visually lossless."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
           "-s", f"{width}x{height}", "-framerate", str(FPS), "-i", "pipe:0", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
           "-c:v", "libx264", "-preset", "medium", "-crf", str(TEMPLATE_CRF), "-pix_fmt", "yuv420p", str(out)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None
    try:
        for path in frames:
            image = read(path)
            if image.shape[:2] != (height, width):
                raise CharacterError(f"{path}: {image.shape[1]}x{image.shape[0]}, not {width}x{height} like the "
                                     "first frame")
            proc.stdin.write(image.tobytes())
        proc.stdin.close()
        if proc.wait() != 0:
            raise CharacterError(f"{out}: ffmpeg could not encode the template "
                                 f"({proc.stderr.read().decode(errors='replace').strip()[-200:]})")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def import_dataset(dataset: Path, unet: Path, audio_encoder: Path, name: str, out: Path) -> Path:
    """Make the character folder `out` from a SyncTalk_2D dataset; raise CharacterError naming the bad file."""
    dataset, out = Path(dataset), Path(out)
    if out.exists():
        raise CharacterError(f"{out}: exists; give another --out folder")
    for model in (unet, audio_encoder):
        if not Path(model).is_file():
            raise CharacterError(f"{model}: no such model file")
    check_audio_encoder(read_signature(Path(audio_encoder)), Path(audio_encoder))
    check_unet(read_signature(Path(unet)), Path(unet), CropSpec().inner)
    numbers = _frames(dataset)
    height, width = read_frame(dataset / "full_body_img" / "0.jpg").shape[:2]
    boxes = []
    for n in numbers:
        path = dataset / "landmarks" / f"{n}.lms"
        x1, y1, x2, y2 = box_from_landmarks(read_landmarks(path))
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height or x2 - x1 < 8:
            raise CharacterError(f"{path}: its box [{x1}, {y1}, {x2}, {y2}] is outside the {width}x{height} frame")
        boxes.append((x1, y1, x2, y2))
    parsing = dataset / "parsing"
    has_parsing = parsing.is_dir() and any(parsing.glob("*.png"))
    if has_parsing:
        missing = [n for n in numbers if not (parsing / f"{n}.png").is_file()]
        if missing:
            raise CharacterError(f"{parsing / f'{missing[0]}.png'}: missing ({len(missing)} parsing masks missing)")
        check_masks(parsing, numbers, width, height)
    temp = out.with_name(f".{out.name}.importing")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    try:
        encode_template([dataset / "full_body_img" / f"{n}.jpg" for n in numbers], width, height,
                         temp / "template.mp4")
        np.save(temp / "boxes.npy", np.array(boxes, np.int32))
        shutil.copyfile(unet, temp / "model_best.onnx")
        shutil.copyfile(audio_encoder, temp / "audio_encoder.onnx")
        manifest = {"name": name, "fps": FPS, "first_frame": 1 if len(numbers) > 1 else 0,
                    "template": "template.mp4", "boxes": "boxes.npy", "model": "model_best.onnx",
                    "audio_encoder": "audio_encoder.onnx"}
        if has_parsing:
            shutil.copytree(parsing, temp / "protect")
            manifest["protect"] = "protect"
        (temp / MANIFEST).write_text(to_toml(manifest, f"Imported from the SyncTalk_2D dataset {dataset.resolve()}."))
        load_character(temp)  # the models' contracts, the boxes against the template: all checked
        temp.rename(out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return out
