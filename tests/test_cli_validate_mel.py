"""`lipsync validate-mel` on the command line. Most checks run as without librosa (its first import compiles
for seconds); one runs with it, on a container that librosa.load would decode with another decoder."""

import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.cli.app import app
from lipsync_cli.features.mel import mel_spectrogram

from .media import FFMPEG

runner = CliRunner()


@pytest.fixture
def no_librosa(monkeypatch):
    """This process as if librosa were not installed: `import librosa` raises ImportError."""
    monkeypatch.setitem(sys.modules, "librosa", None)


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "validate-mel" in result.output


def test_passes_on_a_file_and_its_own_reference(write_audio, tmp_path, no_librosa):
    x = speech_like(1.3)
    path = write_audio(x, 16000, subtype="FLOAT")
    ref = tmp_path / "ref.npy"
    np.save(ref, mel_spectrogram(x).T)  # [80, T] is accepted too
    result = runner.invoke(app, ["validate-mel", str(path), "--reference", str(ref)])
    assert result.exit_code == 0, result.output
    assert "ref.npy" in result.output and "FAIL" not in result.output  # the reference is named by its file


def test_without_librosa_the_verdict_says_partial(no_librosa):
    result = runner.invoke(app, ["validate-mel"])
    assert result.exit_code == 0, result.output
    assert "chunked" in result.output and "hello.wav" in result.output
    verdict = result.stdout.strip().splitlines()[-1]
    assert verdict.startswith("partial: librosa is not installed") and "pip install librosa" in verdict


def test_planted_mismatch_exits_1(write_audio, tmp_path, no_librosa):
    x = speech_like(1.0)
    path = write_audio(x, 16000, subtype="FLOAT")
    ref = mel_spectrogram(x)
    ref[10, 5] += 0.01
    np.save(tmp_path / "off.npy", ref)
    result = runner.invoke(app, ["validate-mel", str(path), "-r", str(tmp_path / "off.npy")])
    assert result.exit_code == 1
    assert result.stdout.strip().splitlines()[-1] == "FAIL: 1 comparison out of tolerance"


def test_bad_file_exits_2_with_one_line(tmp_path, no_librosa):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage" * 10)
    result = runner.invoke(app, ["validate-mel", str(bad)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in result.stderr


def test_m4a_is_compared_with_librosa_on_our_decoding_without_warnings(write_audio, tmp_path, recwarn):
    pytest.importorskip("librosa")
    wav = write_audio(np.stack([speech_like(1.0, rate=44100)] * 2, axis=1), 44100)
    m4a = tmp_path / "interview_2024-03-18_take2.m4a"
    subprocess.run([FFMPEG, "-v", "error", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True)
    result = runner.invoke(app, ["validate-mel", str(m4a)])
    assert result.exit_code == 0, result.output
    assert m4a.name in result.stdout and "librosa resample" in result.stdout and "FAIL" not in result.stdout
    assert "audioread" in result.stdout  # says why librosa.load itself is not what is compared
    assert result.stdout.strip().splitlines()[-1] == "ok: every comparison within tolerance"
    assert result.stderr == "" and not recwarn.list, [str(w.message) for w in recwarn.list]
