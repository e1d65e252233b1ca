"""Importing a SyncTalk_2D dataset: boxes from the landmarks, the template, the manifest, protect masks."""

import tomllib

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from lipsync_cli.audio.loading import probe_audio
from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.characters.manifest import load_character
from lipsync_cli.cli.app import app
from lipsync_cli.encoding.yuv import planes
from lipsync_cli.render.pipeline import PipelineOptions, render_frames

from .conftest import ALICE

runner = CliRunner()
FRAMES, W, H = 5, 640, 480


def box_of(n):
    x1, y1 = 200 + 4 * n, 150 + 2 * n
    return x1, y1, x1 + 240, y1 + 240


def make_dataset(root, parsing=True):
    """Frames with known landmarks: points 1, 31 and 52 give the box; the rest are scattered inside it."""
    for sub in ("full_body_img", "landmarks", "parsing"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n in range(FRAMES):
        y, x = np.mgrid[0:H, 0:W]
        image = np.stack([x * 0.3 + 3 * n, y * 0.4 + 5 * n, (x + y) * 0.2], axis=2).astype(np.uint8)
        cv2.imwrite(str(root / "full_body_img" / f"{n}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 98])
        x1, y1, x2, y2 = box_of(n)
        points = rng.uniform([x1, y1], [x2, y2], (110, 2))
        points[1, 0], points[52, 1], points[31, 0] = x1, y1, x2
        (root / "landmarks" / f"{n}.lms").write_text("\n".join(f"{a:.3f} {b:.3f}" for a, b in points) + "\n")
        if parsing:
            mask = np.zeros((H, W, 3), np.uint8)
            mask[y1 + 20 : y1 + 60, x1 + 20 : x1 + 80] = 255  # white: protected
            mask[y1 + 100 : y1 + 140, x1 + 150 : x1 + 200] = (255, 0, 0)  # pure blue: protected
            cv2.imwrite(str(root / "parsing" / f"{n}.png"), mask)
    return root


def run_import(tmp_path, dataset, name="imported"):
    return runner.invoke(app, ["characters", "import", "synctalk2d", str(dataset), "--unet",
                               str(ALICE / "model_best.onnx"), "--audio-encoder", str(ALICE / "audio_encoder.onnx"),
                               "--name", name, "--out", str(tmp_path / name)])


def test_import_gives_boxes_template_manifest_and_renders(tmp_path):
    dataset = make_dataset(tmp_path / "data")
    result = run_import(tmp_path, dataset)
    assert result.exit_code == 0, result.stderr
    folder = tmp_path / "imported"
    manifest = tomllib.loads((folder / "character.toml").read_text())
    assert manifest["name"] == "imported" and manifest["fps"] == 25 and manifest["first_frame"] == 1
    assert manifest["protect"] == "protect"
    character = load_character(folder)
    assert [tuple(b) for b in character.boxes.tolist()] == [box_of(n) for n in range(FRAMES)]
    assert (character.video.width, character.video.height, character.video.frames) == (W, H, FRAMES)
    capture = cv2.VideoCapture(str(folder / "template.mp4"))
    ok, decoded = capture.read()
    original = cv2.imread(str(dataset / "full_body_img" / "0.jpg"))
    error = decoded.astype(float) - original
    psnr = 10 * np.log10(255**2 / (error**2).mean())
    assert ok and psnr > 38, psnr  # visually lossless (the YUV round trip itself costs about a level)
    assert [character.template_index(i) for i in range(10)] == [1, 2, 3, 4, 3, 2, 1, 0, 1, 2]
    shown = runner.invoke(app, ["characters", str(folder)])
    assert shown.exit_code == 0 and "from frame 1" in shown.stdout


def test_protected_pixels_keep_the_template(tmp_path, write_audio, runtime):
    dataset = make_dataset(tmp_path / "data")
    assert run_import(tmp_path, dataset).exit_code == 0
    character = load_character(tmp_path / "imported")
    info = probe_audio(write_audio(speech_like(0.4), 16000))
    with runtime.templates.open(character.template_spec) as template:
        for i, frame in enumerate(render_frames(character, info, PipelineOptions(), runtime)):
            k = character.template_index(i)
            reference = template.frame(k)
            keep = character.protect_mask(k, reference.region)
            x0, y0, x1, y1 = reference.region
            ours, theirs = planes(frame, W)[0][y0:y1, x0:x1], planes(reference.i420, W)[0][y0:y1, x0:x1]
            assert keep.sum() > 3000 and np.array_equal(ours[keep], theirs[keep])
            assert not np.array_equal(ours, theirs)  # the mouth itself was drawn


@pytest.mark.parametrize("damage, expected", [
    ("missing landmarks", "landmarks/2.lms: missing"),
    ("wrong point count", "landmarks/1.lms: 109 points, a SyncTalk_2D landmark file has 110"),
    ("box outside", "landmarks/0.lms: its box"),
    ("missing frame", "full_body_img/3.jpg: missing"),
])
def test_bad_datasets_are_one_line(tmp_path, damage, expected):
    dataset = make_dataset(tmp_path / "data", parsing=False)
    if damage == "missing landmarks":
        (dataset / "landmarks" / "2.lms").unlink()
    elif damage == "wrong point count":
        path = dataset / "landmarks" / "1.lms"
        path.write_text("\n".join(path.read_text().splitlines()[:109]) + "\n")
    elif damage == "box outside":
        path = dataset / "landmarks" / "0.lms"
        lines = path.read_text().splitlines()
        lines[31] = "900.0 10.0"
        path.write_text("\n".join(lines) + "\n")
    else:
        (dataset / "full_body_img" / "3.jpg").unlink()
    result = run_import(tmp_path, dataset)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert not (tmp_path / "imported").exists()
