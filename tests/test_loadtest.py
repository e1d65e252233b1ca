"""`lipsync loadtest` and the server under load: every figure and valid JSON, a capacity search that stops
at a refusal, admission from a measured capacity, sessions opened and closed many times leaving nothing
behind, and two characters under concurrent load each getting their own frames."""

import json
import os
import shutil
import threading

import numpy as np
import pytest
from typer.testing import CliRunner
from websockets.sync.client import connect

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.characters.manifest import load_character
from lipsync_cli.cli.app import app
from lipsync_cli.loadtest.client import Scenario
from lipsync_cli.loadtest.run import find_capacity
from lipsync_cli.serve.config import ServeConfig
from lipsync_cli.serve.protocol import parse_frame

from .conftest import ALICE
from .live_helpers import rendered
from .models import character_with, synctalk_unet
from .serve_helpers import pcm16, refusal, server, start_message, ws_url
from .test_serve import decode_h264

runner = CliRunner()
SPEECH = (speech_like(10.0, seed=5) * 32767).astype(np.int16)


def test_loadtest_of_two_short_sessions_gives_every_figure(tmp_path):
    out = tmp_path / "load.json"
    result = runner.invoke(app, ["loadtest", "--sessions", "2", "--seconds", "2", "--devices", "cpu", "--json",
                                 str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["sessions"] == data["served"] == 2 and data["refused"] == data["errors"] == 0
    for key in ("p50", "p95", "p99", "max"):
        assert data["lateness_ms"][key] is not None and data["glass_to_glass_ms"][key] > 0
    assert data["memory_mb"] and all(mb > 50 for _, mb in data["memory_mb"])
    for row in data["per_session"]:
        assert row["frames"] >= 45 and 20 < row["fps"] < 40 and row["misaligned"] == 0 and row["aligned"] > 20
        assert set(row["parts_ms"]) == {"lookahead", "queueing", "inference", "composite", "encode"}
    assert "2 sessions for 2 s" in result.output and "glass to glass" in result.output


def test_find_capacity_stops_at_a_refusal_and_serve_admits_what_was_measured(runtime, tmp_path):
    with server(runtime, max_sessions=1) as running:
        scenario = Scenario(ws_url(running), seconds=1.5)
        capacity, runs = find_capacity(scenario, SPEECH, most=4)
    assert capacity <= 1 and runs[-1]["refused"] >= 1 and not runs[-1]["ok"] and len(runs) <= 2
    measured = tmp_path / "capacity.json"
    measured.write_text(json.dumps({"capacity": 3, "runs": runs}))
    config = ServeConfig(max_sessions=8, capacity=str(measured)).with_capacity()
    assert config.per_device == 3
    measured.write_text("{}")
    with pytest.raises(Exception, match="not a capacity measured by lipsync loadtest"):
        ServeConfig(capacity=str(measured)).with_capacity()


def open_files():
    return len(os.listdir("/proc/self/fd"))


def children():
    return [p for p in os.listdir("/proc") if p.isdigit() and open(f"/proc/{p}/stat").read().split()[3] ==
            str(os.getpid())]


def test_sessions_opened_and_closed_100_times_leave_nothing_behind(runtime):
    with server(runtime, max_sessions=4) as running:
        def cycle():
            with connect(ws_url(running), open_timeout=30) as ws:
                ws.send(start_message())
                assert json.loads(ws.recv(timeout=30))["type"] == "ready"
                ws.send(pcm16(speech_like(0.1, seed=1)))
                ws.send(json.dumps({"type": "stop"}))
                refusal(ws)  # until the server's close (a session is let go of just after it)

        for _ in range(3):  # warm up: the models, the template, the first threads of each kind
            cycle()
        threads, files, kids = threading.active_count(), open_files(), children()
        for _ in range(100):
            cycle()
        for _ in range(100):  # a closing session is let go of a moment after its close frame
            if running.server.manager.active == 0 and threading.active_count() <= threads:
                break
            threading.Event().wait(0.05)
        assert running.server.manager.active == 0
        assert threading.active_count() <= threads, [t.name for t in threading.enumerate()]
        assert open_files() <= files + 2
        assert children() == kids


def test_a_client_that_reconnects_on_the_close_finds_its_place_given_back(runtime):
    # one place: a session's close frame must come after its place is free, for a stop and for a refusal
    with server(runtime, max_sessions=1) as running:
        for ending in ["stop", "bad"] * 5:
            with connect(ws_url(running), open_timeout=30) as ws:
                ws.send(start_message())
                assert json.loads(ws.recv(timeout=30))["type"] == "ready"
                ws.send(pcm16(speech_like(0.1, seed=2)))
                ws.send(json.dumps({"type": "stop"} if ending == "stop" else {"type": "dance"}))
                message, code = refusal(ws)
                assert (message, code) == ((None, 1000) if ending == "stop" else (message, 1008)), (message, code)
        assert running.server.manager.active == 0


def test_two_characters_under_concurrent_load_each_get_their_own_frames(runtime, tmp_path):
    folder = tmp_path / "characters"
    folder.mkdir()
    shutil.copytree(ALICE, folder / "alice")
    character_with(folder, "synctalk", unet=synctalk_unet())
    clips = {"alice": speech_like(1.2, seed=31), "synctalk": speech_like(1.0, seed=32)}
    got: dict[str, list] = {}

    def stream(name):
        with connect(ws_url(running), open_timeout=30) as ws:
            ws.send(start_message(name))
            json.loads(ws.recv(timeout=30))
            pcm = pcm16(clips[name])
            for a in range(0, len(pcm), 1280):
                ws.send(pcm[a : a + 1280])
            ws.send(json.dumps({"type": "flush"}))
            frames = []
            while sum(parse_frame(m)[0].speech for m in frames) < int(np.ceil(len(clips[name]) * 25 / 16000)):
                message = ws.recv(timeout=30)
                if isinstance(message, bytes):
                    frames.append(message)
            ws.send(json.dumps({"type": "stop"}))
            got[name] = [parse_frame(m) for m in frames]

    with server(runtime, characters=(str(folder),)) as running:
        threads = [threading.Thread(target=stream, args=(name,)) for name in clips for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for name, clip in clips.items():
        import soundfile as sf

        path = tmp_path / f"{name}.wav"
        sf.write(path, np.frombuffer(pcm16(clip), "<i2"), 16000, subtype="PCM_16")
        reference = rendered(load_character(folder / name), path, runtime)
        frames = got[name]
        images = decode_h264(frames)
        first = next(i for i, (h, _, _) in enumerate(frames) if h.speech)
        fade = 3 if first > 0 else 0
        for j in range(fade, len(reference)):
            assert np.abs(images[first + j].astype(int) - reference[j].astype(int)).mean() < 1.5, (name, j)
