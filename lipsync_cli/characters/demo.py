"""The demo character alice: a drawn cartoon face whose head sways and eyes blink, and its procedural models.

`write_alice(folder)` writes template.mp4, boxes.npy, both ONNX models and character.toml. Everything is
deterministic: the ONNX files and boxes are byte-identical on every run, the video frames are the same
pictures (its bytes depend on the ffmpeg build).
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT, FPS, SECONDS = 1280, 720, 25, 8
FRAMES = FPS * SECONDS
# The lower-face box, relative to the rounded head centre (width 250, height 240); the mouth sits
# MOUTH_DY below the head centre, which puts it at (160, 146.5) of the UNet's 320 patch.
BOX = (-125, -10, 125, 230)
MOUTH_DY = 100
BLINKS = (1.32, 4.08, 6.6)  # on frame times, so that the lids close fully

SKIN, SKIN_SHADE = (170, 200, 240), (150, 180, 225)
HAIR, LIP, LINE = (40, 55, 95), (92, 77, 188), (45, 40, 70)
SHIFT = 4  # cv2 drawing with 1/16-pixel coordinates
S = 1 << SHIFT


def head_centre(i: int) -> tuple[float, float]:
    """The head sways with cosines whose speed is zero at both ends of the template, where ping-pong turns."""
    phase = math.pi * i / (FRAMES - 1)
    return 640 + 28 * math.cos(2 * phase), 330 + 9 * math.cos(3 * phase)


def box(i: int) -> tuple[int, int, int, int]:
    hx, hy = head_centre(i)
    cx, cy = round(hx), round(hy)
    return cx + BOX[0], cy + BOX[1], cx + BOX[2], cy + BOX[3]


def boxes() -> np.ndarray:
    return np.array([box(i) for i in range(FRAMES)], dtype=np.int32)


def _eyelid(i: int) -> float:
    """0 open .. 1 shut: a blink lasts 0.2 s."""
    t = i / FPS
    return max([max(0.0, 1 - abs(t - b) / 0.1) for b in BLINKS] + [0.0])


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x * S)), int(round(y * S))


def _ellipse(img, centre, axes, colour, angle=0.0, start=0, end=360, thickness=-1):
    cv2.ellipse(img, _pt(*centre), (int(axes[0] * S), int(axes[1] * S)), angle, start, end, colour, thickness,
                cv2.LINE_AA, SHIFT)


def _background() -> np.ndarray:
    y = np.linspace(0, 1, HEIGHT)[:, None, None]
    top, bottom = np.array([200, 170, 150]), np.array([130, 100, 90])
    img = (top * (1 - y) + bottom * y) * np.ones((1, WIDTH, 1))
    x = np.linspace(-1, 1, WIDTH)[None, :, None]
    img *= 1 - 0.18 * (x**2)
    return img.astype(np.uint8)


_BACKGROUND: np.ndarray | None = None


def draw_frame(i: int) -> np.ndarray:
    """Template frame i, BGR uint8 720 x 1280."""
    global _BACKGROUND
    if _BACKGROUND is None:
        _BACKGROUND = _background()
    img = _BACKGROUND.copy()
    hx, hy = head_centre(i)
    # shoulders and neck
    _ellipse(img, (hx * 0.3 + 640 * 0.7, 770), (330, 170), (120, 90, 60))
    cv2.rectangle(img, _pt(hx - 55, hy + 120), _pt(hx + 55, hy + 320), SKIN_SHADE, -1, cv2.LINE_AA, SHIFT)
    # hair behind, ears, face
    _ellipse(img, (hx, hy - 25), (178, 205), HAIR)
    for side in (-1, 1):
        _ellipse(img, (hx + side * 148, hy + 5), (22, 36), SKIN_SHADE)
    _ellipse(img, (hx, hy), (150, 190), SKIN)
    # fringe
    _ellipse(img, (hx - 60, hy - 150), (115, 60), HAIR, angle=-18)
    _ellipse(img, (hx + 70, hy - 155), (105, 55), HAIR, angle=20)
    # eyes with blinking lids
    lid = _eyelid(i)
    for side in (-1, 1):
        ex, ey = hx + side * 55, hy - 35
        _ellipse(img, (ex, ey), (27, 17), (250, 250, 250))
        _ellipse(img, (ex + 2, ey + 1), (11, 11), (140, 90, 40))
        _ellipse(img, (ex + 2, ey + 1), (5, 5), (20, 20, 20))
        _ellipse(img, (ex + 6, ey - 3), (2.5, 2.5), (255, 255, 255))
        if lid > 0:
            _ellipse(img, (ex, ey - 17 + 17 * lid), (29, 17 * lid + 1), SKIN)
        _ellipse(img, (ex, ey), (27, 17), LINE, start=180, end=360, thickness=2)
        _ellipse(img, (ex + side * 5, ey - 38), (30, 9), HAIR, start=180, end=360, thickness=5)
        _ellipse(img, (hx + side * 85, hy + 45), (24, 14), (150, 160, 240))  # cheeks
    # nose
    _ellipse(img, (hx, hy + 28), (12, 9), SKIN_SHADE, start=0, end=180, thickness=3)
    # closed mouth
    mx, my = hx, hy + MOUTH_DY
    _ellipse(img, (mx, my), (32, 7), LIP)
    cv2.line(img, _pt(mx - 30, my), _pt(mx + 30, my), LINE, 2, cv2.LINE_AA, SHIFT)
    return img


MANIFEST = """\
# The bundled demo character. Its two models are procedural (drawn by ONNX graphs), not trained:
# see lipsync_cli/models/graphs/alice.py and README.md, "Bring your own character".
name = "alice"
fps = 25
template = "template.mp4"
boxes = "boxes.npy"
model = "model_best.onnx"
audio_encoder = "audio_encoder.onnx"

[crop]
size = 328
border = 4

[input]
channels = ["reference", "masked"]
color = "bgr"
mask = [5, 5, 310, 305]

[audio]
pad_mode = "constant"
window_end = "silence"
"""


def write_models(folder: Path) -> None:
    from lipsync_cli.models.graphs import alice
    from lipsync_cli.models.graphs.builder import save

    save(alice.audio_encoder().model("alice demo audio encoder: loudness in feature 0"), folder / "audio_encoder.onnx")
    save(alice.unet().model("alice demo UNet: draws a mouth opening with feature 0"), folder / "model_best.onnx")


def write_template(path: Path) -> None:
    from lipsync_cli.encoding.ffmpeg import EncodeSettings, VideoWriter

    settings = EncodeSettings(codec="libx264", preset="slow", crf=20, threads=1)
    writer = VideoWriter(path, WIDTH, HEIGHT, Fraction(FPS), None, settings,
                         ("-g", "25", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact"))
    try:
        for i in range(FRAMES):
            writer.write(draw_frame(i))
        writer.finish()
        writer.publish(overwrite=True)
    finally:
        writer.abort()


def write_alice(folder: Path, template: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "character.toml").write_text(MANIFEST)
    np.save(folder / "boxes.npy", boxes())
    write_models(folder)
    if template:
        write_template(folder / "template.mp4")
