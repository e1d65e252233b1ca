"""Small characters made from alice's pieces, for tests."""

from __future__ import annotations

import shutil
import subprocess

import cv2
import numpy as np

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
