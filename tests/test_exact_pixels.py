"""The CPU work per frame, cut down without changing the picture: untouched pixels are the template's decoded
ones, the UNet sees what OpenCV reads, the resize-based composite equals the warp it replaced, the faster
colour match equals the plain formula, and threads do not change a frame."""

import threading

import cv2
import numpy as np
import pytest

from lipsync_cli.audio.loading import probe_audio
from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.compositing.blend import box_alpha, feather_mask, place, to_uint8
from lipsync_cli.compositing.color_match import GAIN_LIMITS, ColorMatcher, ring_mask
from lipsync_cli.frames.crops import inner_crop
from lipsync_cli.frames.decode import YuvDecoder
from lipsync_cli.models.devices import CPU, Device
from lipsync_cli.render.cores import share_cores
from lipsync_cli.render.pipeline import PipelineOptions, render_frames
from lipsync_cli.specs import CropSpec
from lipsync_cli.stages import ordered_map

from .characters import make_character


def decoded_template(character, count):
    decoder = YuvDecoder(character.template, character.video.width, character.video.height)
    try:
        return [decoder.read() for _ in range(count)]
    finally:
        decoder.close()


def rendered(character, audio, runtime, **options):
    frames = render_frames(character, probe_audio(audio), PipelineOptions(device=CPU, batch_size=4, **options),
                           runtime)
    try:
        return [f.copy() for f in frames]
    finally:
        frames.close()


