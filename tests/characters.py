"""Small characters made from alice's pieces, for tests."""

from __future__ import annotations

import os
import shutil
import subprocess

import cv2
import numpy as np

from lipsync_cli.errors import CharacterError, ModelError
from lipsync_cli.models.graphs.builder import Graph, save

from .conftest import ALICE
from .media import FFMPEG


def alice_frames(indices):
    capture = cv2.VideoCapture(str(ALICE / "template.mp4"))
    frames = []
    for i in range(max(indices) + 1):
        ok, frame = capture.read()
        assert ok
        if i in indices:
            frames.append(frame)
    return [frames[sorted(indices).index(i)] for i in indices]


def make_character(folder, indices, crop=None, container="mkv"):
    """A copy of alice whose template is alice's frames `indices` (optionally cropped to [h, w]),
    stored losslessly (FFV1) so that any size, odd ones too, is kept."""
    folder.mkdir(parents=True)
    for name in ("audio_encoder.onnx", "model_best.onnx"):
        shutil.copy(ALICE / name, folder / name)
    frames = alice_frames(indices)
    if crop:
        frames = [f[: crop[0], : crop[1]] for f in frames]
    h, w = frames[0].shape[:2]
    subprocess.run([FFMPEG, "-v", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-r", "25",
                    "-i", "-", "-c:v", "ffv1", str(folder / f"template.{container}")],
                   input=b"".join(np.ascontiguousarray(f).tobytes() for f in frames), check=True)
    np.save(folder / "boxes.npy", np.load(ALICE / "boxes.npy")[list(indices)])
    manifest = (ALICE / "character.toml").read_text().replace('"template.mp4"', f'"template.{container}"')
    (folder / "character.toml").write_text(manifest.replace('name = "alice"', f'name = "{folder.name}"'))
    return folder, frames


def edit_manifest(folder, old, new):
    path = folder / "character.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def wrong_shape_encoder(path):
    g = Graph("wrong")
    x = g.input("mel", ["N", 1, 80, 20])
    g.output(g.op("Reshape", x, g.const(np.array([-1, 1600], np.int64))), "features", ["N", 1600])
    save(g.model("wrong"), path)


# Broken copies of alice: (case, how to break her, the error, the message)
BROKEN = [
    ("no manifest", lambda d: (d / "character.toml").unlink(), CharacterError, "character.toml: missing"),
    ("malformed toml", lambda d: (d / "character.toml").write_text("name = [unclosed\n"), CharacterError,
     "malformed TOML"),
    ("unknown key", lambda d: edit_manifest(d, "fps = 25", "fps = 25\ncolour = 1"), CharacterError,
     "unknown key.*colour"),
    ("unknown section key", lambda d: edit_manifest(d, "border = 4", "border = 4\nzoom = 2"), CharacterError,
     "crop.zoom"),
    ("missing template", lambda d: (d / "template.mp4").unlink(), CharacterError, "template.mp4: missing"),
    ("missing model", lambda d: (d / "model_best.onnx").unlink(), CharacterError, "model_best.onnx: missing"),
    ("template not a video", lambda d: (d / "template.mp4").write_bytes(b"not a video" * 100), CharacterError,
     "template.mp4"),
    ("boxes too few", lambda d: np.save(d / "boxes.npy", np.load(d / "boxes.npy")[:-5]), CharacterError,
     "195 boxes for 200 frames"),
    ("box outside frame", lambda d: np.save(d / "boxes.npy", np.load(d / "boxes.npy") + [1000, 0, 1000, 0]),
     CharacterError, "outside the 1280x720 frame"),
    ("boxes wrong shape", lambda d: np.save(d / "boxes.npy", np.zeros((200, 3))), CharacterError, r"\[frames, 4\]"),
    ("bad color", lambda d: edit_manifest(d, 'color = "bgr"', 'color = "yuv"'), CharacterError, "input.color"),
    ("bad pad mode", lambda d: edit_manifest(d, 'pad_mode = "constant"', 'pad_mode = "edge"'), CharacterError,
     "pad_mode"),
    ("corrupt onnx", lambda d: (d / "audio_encoder.onnx").write_bytes(os.urandom(3000)), ModelError,
     "audio_encoder.onnx: not a loadable ONNX model"),
    ("encoder wrong shape", lambda d: wrong_shape_encoder(d / "audio_encoder.onnx"), ModelError,
     r"audio encoder input must be one \[N, 1, 80, 16\]"),
    ("unet is an encoder", lambda d: (d / "model_best.onnx").write_bytes((d / "audio_encoder.onnx").read_bytes()),
     ModelError, "UNet inputs must be"),
    ("mask outside the crop", lambda d: edit_manifest(d, "border = 4", "border = 8"), CharacterError,
     r"input.mask \[5, 5, 310, 305\] must be x, y, w, h inside 312x312"),
    ("crop does not fit the unet",
     lambda d: (edit_manifest(d, "border = 4", "border = 8"), edit_manifest(d, "310, 305", "300, 300")), ModelError,
     r"visual \[N, 6, 312, 312\]"),
]
