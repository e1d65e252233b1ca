"""The shipped pre- and post-processing graphs: reproducible from the script, and on the CPU provider equal
to the numpy path (the input exactly; the composited region within one level)."""

import subprocess
import sys

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from lipsync_cli.audio.loading import probe_audio
from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.characters.manifest import load_character
from lipsync_cli.compositing.blend import blend_into, feather_mask, to_uint8
from lipsync_cli.encoding.yuv import bgr_to_i420, planes
from lipsync_cli.errors import InferenceError
from lipsync_cli.frames.crops import visual_input
from lipsync_cli.models.device_chain import chain_supports
from lipsync_cli.models.devices import CPU
from lipsync_cli.models.processing import COMPOSITE, PREPARE, composite_inputs, prepare_inputs
from lipsync_cli.render.pipeline import PipelineOptions, render_frames
from lipsync_cli.runtime import Runtime, RuntimeConfig
from lipsync_cli.specs import CropSpec, InputSpec

from .characters import make_character
from .conftest import ALICE, REPO
from .models import character_with, float16, load, nan_output

pytest.importorskip("onnx")


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_the_script_reproduces_the_shipped_graphs(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "make_processing_graphs.py"), str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for path in (PREPARE, COMPOSITE):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.mark.parametrize("color", ["bgr", "rgb"])
@pytest.mark.parametrize("order", [("reference", "masked"), ("masked", "reference")])
def test_prepare_equals_the_numpy_input(color, order):
    spec = InputSpec(channels=order, color=color, mask=(5, 7, 300, 290))
    rng = np.random.default_rng(3)
    crops = rng.integers(0, 256, (3, 320, 320, 3), np.uint8)
    visual = session(PREPARE).run(None, {"crops": crops, **prepare_inputs(spec, 320)})[0]
    expected = np.stack([visual_input(c, spec) for c in crops])
    assert visual.shape == (3, 6, 320, 320) and np.array_equal(visual, expected)


CASES = [  # region (h, w), box in the region: an ordinary box, odd sizes, boxes touching the region's edges
    ((242, 252), (1, 1, 251, 241)),
    ((212, 176), (0, 0, 173, 211)),
    ((390, 402), (1, 0, 402, 389)),
    ((330, 330), (0, 1, 329, 328)),
]


@pytest.mark.parametrize("blend", ["feather", "hard"])
@pytest.mark.parametrize("color", ["bgr", "rgb"])
@pytest.mark.parametrize("shape, box", CASES)
def test_composite_equals_the_numpy_path_within_a_level(blend, color, shape, box):
    crop, spec = CropSpec(), InputSpec(color=color)
    rng = np.random.default_rng(shape[0])
    patches = np.stack([cv2.GaussianBlur(rng.random((320, 320, 3), np.float32), (7, 7), 0).transpose(2, 0, 1)
                        for _ in range(2)]) * 1.1 - 0.05
    region = cv2.GaussianBlur(rng.integers(0, 256, (*shape, 3), np.uint8), (5, 5), 0)
    expected_region = region.copy()
    x1, y1, x2, y2 = box
    blend_into(expected_region[y1:y2, x1:x2], to_uint8(patches[1], color), crop, blend)
    expected = planes(bgr_to_i420(expected_region), shape[1])
    feeds = {"patches": patches.astype(np.float32), "index": np.array([1], np.int64), "region": region,
             "box": np.array(box, np.int64),
             **composite_inputs(spec, crop, feather_mask(crop.inner, blend), blend == "hard")}
    *got, nonfinite = session(COMPOSITE).run(None, feeds)
    assert nonfinite.tolist() == [0]
    for plane, want in zip(got, expected, strict=True):
        assert plane.dtype == np.uint8 and plane.shape == want.shape
        assert np.abs(plane.astype(int) - want).max() <= 1
        assert (plane != want).mean() < 0.005
    assert not np.array_equal(got[0], planes(bgr_to_i420(region), shape[1])[0])  # the patch is in it


def test_composite_counts_the_patch_nonfinite_values():
    crop, spec = CropSpec(), InputSpec()
    patches = np.full((2, 3, 320, 320), 0.5, np.float32)
    patches[1, 0, 5, 5:9] = np.nan
    patches[1, 2, 0, 0] = np.inf
    patches[0, 1, 0, 0] = np.nan  # another frame's
    feeds = {"patches": patches, "index": np.array([1], np.int64), "region": np.zeros((250, 250, 3), np.uint8),
             "box": np.array([0, 0, 250, 250], np.int64),
             **composite_inputs(spec, crop, feather_mask(crop.inner, "feather"), False)}
    assert session(COMPOSITE).run(["nonfinite"], feeds)[0].tolist() == [5]


def render_with(alice_like, audio, blend, device_processing):

    config = RuntimeConfig(devices="cpu", device_processing=device_processing)
    with Runtime(config) as runtime:
        assert runtime.processes_on(CPU) is device_processing
        frames = render_frames(alice_like, probe_audio(audio), PipelineOptions(device=CPU, batch_size=4, blend=blend),
                               runtime)
        try:
            return [f.copy() for f in frames]
        finally:
            frames.close()


@pytest.mark.parametrize("blend", ["feather", "hard", "match"])
def test_renders_through_the_graphs_equal_the_numpy_path(alice, write_audio, blend):

    audio = write_audio(speech_like(0.5), 16000)  # 13 frames: batches of 4 and a padded last one
    host, device = render_with(alice, audio, blend, False), render_with(alice, audio, blend, True)
    assert len(host) == len(device) == 13
    for a, b in zip(host, device, strict=True):
        assert np.abs(a.astype(int) - b).max() <= 1 and (a != b).mean() < 1e-4
    if blend == "match":  # the colour match runs on the host: only the input was made by the graph
        assert all(np.array_equal(a, b) for a, b in zip(host, device, strict=True))


def test_boxes_at_the_frame_edge_through_the_graphs(tmp_path, write_audio):
    alice = load_character(ALICE)
    x2, y2 = (int(v) for v in alice.boxes[:3, 2:].max(axis=0))
    folder, _ = make_character(tmp_path / "edge", [0, 1, 2], crop=(y2, x2))  # odd sides, boxes touch them
    character = load_character(folder)
    assert (character.video.width, character.video.height) == (x2, y2) and x2 % 2 == 1
    audio = write_audio(speech_like(0.3), 16000)
    for blend in ("feather", "hard"):
        host, device = render_with(character, audio, blend, False), render_with(character, audio, blend, True)
        assert len(host) == len(device) == 8
        for a, b in zip(host, device, strict=True):
            assert np.abs(a.astype(int) - b).max() <= 1 and (a != b).mean() < 1e-4


def test_a_nan_patch_is_caught_on_the_device_path(tmp_path, write_audio):
    character = load_character(character_with(tmp_path, "nan", unet=nan_output(load("unet"))))
    audio = write_audio(speech_like(0.3), 16000)
    for blend in ("feather", "match"):
        with pytest.raises(InferenceError, match=r"model_best.onnx: the UNet produced NaN.* at frame 0"):
            render_with(character, audio, blend, True)


def test_float16_models_keep_the_host_path(tmp_path, alice):
    assert chain_supports(alice.unet_contract)
    half = load_character(character_with(tmp_path, "half", unet=float16(load("unet"))))
    assert not chain_supports(half.unet_contract)