def changed_masks(character, k, blend):
    """Where the patch may change frame k: luma pixels, and chroma 2x2 blocks holding one."""
    x1, y1, x2, y2 = (int(v) for v in character.boxes[k])
    h, w = character.video.height, character.video.width
    luma = np.zeros((h, w), bool)
    luma[y1:y2, x1:x2] = box_alpha(x2 - x1, y2 - y1, character.crop, blend)[2]
    return luma, luma.reshape(h // 2, 2, w // 2, 2).any(axis=(1, 3))


@pytest.mark.parametrize("blend", ["feather", "hard"])
def test_pixels_the_patch_leaves_alone_are_the_decoded_template_exactly(alice, runtime, write_audio, blend):
    audio = write_audio(speech_like(0.4), 16000)
    frames = rendered(alice, audio, runtime, blend=blend)
    template = decoded_template(alice, len(frames))
    h, w = alice.video.height, alice.video.width
    for k, (out, (i420, _)) in enumerate(zip(frames, template, strict=True)):
        luma, blocks = changed_masks(alice, k, blend)
        assert np.array_equal(out[:h][~luma], i420[:h][~luma]), k
        u_out, u_in = out[h : h * 5 // 4].reshape(h // 2, w // 2), i420[h : h * 5 // 4].reshape(h // 2, w // 2)
        assert np.array_equal(u_out[~blocks], u_in[~blocks]), k
        assert not np.array_equal(out[:h][luma], i420[:h][luma])  # the mouth did change: the check can fail


def test_the_unet_crop_is_what_opencv_reads(alice, runtime):
    capture = cv2.VideoCapture(str(alice.template))
    with runtime.templates.open(alice.template_spec) as template:
        for k in range(6):
            ok, bgr = capture.read()
            assert ok
            assert np.array_equal(template.frame(k).crop, inner_crop(bgr, alice.boxes[k], alice.crop)), k
    capture.release()


def test_odd_sized_templates_decode_padded_with_black(tmp_path):
    folder, frames = make_character(tmp_path / "odd", [0, 1], crop=(359, 641))
    decoder = YuvDecoder(folder / "template.mkv", 641, 359)
    i420, bgr = decoder.read()
    decoder.close()
    assert i420.shape == (360 * 3 // 2, 642) and bgr.shape == (360, 642, 3)
    assert np.abs(bgr[:359, :641].astype(int) - frames[0]).mean() < 2  # FFV1 BGR through yuv420p
    assert (i420[359] == 16).all() and (i420[:360, 641] == 16).all()  # black, limited range


def warped(patch, w, h, crop):
    """The composite's former placement: a cubic warp by the inverse of the crop's resize."""
    sx, sy = w / crop.size, h / crop.size
    matrix = np.array([[sx, 0.0, (crop.border + 0.5) * sx - 0.5], [0.0, sy, (crop.border + 0.5) * sy - 0.5]])
    return cv2.warpAffine(patch, matrix, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE), matrix


@pytest.mark.parametrize("w, h", [(250, 240), (173, 211), (401, 389), (329, 327)])
def test_padded_resize_places_the_patch_as_the_warp_did(w, h):
    crop = CropSpec()
    rng = np.random.default_rng(w)
    patch = cv2.GaussianBlur(rng.integers(0, 256, (crop.inner, crop.inner, 3), np.uint8), (5, 5), 0)
    reference, matrix = warped(patch, w, h, crop)
    assert np.abs(place(patch, w, h, crop).astype(int) - reference).max() <= 1
    alpha = cv2.warpAffine(feather_mask(crop.inner, "feather"), matrix, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    assert np.abs(box_alpha(w, h, crop, "feather")[0] - alpha).max() < 1e-4


def plain_match(patch, reference, state=None, smoothing=0.25):
    """The colour match's formula with numpy's statistics."""
    def lab(bgr):
        return cv2.cvtColor(bgr.astype(np.float32) / 255, cv2.COLOR_BGR2LAB)

    ring = ring_mask(patch.shape[0])
    p, t = lab(patch), lab(reference)
    gain = np.clip((t[ring].std(axis=0) + 1e-3) / (p[ring].std(axis=0) + 1e-3), *GAIN_LIMITS)
    params = np.concatenate([p[ring].mean(axis=0), t[ring].mean(axis=0), gain])
    state = params if state is None else (1 - smoothing) * state + smoothing * params
    corrected = ((p - state[:3]) * state[6:] + state[3:6]).astype(np.float32)
    bgr = cv2.cvtColor(corrected, cv2.COLOR_LAB2BGR)
    return np.clip(np.rint(np.clip(bgr, 0, 1) * 255), 0, 255).astype(np.uint8), state


def test_colour_match_equals_the_plain_formula_within_a_level():
    rng = np.random.default_rng(5)
    matcher, state = ColorMatcher(), None
    for _ in range(3):
        patch = cv2.GaussianBlur(rng.integers(0, 256, (320, 320, 3), np.uint8), (9, 9), 0)
        reference = cv2.GaussianBlur(rng.integers(40, 200, (320, 320, 3), np.uint8), (9, 9), 0)
        expected, state = plain_match(patch, reference, state)
        got = matcher(patch, reference)
        assert np.abs(got.astype(int) - expected).max() <= 1
        assert (got != expected).mean() < 0.01


def test_composite_threads_do_not_change_a_frame(alice, runtime, write_audio):
    audio = write_audio(speech_like(0.6), 16000)
    one = rendered(alice, audio, runtime, composite_threads=1)
    three = rendered(alice, audio, runtime, composite_threads=3)
    assert len(one) == len(three) == 15
    assert all(np.array_equal(a, b) for a, b in zip(one, three, strict=True))


def test_ordered_map_keeps_order_and_raises_where_the_item_failed():
    from concurrent.futures import ThreadPoolExecutor

    seen = set()

    def slow_square(x):
        seen.add(threading.current_thread().name)
        if x == 7:
            raise ValueError("seven")
        threading.Event().wait(0.01 * (x % 3))
        return x * x

    with ThreadPoolExecutor(3, thread_name_prefix="t") as pool:
        assert list(ordered_map(slow_square, range(7), pool, 4)) == [x * x for x in range(7)]
        results = ordered_map(slow_square, range(10), pool, 4)
        assert [next(results) for _ in range(7)] == [x * x for x in range(7)]
        with pytest.raises(ValueError, match="seven"):
            next(results)
    assert len(seen) > 1


def test_each_render_gets_its_share_of_the_cores():
    gpu = Device("cuda", 0)
    assert (share_cores(CPU, 2).composite, share_cores(CPU, 2).x264) == (1, 0)  # x264: ffmpeg's own choice
    assert share_cores(CPU, 16).composite == 2
    one, four = share_cores(gpu, 16, 1), share_cores(gpu, 16, 4)
    assert (one.composite, one.x264) == (4, 11)
    assert (four.composite, four.x264) == (1, 2)
    assert share_cores(gpu, 2, 8).x264 >= 1 and share_cores(gpu, 2, 8).composite >= 1


@pytest.mark.parametrize("color", ["bgr", "rgb"])
def test_patch_to_uint8_rounds_half_to_even_and_saturates(color):
    rng = np.random.default_rng(9)
    patch = (rng.random((3, 17, 23)) * 1.4 - 0.2).astype(np.float32)
    patch[0, 0, :4] = np.array([0.5, 1.5, 2.5, 254.5], np.float32) / 255  # exact halves
    expected = np.clip(np.rint(patch.astype(np.float64) * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    if color == "rgb":
        expected = expected[:, :, ::-1]
    got = to_uint8(patch, color)
    assert np.abs(got.astype(int) - expected).max() <= 1 and (got != expected).mean() < 0.01
    assert got[0, 0, 0 if color == "bgr" else 2] == 0 and got.min() == 0 and got.max() == 255
