"""Importing the seed's model folders: a seed-style config.yaml with models of a fixed batch of 1 and the seed's
tensor names, PNG and JPEG backgrounds numbered from 0 or 1; the characters render, and render as the same
models with a dynamic batch do; every broken part is named."""

import json

import cv2
import numpy as np
import pytest
import soundfile as sf
import yaml
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from lipsync_cli.audio.loading import probe_audio
from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.characters.importers.seed import import_seed
from lipsync_cli.characters.manifest import load_character
from lipsync_cli.cli.app import app
from lipsync_cli.errors import CharacterError, ModelError
from lipsync_cli.models.devices import CPU
from lipsync_cli.render.pipeline import PipelineOptions, render_frames
from lipsync_cli.runtime import Runtime, RuntimeConfig

from .characters import alice_frames
from .conftest import ALICE
from .models import synctalk_unet

runner = CliRunner()
FRAMES = 6


def seed_encoder(batch):
    """mel_spectrogram [batch, 1, 80, 16] -> audio_features [batch, 512], as the seed's encoder is named."""
    w = np.random.default_rng(3).standard_normal((1280, 512)).astype(np.float32) / 64
    g = helper.make_graph(
        [helper.make_node("Reshape", ["mel_spectrogram", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["audio_features"])],
        "seed-encoder", [helper.make_tensor_value_info("mel_spectrogram", TensorProto.FLOAT, [batch, 1, 80, 16])],
        [helper.make_tensor_value_info("audio_features", TensorProto.FLOAT, [batch, 512])],
        [numpy_helper.from_array(np.array([-1, 1280], np.int64), "shape"), numpy_helper.from_array(w, "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def seed_unet(batch):
    """The small SyncTalk_2D-layout UNet with the seed's names: input [batch, 6, 320, 320], audio [batch, 32,
    16, 16]."""
    model = synctalk_unet()
    for node in model.graph.node:
        node.input[:] = ["input" if name == "visual" else name for name in node.input]
    for value in [*model.graph.input, *model.graph.output]:
        if value.name == "visual":
            value.name = "input"
        value.type.tensor_type.shape.dim[0].Clear()
        if isinstance(batch, int):
            value.type.tensor_type.shape.dim[0].dim_value = batch
        else:
            value.type.tensor_type.shape.dim[0].dim_param = batch
    return model


def make_seed(root, batch=1, broken=None):
    """models/config.yaml beside audio_encoder.onnx; model anna with frame_%04d PNGs from 0, bob with frame_%d
    JPEGs from 1."""
    root.mkdir(parents=True)
    (root / "audio_encoder.onnx").write_bytes(seed_encoder(batch).SerializeToString())
    frames = alice_frames(list(range(FRAMES)))
    boxes = np.load(ALICE / "boxes.npy")[:FRAMES].tolist()
    config = {"models_root": "models", "server": {"port": 50051}, "models": {}}
    for model_id, pattern, first in (("anna", "frame_{:04d}.png", 0), ("bob", "frame_{}.jpg", 1)):
        folder = root / "models" / model_id
        (folder / "backgrounds").mkdir(parents=True)
        for j, frame in enumerate(frames):
            cv2.imwrite(str(folder / "backgrounds" / pattern.format(first + j)), frame,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
        (folder / "crop_rects.json").write_text(json.dumps(boxes))
        (folder / "unet.onnx").write_bytes(seed_unet(batch).SerializeToString())
        config["models"][model_id] = {"model_path": f"{model_id}/unet.onnx",
                                      "background_dir": f"{model_id}/backgrounds",
                                      "crop_rects_path": f"{model_id}/crop_rects.json", "num_frames": FRAMES,
                                      "preload": True}
    if broken is not None:
        broken(root, config)
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root / "config.yaml", frames


def test_the_seeds_models_import_as_characters_that_render(tmp_path):
    config, frames = make_seed(tmp_path / "seed")
    result = runner.invoke(app, ["characters", "import", "seed", str(config), "--model", "anna", "--out",
                                 str(tmp_path / "characters")])
    assert result.exit_code == 0, result.output
    assert "imported the seed's model anna into" in result.output
    assert "plays its template forward then backward" in result.output  # what is not carried over, said
    assert "settings of model anna with no meaning here: preload" in result.output
    assert "config sections that are server options here" in result.output and ": server" in result.output
    assert "fixed batch of 1" in result.output
    assert not (tmp_path / "characters" / "bob").exists()

    character = load_character(tmp_path / "characters" / "anna")
    u, e = character.unet_contract, character.encoder_contract
    assert (u.visual, u.audio, u.fixed_batch, character.layout) == ("input", "audio", 1, "synctalk")
    assert (e.input, e.output, e.fixed_batch) == ("mel_spectrogram", "audio_features", 1)
    assert np.array_equal(character.boxes, np.load(ALICE / "boxes.npy")[:FRAMES])
    assert (character.video.width, character.video.height, character.video.frames) == (1280, 720, FRAMES)
    capture = cv2.VideoCapture(str(character.template))
    for frame in frames:  # visually lossless
        ok, decoded = capture.read()
        assert ok and np.abs(decoded.astype(int) - frame.astype(int)).mean() < 2.0
    capture.release()

    audio = tmp_path / "speech.wav"
    sf.write(audio, speech_like(0.5, seed=2), 16000, subtype="PCM_16")
    options = PipelineOptions(device=CPU, batch_size=4, blend="feather")
    with Runtime(RuntimeConfig(devices="cpu")) as runtime:
        fixed = list(render_frames(character, probe_audio(audio), options, runtime))
        dynamic_folder = tmp_path / "dynamic"
        make_seed(dynamic_folder, batch="N")
        (dynamic,) = import_seed(dynamic_folder / "config.yaml", tmp_path / "dynamic-characters", "anna")
        dynamic_character = load_character(dynamic.folder)
        assert dynamic_character.unet_contract.fixed_batch is None
        batched = list(render_frames(dynamic_character, probe_audio(audio), options, runtime))
    assert len(fixed) == len(batched) == 13
    for a, b in zip(fixed, batched, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_every_model_of_the_config_and_jpeg_frames_from_1(tmp_path):
    config, _ = make_seed(tmp_path / "seed")
    imported = import_seed(config, tmp_path / "characters")
    assert [i.id for i in imported] == ["anna", "bob"]
    bob = load_character(tmp_path / "characters" / "bob")
    assert bob.name == "bob" and bob.video.frames == FRAMES


def _drop_frame(root, config):
    (root / "models" / "anna" / "backgrounds" / "frame_0003.png").unlink()


def _short_rects(root, config):
    (root / "models" / "anna" / "crop_rects.json").write_text(json.dumps([[10, 10, 200, 200]] * 2))


def _rect_outside(root, config):
    (root / "models" / "anna" / "crop_rects.json").write_text(json.dumps([[1200, 10, 1400, 200]] * FRAMES))


def _no_encoder(root, config):
    (root / "audio_encoder.onnx").unlink()


def _wrong_unet(root, config):
    (root / "models" / "anna" / "unet.onnx").write_bytes((root / "audio_encoder.onnx").read_bytes())


def _no_background_dir(root, config):
    del config["models"]["anna"]["background_dir"]


BROKEN = {
    "missing frame": (_drop_frame, CharacterError, r"backgrounds: frame 3 is missing \(num_frames is 6\)"),
    "too few rectangles": (_short_rects, CharacterError, r"crop_rects.json: 2 rectangles for 6 frames"),
    "rectangle outside": (_rect_outside, CharacterError, r"rectangle 0 \[1200, 10, 1400, 200\] is not inside the "
                          r"1280x720 frame"),
    "no encoder": (_no_encoder, CharacterError, r"config.yaml: no audio encoder found \(looked for "),
    "not a unet": (_wrong_unet, ModelError, r"unet.onnx: UNet inputs must be visual \[N, 6, 320, 320\]"),
    "no background_dir": (_no_background_dir, CharacterError, r"config.yaml: model anna has no background_dir"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_seed_folder_is_named_and_leaves_nothing(tmp_path, case):
    breaker, error, message = BROKEN[case]
    config, _ = make_seed(tmp_path / "seed", broken=breaker)
    with pytest.raises(error, match=message):
        import_seed(config, tmp_path / "characters", "anna")
    assert not (tmp_path / "characters").exists() or not any((tmp_path / "characters").iterdir())


def test_cli_refusals_are_one_line(tmp_path):
    config, _ = make_seed(tmp_path / "seed")
    unknown = runner.invoke(app, ["characters", "import", "seed", str(config), "--model", "carl"])
    assert unknown.exit_code == 2 and "no model 'carl' (it has anna, bob)" in unknown.output
    not_yaml = tmp_path / "bad.yaml"
    not_yaml.write_text("models: [unclosed\n")
    bad = runner.invoke(app, ["characters", "import", "seed", str(not_yaml)])
    assert bad.exit_code == 2 and "bad.yaml: malformed YAML" in bad.output
    missing = runner.invoke(app, ["characters", "import", "synctalk2d", str(tmp_path)])
    assert missing.exit_code == 2 and "needs --unet, --audio-encoder and --name" in missing.output
