"""Render jobs as data: plan checks before work and leaves nothing behind, execute reports typed events."""

import gc
import os
import pickle

import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.characters.manifest import load_character
from lipsync_cli.cli.app import app
from lipsync_cli.errors import InputError, OutputExists
from lipsync_cli.models.devices import DeviceRequest
from lipsync_cli.render import Finished, FramesDone, RenderJob, RenderOptions, Started, execute, plan

from .conftest import ALICE

runner = CliRunner()


def child_processes():
    try:
        with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as fh:
            return fh.read().split()
    except OSError:
        return []


def test_a_job_and_its_plan_are_plain_picklable_data(runtime, write_audio, tmp_path):
    job = RenderJob(write_audio(speech_like(0.3), 16000), "alice", tmp_path / "a.mp4",
                    RenderOptions(DeviceRequest("cpu"), batch_size=3, blend="hard"))
    assert pickle.loads(pickle.dumps(job)) == job
    planned = plan(job, runtime)
    again = pickle.loads(pickle.dumps(planned))
    assert again.job == job and again.frames == planned.frames == 8 and str(again.device) == "cpu"


def test_execute_reports_typed_events_in_order(runtime, write_audio, tmp_path):
    job = RenderJob(write_audio(speech_like(0.5), 16000), "alice", tmp_path / "e.mp4", RenderOptions(batch_size=4))
    events = []
    result = execute(plan(job, runtime), runtime, events.append)
    assert isinstance(events[0], Started) and events[0].frames == 13
    assert isinstance(events[-1], Finished) and events[-1].result == result
    done = [e for e in events if isinstance(e, FramesDone)]
    assert sum(e.frames for e in done) == 13 == done[-1].done == result.frames
    assert all(e.job == job for e in events)
    (stats,) = runtime.registry.stats()
    assert stats.name == "alice" and stats.frames == 13 and stats.requests >= 1 and stats.mean_inference_ms > 0


def test_a_refused_plan_loads_no_model_and_leaves_no_process(runtime, write_audio, tmp_path):
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"keep")
    job = RenderJob(write_audio(speech_like(0.3), 16000), "alice", out)
    with pytest.raises(OutputExists) as refused:
        plan(job, runtime)
    assert "--" not in str(refused.value)  # the library speaks of the job, the CLI of flags
    assert runtime.registry.stats() == [] and runtime.registry.loaded() == []
    assert child_processes() == []
    with pytest.raises(InputError, match="^batch size must be 1 to 1024, not 0$"):
        plan(RenderJob(job.audio, "alice", tmp_path / "b.mp4", RenderOptions(batch_size=0)), runtime)
    assert out.read_bytes() == b"keep"


def live_sessions():
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, ort.InferenceSession))


def test_checking_characters_keeps_no_session_open(tmp_path):
    before = live_sessions()
    for _ in range(5):
        load_character(ALICE)
    assert runner.invoke(app, ["characters"]).exit_code == 0
    assert runner.invoke(app, ["characters", "alice"]).exit_code == 0
    assert live_sessions() == before
