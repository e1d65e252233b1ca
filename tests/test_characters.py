import os
import re
import tomllib

import numpy as np
import pytest
from typer.testing import CliRunner

from lipsync_cli.characters.manifest import find_character, load_character
from lipsync_cli.cli.app import app
from lipsync_cli.errors import CharacterError

from .characters import BROKEN
from .conftest import ALICE

runner = CliRunner()


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


def test_a_mistyped_subcommand_with_help_says_so_in_one_line():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "lipsync_cli", "characters", "imprt", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == ("lipsync: error: No such command 'imprt'. Did you mean 'import'? (see 'lipsync "
                             "characters --help')\n")


@pytest.mark.parametrize(("args", "typo"), [(["imprt", "synctalk2d", "x"], "'import'"), (["shw"], "'show'")])
def test_a_mistyped_subcommand_is_not_a_character(args, typo):
    result = runner.invoke(app, ["characters", *args])
    assert result.exit_code == 2 and f"Did you mean {typo}?" in result.stderr and "no such character" not in \
        result.stderr


def test_a_characters_name_with_help_is_the_show_commands_help():
    result = runner.invoke(app, ["characters", "alice", "--help"])
    assert result.exit_code == 0 and "lipsync characters show" in result.stdout
