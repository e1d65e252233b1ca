"""alice's procedural models keep their promises, and the generator reproduces the committed files."""

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from lipsync_cli.characters.demo import FRAMES, boxes, draw_frame, write_alice
from lipsync_cli.models.graphs.alice import MouthGeometry

from .conftest import ALICE

pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def encoder():
    return ort.InferenceSession(str(ALICE / "audio_encoder.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def unet():
    return ort.InferenceSession(str(ALICE / "model_best.onnx"), providers=["CPUExecutionProvider"])


def test_contracts_and_dynamic_batch(encoder, unet):
    assert encoder.get_inputs()[0].shape[1:] == [1, 80, 16] and encoder.get_outputs()[0].shape[1:] == [512]
    names = {i.name: i.shape for i in unet.get_inputs()}
    assert names["visual"][1:] == [6, 320, 320] and names["audio"][1:] == [512]
    for n in (1, 3):
        out = encoder.run(None, {"mel": np.full((n, 1, 80, 16), -4.0, np.float32)})[0]
        assert out.shape == (n, 512)


def test_loud_window_has_larger_loudness(encoder):
    silent = np.full((1, 1, 80, 16), -4.0, np.float32)
    loud = np.full((1, 1, 80, 16), 1.0, np.float32)
    f_silent, f_loud = encoder.run(None, {"mel": np.concatenate([silent, loud])})[0][:, 0]
    assert f_silent == 0.0 and f_loud > 0.5


def reference_crop():
    from lipsync_cli.frames.crops import inner_crop
    from lipsync_cli.specs import CropSpec

    return inner_crop(draw_frame(0), boxes()[0], CropSpec()).astype(np.float32) / 255


def run_unet(unet, loudness):
    ref = reference_crop().transpose(2, 0, 1)
    visual = np.concatenate([ref, ref])[None].astype(np.float32)
    audio = np.zeros((1, 512), np.float32)
    audio[0, 0] = loudness
    return unet.run(None, {"visual": visual, "audio": audio})[0][0], ref


def dark_pixels(patch):
    g = MouthGeometry()
    area = patch[:, int(g.cy) - 60 : int(g.cy) + 60, int(g.cx) - 60 : int(g.cx) + 60]
    return int((area.max(axis=0) < 0.3).sum())


def test_mouth_opens_with_loudness(unet):
    counts = [dark_pixels(run_unet(unet, loud)[0]) for loud in (0.0, 0.35, 0.5, 0.9)]
    assert counts[0] < counts[1] < counts[2] <= counts[3]
    assert counts[3] > 1500


def test_silence_leaves_the_reference_outside_the_lips(unet):
    out, ref = run_unet(unet, 0.0)
    g = MouthGeometry()
    v, u = np.mgrid[0:320, 0:320]
    r = np.sqrt(((u - g.cx) / g.lip_half_width) ** 2 + ((v - g.cy) / g.lip_half_height) ** 2)
    outside = r > 1.3
    assert np.abs(out[:, outside] - ref[:, outside]).max() < 1e-6
    assert np.abs(out[:, r < 0.8] - ref[:, r < 0.8]).max() > 0.1  # the lips are drawn


def test_generator_reproduces_the_committed_files(tmp_path):
    write_alice(tmp_path, template=False)
    for name in ("audio_encoder.onnx", "model_best.onnx", "boxes.npy", "character.toml"):
        assert (tmp_path / name).read_bytes() == (ALICE / name).read_bytes(), name


def test_template_frames_are_the_drawn_frames():
    capture = cv2.VideoCapture(str(ALICE / "template.mp4"))
    wanted = {0, 33, 101, FRAMES - 1}
    for i in range(FRAMES):
        ok, frame = capture.read()
        assert ok
        if i in wanted:
            mse = np.mean((frame.astype(float) - draw_frame(i).astype(float)) ** 2)
            assert 10 * np.log10(255**2 / mse) > 35, i
    assert not capture.read()[0]
    assert (ALICE / "template.mp4").stat().st_size < 2_000_000


def test_blinks_close_the_eyes_and_the_sway_eases_at_both_ends():
    from lipsync_cli.characters.demo import BLINKS, FPS, head_centre

    for t in BLINKS:
        frame = draw_frame(round(t * FPS))
        hx, hy = head_centre(round(t * FPS))
        for side in (-1, 1):
            ex, ey = int(hx + side * 55), int(hy - 35)
            eye = frame[ey - 12 : ey + 12, ex - 20 : ex + 20]
            assert (eye.min(axis=2) > 240).sum() == 0  # no white of the eye shows: the lid is shut
    steps = [abs(head_centre(i + 1)[0] - head_centre(i)[0]) for i in range(FRAMES - 1)]
    assert steps[0] < 0.1 * max(steps) and steps[-1] < 0.1 * max(steps)  # no bounce where ping-pong turns
