"""Faults during work: exit 1 with one line, no temporary file left, nothing overwritten."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
from typer.testing import CliRunner

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.cli.app import app
from lipsync_cli.models.graphs.builder import Graph, save

from .conftest import REPO
from .media import ffmpeg_processes_writing

runner = CliRunner()


def failing_unet(path):
    """Loads with a valid signature, fails inside onnxruntime when run."""
    g = Graph("failing")
    visual = g.input("visual", ["N", 6, 320, 320])
    audio = g.input("audio", ["N", 512])
    # a reshape target that depends on the data, so nothing can see before running that it does not fit
    zero = g.op("Mul", g.op("ReduceSum", audio, keepdims=0), g.const(np.float32(0.0)))
    target = g.op("Cast", g.op("Add", g.const(np.array([-1, 3, 320, 321], np.float32)), zero), to=7)
    g.output(g.op("Reshape", visual, target), "mouth", ["N", 3, 320, 320])
    save(g.model("fails at run time"), path)


def test_model_failing_in_onnxruntime_names_the_model(tmp_path, alice_copy, write_audio):
    failing_unet(alice_copy / "model_best.onnx")
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    result = runner.invoke(app, ["render", str(write_audio(speech_like(0.5), 16000)), "-c", str(alice_copy),
                                 "-o", str(out), "--overwrite", "--device", "cpu"])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if not line.startswith("note:")]
    assert len(lines) == 1 and f"{alice_copy / 'model_best.onnx'}: inference failed" in lines[0], result.stderr
    assert out.read_bytes() == b"keep me"
    assert not list(tmp_path.glob(".*.part"))


def test_ffmpeg_dying_is_reported(tmp_path, write_audio):
    audio = write_audio(speech_like(60.0), 16000, name="long.wav")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "o.mp4").write_bytes(b"old")
    proc = subprocess.Popen([sys.executable, "-m", "lipsync_cli", "render", str(audio), "-c", "alice", "-o",
                             str(out_dir / "o.mp4"), "--overwrite", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    deadline = time.time() + 60
    while time.time() < deadline and not ffmpeg_processes_writing(str(out_dir)):
        time.sleep(0.05)
    time.sleep(0.5)
    for pid in ffmpeg_processes_writing(str(out_dir)):
        os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    err = err.decode()
    assert proc.returncode == 1, err
    lines = [line for line in err.splitlines() if not line.startswith("note:")]  # a first render's one note
    assert len(lines) == 1 and "ffmpeg stopped while encoding" in lines[0], err
    assert sorted(os.listdir(out_dir)) == ["o.mp4"] and (out_dir / "o.mp4").read_bytes() == b"old"
