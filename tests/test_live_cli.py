"""`lipsync live`: a file or raw PCM on stdin streamed at real-time pace to a file; Ctrl-C ends it cleanly;
the pacing itself checked on a fake clock."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.live import LiveSession
from lipsync_cli.live.broadcast import feed
from lipsync_cli.live.stream_out import paced

from .conftest import REPO
from .live_helpers import FakeClock, options, take
from .media import probe

LIPSYNC = [sys.executable, "-m", "lipsync_cli"]


def run_live(args, **kw):
    return subprocess.run([*LIPSYNC, "live", *args], capture_output=True, text=True, timeout=120, cwd=REPO, **kw)


def test_a_file_streams_to_a_ts_file_with_its_audio(tmp_path):
    audio = tmp_path / "speech.wav"
    sf.write(audio, speech_like(1.2, seed=2), 16000)
    out = tmp_path / "live.ts"
    done = run_live([str(audio), "-c", "alice", "--to", str(out), "-d", "cpu"])
    assert done.returncode == 0, done.stderr
    info = probe(out)
    assert "16000 Hz" in info.audio
    speech_frames = 30  # 1.2 s at 25 fps
    assert speech_frames + 3 <= info.frames <= speech_frames + 3 + 5  # the fade after it; a few idle ones first
    assert info.audio and abs(info.audio_seconds - info.frames / 25) < 0.1
    assert f"frames ({info.frames / 25:.2f} s) -> {out}" in done.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    again = run_live([str(audio), "-c", "alice", "--to", str(out), "-d", "cpu"])
    assert again.returncode == 2 and "exists; pass --overwrite" in again.stderr


def test_raw_pcm_on_stdin_streams_and_its_end_ends_the_stream(tmp_path):
    out = tmp_path / "stdin.mkv"
    pcm = (speech_like(0.8, seed=4, rate=24000) * 32767).astype("<i2").tobytes()
    done = run_live(["-", "-c", "alice", "--to", str(out), "-d", "cpu", "--rate", "24000", "-q"], input=pcm.decode(
        "latin-1"), encoding="latin-1")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    info = probe(out)
    assert info.frames >= 20 + 3 and "24000 Hz" in info.audio  # AAC at the rate the voice came in


@pytest.mark.parametrize(("rate", "channels", "source"), [(44100, 2, "file"), (8000, 1, "stdin"),
                                                         (22000, 1, "stdin")])
def test_the_stream_carries_the_audio_at_its_own_rate(tmp_path, rate, channels, source):
    """AAC at the input's rate (8 kHz too: ffmpeg's AAC encoder then waits five frames for its first packet,
    which must not stall the video pipe)."""
    x = speech_like(0.8, seed=6, rate=rate)
    out = tmp_path / "rate.mkv"
    if source == "file":
        audio = tmp_path / "speech.wav"
        sf.write(audio, np.stack([x] * channels, axis=1), rate)
        done = run_live([str(audio), "-c", "alice", "--to", str(out), "-d", "cpu"])
    else:
        pcm = (x * 32767).astype("<i2").tobytes()
        done = run_live(["-", "-c", "alice", "--to", str(out), "-d", "cpu", "--rate", str(rate)],
                        input=pcm.decode("latin-1"), encoding="latin-1")
    assert done.returncode == 0, done.stderr
    info = probe(out)
    written = int(re.search(r"(\d+) frames \(", done.stderr.strip().splitlines()[-1]).group(1))
    assert info.frames == written  # every frame it wrote is in the stream, the last ones too
    carried = {22000: 22050}.get(rate, rate)  # a rate AAC lacks: ffmpeg's AAC encoder takes the nearest of its own
    assert f"{carried} Hz" in info.audio and info.frames >= 20
    assert abs(info.audio_seconds - info.frames / 25) < 0.15


def test_sigint_ends_the_stream_cleanly_and_the_file_plays(tmp_path):
    out = tmp_path / "held.flv"
    proc = subprocess.Popen([*LIPSYNC, "live", "-", "-c", "alice", "--to", str(out), "-d", "cpu", "--keep-alive"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "streaming alice to ..." once the models are loaded
        assert "streaming alice to" in line, line
        time.sleep(1.5)  # idle frames meanwhile: nothing comes on stdin
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, rest
    assert "interrupted" in rest
    info = probe(out)
    assert info.frames >= 10 and info.audio


def test_bad_live_input_is_refused_before_work(tmp_path):
    assert "--rate must be 8000 to 48000 Hz" in run_live(["-", "-c", "alice", "--to", "x.ts", "--rate", "96000"]).stderr
    bad = run_live([str(tmp_path / "none.wav"), "-c", "alice", "--to", str(tmp_path / "x.ts")])
    assert bad.returncode == 2 and "none.wav: no such file" in bad.stderr
    mp4 = run_live(["-", "-c", "alice", "--to", str(tmp_path / "x.mp4")])
    assert mp4.returncode == 2 and "the output must be a .ts, .flv, .mkv file" in mp4.stderr
    url = run_live(["-", "-c", "alice", "--to", "http://example.invalid/x"])
    assert url.returncode == 2 and "a live target is rtmp://" in url.stderr


class Recorder:
    """Stands in for the ffmpeg output: what was written, and when on the clock."""

    def __init__(self, clock):
        self.clock, self.written = clock, []

    def write(self, frame):
        self.written.append((frame.index, self.clock()))


def test_frames_go_out_when_due_and_audio_goes_in_at_its_time(runtime, alice):
    clock = FakeClock()
    pushes = []

    def sleep(seconds):
        assert seconds > 0
        clock.advance(seconds)

    with LiveSession(runtime, alice, options(), clock=clock) as session:
        real_push = session.push
        session.push = lambda x: (pushes.append((clock(), len(x))), real_push(x))
        x = speech_like(0.5, seed=5)
        feed(session, iter([x[a : a + 640] for a in range(0, len(x), 640)]), threading.Event(), 16000, sleep)
        assert [t for t, _ in pushes] == pytest.approx([i * 0.04 for i in range(len(pushes))])  # real-time pace
        out = Recorder(clock)
        for frame in take(session, 12):
            assert paced(out, frame, clock, sleep) == 0.0
        assert [t for _, t in out.written] == pytest.approx([session.due(k) for k in range(12)])


def test_late_frames_are_written_at_once_and_reported_late(runtime, alice):
    clock = FakeClock()
    with LiveSession(runtime, alice, options(), clock=clock) as session:
        session.push(np.zeros(1600, np.float32))
        session.flush()
        frame = take(session, 1)[0]
        clock.advance(frame.due + 0.25)
        out = Recorder(clock)
        assert paced(out, frame, clock, lambda s: pytest.fail("slept")) == pytest.approx(0.25)


def test_bench_live_gives_every_figure(tmp_path):
    import json

    out = tmp_path / "live.json"
    done = subprocess.run([*LIPSYNC, "bench", "--live", "40", "--in-flight", "1,2", "--seconds", "0.6", "-d", "cpu",
                           "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=os.environ | {"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    (row,) = data["latency"]
    assert row["chunk_ms"] == 40 and row["frames"] == 15 and row["total_p50_ms"] > row["lookahead_ms"] > 0
    assert set(data["aggregate_fps"]) == {"micro-batched", "separate"}
    assert all(fps > 0 for values in data["aggregate_fps"].values() for fps in values.values())
    assert "p50/p95" in done.stdout and "micro-batched: 1 sessions" in done.stdout
    assert data["encode_ms"]["h264"] > 0 and data["encode_ms"]["jpeg"] > 0
