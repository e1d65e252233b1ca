import os
import re
import tomllib

import numpy as np
import pytest
from typer.testing import CliRunner

from lipsync_cli.characters.manifest import find_character, load_character
from lipsync_cli.cli.app import app
from lipsync_cli.errors import CharacterError, ModelError
from lipsync_cli.models.graphs.builder import Graph, save

from .conftest import ALICE

runner = CliRunner()


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


def test_alice_loads(alice):
    assert alice.name == "alice" and alice.fps == 25 and alice.layout == "per_frame"
    assert (alice.video.width, alice.video.height, alice.video.frames) == (1280, 720, 200)
    assert alice.boxes.shape == (200, 4)
    assert len({tuple(b) for b in alice.boxes.tolist()}) > 20  # the box moves


def test_find_by_name_and_env(tmp_path, alice_copy, monkeypatch):
    renamed = tmp_path / "chars" / "bob"
    renamed.parent.mkdir()
    alice_copy.rename(renamed)
    monkeypatch.setenv("LIPSYNC_CHARACTERS", str(renamed.parent))
    assert find_character("bob") == renamed
    assert find_character("alice").resolve() == ALICE.resolve()
    with pytest.raises(CharacterError, match="nobody: no such character"):
        find_character("nobody")


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


@pytest.mark.parametrize("case", BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_characters_are_refused(alice_copy, case):
    _, breaker, error, message = case
    breaker(alice_copy)
    with pytest.raises(error, match=message) as info:
        load_character(alice_copy)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(alice_copy):
    (alice_copy / "boxes.npy").chmod(0)
    with pytest.raises(CharacterError, match="boxes.npy: cannot be read"):
        load_character(alice_copy)


def test_manifest_is_the_documented_one():
    data = tomllib.loads((ALICE / "character.toml").read_text())
    assert data["crop"] == {"size": 328, "border": 4}
    assert data["input"]["mask"] == [5, 5, 310, 305]


def test_cli_lists_alice_as_ok():
    result = runner.invoke(app, ["characters"])
    assert result.exit_code == 0, result.output
    assert "alice" in result.output and "ok" in result.output and "per_frame" in result.output


def test_cli_details_and_broken(alice_copy):
    result = runner.invoke(app, ["characters", "alice"])
    assert result.exit_code == 0 and "model_best.onnx" in result.output
    np.save(alice_copy / "boxes.npy", np.load(alice_copy / "boxes.npy")[:10])
    result = runner.invoke(app, ["characters", str(alice_copy)])
    assert result.exit_code == 1
    assert "broken" in result.output and "10 boxes for 200 frames" in result.output


def test_cli_lists_a_broken_copy_with_its_problem(tmp_path, alice_copy, monkeypatch):
    alice_copy = alice_copy.rename(tmp_path / "alice_broken")
    (alice_copy / "model_best.onnx").unlink()
    monkeypatch.setenv("LIPSYNC_CHARACTERS", str(tmp_path))
    result = runner.invoke(app, ["characters"])
    flat = re.sub(r"[\s│┃]", "", result.output)  # the table folds long cells
    assert result.exit_code == 0
    assert "model_best.onnx:missing" in flat
