"""Help that reads well: plain names, the choices of an option, an example at the end of every command's help."""

import re

import pytest
from typer.testing import CliRunner

from lipsync_cli.cli.app import app

runner = CliRunner()
COMMANDS = [[], ["render"], ["batch"], ["bench"], ["validate-mel"], ["characters", "show"], ["characters", "import"],
            ["cache"], ["cache", "clear"], ["doctor"], ["inspect"]]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) or "lipsync" for c in COMMANDS])
def test_help_has_plain_names_and_ends_with_an_example(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert not re.search(r"<(bool|str|int|float|path|list\[)", text), text
    assert not re.search(r"\{[a-z_]+\}\.\.\.", text.splitlines()[0])  # Typer's {audio}... in the usage line
    last = [line.strip() for line in text.strip().splitlines()][-1]
    assert last.startswith("lipsync ") and "Example:" in text


def test_choices_are_shown():
    text = runner.invoke(app, ["render", "--help"]).stdout
    for choices in ("--blend match|feather|hard", "--codec libx264|h264_nvenc", "--device auto|cpu|cuda|cuda:N",
                    "--eviction lfu|lru", "veryfast"):
        assert choices in text, choices
    assert text.splitlines()[0] == "Usage: lipsync render [OPTIONS] AUDIO..."


def test_the_cpu_note_is_short_once_and_names_the_fix(write_audio, tmp_path):
    from lipsync_cli.models.devices import cuda_unavailable_reason

    if cuda_unavailable_reason() is None:
        pytest.skip("this machine has a usable CUDA")
    audio = write_audio(__import__("numpy").zeros(8000, "float32"), 16000)
    both = runner.invoke(app, ["render", str(audio), str(audio), "-c", "alice", "--output-dir", str(tmp_path / "o"),
                               "--name", "{index}.mp4"])
    notes = [line for line in both.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "pip install 'onnxruntime-gpu[cuda,cudnn]'" in notes[0] and len(notes[0]) < 160
    for quiet in (["--device", "cpu"], ["-q"]):
        result = runner.invoke(app, ["render", str(audio), "-c", "alice", "-o", str(tmp_path / "q.mp4"),
                                     "--overwrite", *quiet])
        assert result.exit_code == 0 and "note:" not in result.stderr
