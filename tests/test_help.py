"""Help that reads well: plain names, the choices of an option, an example at the end of every command's help."""

import re

import pytest
from typer.testing import CliRunner

from lipsync_cli.cli.app import app

runner = CliRunner()
COMMANDS = [[], ["render"], ["batch"], ["bench"], ["validate-mel"], ["characters", "show"], ["characters", "import"],
            ["characters", "optimize"], ["cache"], ["cache", "clear"], ["doctor"], ["inspect"]]


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
    for choices in ("--blend match|feather|hard", "--codec libx264|h264_nvenc",
                    "--device auto|cpu|cuda|cuda:N|openvino", "--eviction lfu|lru", "veryfast"):
        assert choices in text, choices
    assert text.splitlines()[0] == "Usage: lipsync render [OPTIONS] AUDIO..."


def test_no_arguments_print_the_help():
    import subprocess
    import sys

    bare = subprocess.run([sys.executable, "-m", "lipsync_cli"], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 0 and bare.stderr == ""
    lines = bare.stdout.splitlines()
    assert lines[0] == "Usage: lipsync [OPTIONS] COMMAND [ARGS]..." and "Commands:" in lines
    assert lines[-1].strip() == "lipsync COMMAND --help"


def gpu_notes(stderr):
    return [line for line in stderr.splitlines() if line.startswith("note:") and "GPU" in line]


def test_the_gpu_note_is_short_once_and_names_the_fix(write_audio, tmp_path):
    from lipsync_cli.models.devices import cuda_device_count, cuda_unavailable_reason

    if cuda_device_count() == 0 or cuda_unavailable_reason() is None:
        pytest.skip("needs an NVIDIA GPU that CUDA cannot reach")
    audio = write_audio(__import__("numpy").zeros(8000, "float32"), 16000)
    both = runner.invoke(app, ["render", str(audio), str(audio), "-c", "alice", "--output-dir", str(tmp_path / "o"),
                               "--name", "{index}.mp4"])
    notes = gpu_notes(both.stderr)
    assert len(notes) == 1 and "pip install 'onnxruntime-gpu[cuda,cudnn]'" in notes[0] and len(notes[0]) < 160
    for quiet in (["--device", "cpu"], ["-q"]):
        result = runner.invoke(app, ["render", str(audio), "-c", "alice", "-o", str(tmp_path / "q.mp4"),
                                     "--overwrite", *quiet])
        assert result.exit_code == 0 and not gpu_notes(result.stderr)


def test_without_an_nvidia_gpu_renders_say_nothing_of_gpus(write_audio, tmp_path):
    from lipsync_cli.models.devices import cuda_device_count

    if cuda_device_count() > 0:
        pytest.skip("this machine has an NVIDIA GPU")
    audio = write_audio(__import__("numpy").zeros(8000, "float32"), 16000)
    result = runner.invoke(app, ["render", str(audio), "-c", "alice", "-o", str(tmp_path / "a.mp4")])
    assert result.exit_code == 0 and "GPU" not in result.stderr and "onnxruntime-gpu" not in result.stderr
    cuda = runner.invoke(app, ["render", str(audio), "-c", "alice", "-o", str(tmp_path / "b.mp4"), "--device", "cuda"])
    assert cuda.exit_code == 2
    assert cuda.stderr == "lipsync: error: cuda:0: no NVIDIA GPU found on this machine (--device)\n"
    spread = runner.invoke(app, ["render", str(audio), "-c", "alice", "--devices", "cuda:0", "--dry-run"])
    assert spread.exit_code == 2 and "cuda:0: no NVIDIA GPU found on this machine (--devices)" in spread.stderr


def test_a_gpu_that_cuda_cannot_reach_gets_the_exact_install_command(capsys):
    from lipsync_cli.cli.common import print_note
    from lipsync_cli.models.devices import cuda_unavailable_reason
    from lipsync_cli.runtime import Runtime

    if cuda_unavailable_reason() is None:
        pytest.skip("this machine has a usable CUDA")
    with Runtime(gpu_count=lambda: 1) as runtime:  # one GPU, as the driver would report it
        devices, notice = runtime.devices()
    assert [str(d) for d in devices] == ["cpu"] and notice is not None
    print_note(notice)
    printed = capsys.readouterr().err
    assert printed.startswith("note: running on the CPU: the GPU cannot be used (")
    assert "to use it: pip install 'onnxruntime-gpu[cuda,cudnn]')" in printed
