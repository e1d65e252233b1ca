"""Models as users export them (float16) and models that break their contract at run time (wrong shapes,
NaN, exceptions): one line naming the model, exit 1, no abort, no stage thread left, nothing published."""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from lipsync_cli.audio.loading import probe_audio
from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.characters.manifest import load_character
from lipsync_cli.cli.app import app
from lipsync_cli.errors import InferenceError
from lipsync_cli.models.sessions import SessionMaker
from lipsync_cli.render import RenderJob, RenderOptions, execute, plan
from lipsync_cli.render.pipeline import PipelineOptions, render_frames
from lipsync_cli.runtime import Runtime, RuntimeConfig

from .models import character_with, float16, int8_encoder, load, nan_output, runtime_sliced

pytest.importorskip("onnx")
runner = CliRunner()


def render(audio, character, out, *extra):
    return runner.invoke(app, ["render", str(audio), "-c", str(character), "-o", str(out), "--device", "cpu",
                               *extra])


@pytest.mark.parametrize("keep_io_types", [False, True], ids=["float16 io", "float32 io"])
def test_float16_models_render_like_float32(tmp_path, write_audio, keep_io_types, runtime, alice):
    folder = character_with(tmp_path, encoder=float16(load("encoder"), keep_io_types),
                            unet=float16(load("unet"), keep_io_types))
    audio = write_audio(speech_like(0.6, seed=3), 16000)
    assert render(audio, folder, tmp_path / "half.mp4").exit_code == 0
    info = probe_audio(audio)  # the frames before encoding: x264 turns small differences into others
    half = list(render_frames(load_character(folder), info, PipelineOptions(), runtime))
    full = list(render_frames(alice, info, PipelineOptions(), runtime))
    assert len(half) == len(full) == 15
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(half, full, strict=True)) <= 2
    shown = runner.invoke(app, ["characters", str(folder)])
    assert ("float32" if keep_io_types else "float16") in shown.stdout


def test_other_element_types_are_refused_before_work(tmp_path, write_audio):
    folder = character_with(tmp_path, encoder=int8_encoder())
    result = render(write_audio(speech_like(0.3), 16000), folder, tmp_path / "x.mp4")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "audio_encoder.onnx: audio encoder input tensor 'mel' is int8" in result.stderr


CASES = {
    "encoder output shape": (
        dict(encoder=lambda: runtime_sliced(load("encoder"), {1: 256})),
        "audio_encoder.onnx: the audio encoder declares its output [N, 512] but returned [4, 256]"),
    "UNet output shape": (
        dict(unet=lambda: runtime_sliced(load("unet"), {2: 160, 3: 160})),
        "model_best.onnx: the UNet declares its output [N, 3, 320, 320] but returned [4, 3, 160, 160]"),
    "UNet NaN": (dict(unet=lambda: nan_output(load("unet"))), "model_best.onnx: the UNet produced NaN at frame 0"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_model_breaking_its_contract_at_run_time_stops_with_one_line(tmp_path, write_audio, case):
    models, expected = CASES[case]
    folder = character_with(tmp_path, **{k: make() for k, make in models.items()})
    out = tmp_path / "out.mp4"
    result = render(write_audio(speech_like(0.5), 16000), folder, out)
    assert result.exit_code == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("note:")]  # a first render's note
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_no_abort_over_repeated_runs(tmp_path, write_audio):
    folder = character_with(tmp_path, encoder=runtime_sliced(load("encoder"), {1: 256}))
    audio = write_audio(speech_like(2.0), 16000)
    command = [sys.executable, "-m", "lipsync_cli", "render", str(audio), "-c", str(folder), "-o",
               str(tmp_path / "x.mp4"), "--device", "cpu"]
    procs = []
    for _ in range(4):  # a process that aborts on its way out exits -6, not 1
        procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        if len(procs) % 2 == 0:  # two at a time: 2 cores
            for p in procs[-2:]:
                p.wait(60)
    codes = [(p.wait(60), p.stderr.read().decode()) for p in procs]
    assert all(code == 1 for code, _ in codes), codes
    errors = [[line for line in err.splitlines() if not line.startswith("note:")] for _, err in codes]
    assert all(len(lines) == 1 and "audio_encoder.onnx" in lines[0] for lines in errors), codes


class ThirdCallFails:
    """A session that raises on its third run, like a model failing inside onnxruntime mid-render."""

    def __init__(self, session):
        self.session, self.calls = session, 0

    def run(self, names, feeds):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code")
        return self.session.run(names, feeds)

    def __getattr__(self, name):
        return getattr(self.session, name)


def test_a_failure_on_the_third_batch_leaves_no_stage_thread(tmp_path, write_audio):
    maker = SessionMaker(1)

    def create(path, device):
        session = maker(path, device)
        return ThirdCallFails(session) if path.name == "model_best.onnx" else session

    before = set(threading.enumerate())
    with Runtime(RuntimeConfig(devices="cpu", cache=False), session_creator=create) as runtime:
        job = RenderJob(write_audio(speech_like(1.0), 16000), "alice", tmp_path / "x.mp4", RenderOptions(batch_size=4))
        with pytest.raises(InferenceError, match="model_best.onnx: inference failed in the UNet at frame 8"):
            execute(plan(job, runtime), runtime)
    time.sleep(0.2)
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert left == [], left
    assert not (tmp_path / "x.mp4").exists() and os.listdir(tmp_path) == ["audio.wav"]
