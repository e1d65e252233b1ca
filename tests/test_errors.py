"""Every bad input: exit 2, one line on stderr naming the problem, nothing written, nothing overwritten."""

import os
import random
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from lipsync_cli.audio.loading import probe_audio, read_audio
from lipsync_cli.cli.app import app
from lipsync_cli.errors import AudioError

from .characters import BROKEN
from .conftest import REPO

runner = CliRunner()
ROOT = os.geteuid() == 0
ORIGINAL = b"an existing video the user cares about"


def wav(path, x, rate=16000, subtype=None):
    sf.write(path, x, rate, subtype=subtype)
    return path


def truncated(path):
    wav(path, np.zeros(16000, np.float32), subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def corrupt(path):
    wav(path, np.zeros(16000, np.float32), subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[8:16] = b"JUNKJUNK"  # the WAVE id and the fmt chunk header
    path.write_bytes(bytes(data))
    return path


def readonly_dir(tmp):
    if ROOT:
        return "/sys"
    d = tmp / "ro"
    d.mkdir()
    d.chmod(0o555)
    return str(d)


def speech(tmp):
    return wav(tmp / "ok.wav", np.sin(np.arange(8000) * 0.2).astype(np.float32) * 0.3)


# (id, audio maker, extra args, output maker or None for the default, expected text)
CASES = [
    ("missing audio", lambda t: t / "nope.wav", [], None, "nope.wav: no such file"),
    ("audio is a directory", lambda t: t, [], None, "is a directory"),
    ("not audio", lambda t: (t / "a.wav").write_text("plain text " * 50) and t / "a.wav", [], None,
     "a.wav: not a readable audio file"),
    ("truncated wav", lambda t: truncated(t / "cut.wav"), [], None, "cut.wav: truncated WAV"),
    ("corrupt wav", lambda t: corrupt(t / "bad.wav"), [], None, "bad.wav: not a readable audio file"),
    ("empty file", lambda t: (t / "e.wav").write_bytes(b"") or t / "e.wav", [], None, "e.wav: the file is empty"),
    ("zero samples", lambda t: wav(t / "z.wav", np.zeros(0, np.float32)), [], None, "contains no audio samples"),
    ("nan samples", lambda t: wav(t / "n.wav", np.array([0.0, np.nan] * 50, np.float32), subtype="FLOAT"), [], None,
     "NaN or infinite"),
    ("infinite samples", lambda t: wav(t / "i.wav", np.array([0.0, np.inf] * 50, np.float32), subtype="FLOAT"), [],
     None, "NaN or infinite"),
    ("too many channels", lambda t: wav(t / "c.wav", np.zeros((800, 10), np.float32)), [], None,
     "10 channels are not supported"),
    ("rate too low", lambda t: wav(t / "r.wav", np.zeros(800, np.float32), 4000), [], None,
     "sample rate 4000 Hz is outside"),
    ("rate too high", lambda t: wav(t / "h.wav", np.zeros(8000, np.float32), 384000), [], None,
     "sample rate 384000 Hz is outside"),
    ("unknown character", speech, ["--character", "nobody"], None, "nobody: no such character"),
    ("mistyped character", speech, ["--character", "alcie"], None, "alcie: no such character; did you mean alice?"),
    ("character in capitals", speech, ["--character", "Alice"], None, "Alice: no such character; did you mean alice?"),
    ("output dir under a file", speech, [], lambda t: t / "ok.wav" / "new" / "o.mp4",
     "ok.wav is a file, not a folder"),
    ("output dir read-only", speech, [], lambda t: f"{readonly_dir(t)}/o.mp4", "is not writable"),
    ("output dir in a read-only one", speech, [], lambda t: f"{readonly_dir(t)}/new/o.mp4", "is not writable"),
    ("output is a directory", speech, [], lambda t: t, "is a directory; give a file name"),
    ("unknown device", speech, ["--device", "tpu"], None, "unknown device 'tpu'"),
    ("batch size zero", speech, ["--batch-size", "0"], None, "--batch-size must be 1 to"),
    ("unknown blend", speech, ["--blend", "soft"], None, "--blend must be match, feather or hard"),
    ("unknown preset", speech, ["--preset", "warp"], None, "preset 'warp' does not exist for libx264"),
    ("unknown codec", speech, ["--codec", "vp9"], None, "unknown codec 'vp9'"),
]


def run_case(tmp_path, make_audio, extra, make_output, overwrite=True):
    out = make_output(tmp_path) if make_output else tmp_path / "out.mp4"
    keep = tmp_path / "out.mp4"
    keep.write_bytes(ORIGINAL)
    args = ["render", str(make_audio(tmp_path)), "--character", "alice", "-o", str(out), *extra]
    if "--character" in extra:
        args.remove("alice")
        args.remove("--character")
    if overwrite:
        args.append("--overwrite")
    result = runner.invoke(app, args)
    return result, keep


def assert_refused(result, keep, tmp_path, expected, code=2):
    assert result.exit_code == code, (result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lipsync: error: ") and "Traceback" not in result.stderr
    assert expected in lines[0], lines[0]
    assert keep.read_bytes() == ORIGINAL
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".part") or p.name.startswith(".lipsync-check")]
    assert leftovers == []


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_work(tmp_path, case):
    _, make_audio, extra, make_output, expected = case
    result, keep = run_case(tmp_path, make_audio, extra, make_output)
    assert_refused(result, keep, tmp_path, expected)



@pytest.mark.parametrize("name, expected", [("ok.wav", "has no video stream"),
                                            ("jobs.csv", "is not a video file ffmpeg can read")])
def test_inspect_of_something_that_is_not_a_video(tmp_path, name, expected):
    path = speech(tmp_path) if name == "ok.wav" else tmp_path / name
    if name == "jobs.csv":
        path.write_text("audio,character\nok.wav,alice\n")
    result = runner.invoke(app, ["inspect", str(path), "-c", "alice"])
    assert result.exit_code == 2 and result.stderr == f"lipsync: error: {path}: {expected}\n"


@pytest.mark.parametrize("case", BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_character_is_refused(tmp_path, alice_copy, case):
    _, breaker, _, message = case
    breaker(alice_copy)
    result, keep = run_case(tmp_path, speech, ["--character", str(alice_copy)], None)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert keep.read_bytes() == ORIGINAL
    import re

    assert re.search(message, result.stderr), result.stderr


@pytest.mark.skipif(ROOT, reason="root can read any file")
def test_unreadable_audio(tmp_path):
    path = speech(tmp_path)
    path.chmod(0)
    result, keep = run_case(tmp_path, lambda t: path, [], None)
    assert_refused(result, keep, tmp_path, "cannot be read")



def test_usage_errors_are_one_line_too(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lipsync_cli", "render", "x.wav"], capture_output=True, text=True,
                          cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.strip() == "lipsync: error: Missing option '--character' / '-c'. (see 'lipsync render --help')"


def test_debug_shows_the_traceback(tmp_path):
    result = runner.invoke(app, ["render", str(tmp_path / "nope.wav"), "-c", "alice", "--debug"])
    assert result.exit_code == 2 and "Traceback" in result.stderr and "AudioError" in result.stderr


def test_fuzzed_audio_is_refused_cleanly_or_read(tmp_path):
    rng = random.Random(1234)
    good = tmp_path / "good.wav"
    wav(good, (np.sin(np.arange(4000) * 0.1) * 0.5).astype(np.float32), subtype="PCM_16")
    header = good.read_bytes()
    refused = read = 0
    for case in range(300):
        path = tmp_path / f"fuzz{case}.wav"
        kind = case % 3
        if kind == 0:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 600)))
        elif kind == 1:
            data = header[: rng.randint(0, len(header))]
        else:  # a valid file with a few header bytes (or a chunk size) flipped
            data = bytearray(header)
            for _ in range(rng.randint(1, 4)):
                data[rng.randint(0, 60)] = rng.getrandbits(8)
            if rng.random() < 0.3:
                data[40:44] = struct.pack("<I", rng.getrandbits(32))
            data = bytes(data)
        path.write_bytes(data)
        try:
            info = probe_audio(path)
        except AudioError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            refused += 1
            continue
        x = read_audio(path)
        assert len(x) == info.samples_16k and np.isfinite(x).all()
        read += 1
    assert refused > 100 and read > 10
