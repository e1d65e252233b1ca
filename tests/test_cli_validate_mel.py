import numpy as np
from typer.testing import CliRunner

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.cli.app import app
from lipsync_cli.features.mel import mel_spectrogram

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "validate-mel" in result.output


def test_passes_on_a_file_and_its_own_reference(write_audio, tmp_path):
    x = speech_like(1.3)
    path = write_audio(x, 16000, subtype="FLOAT")
    ref = tmp_path / "ref.npy"
    np.save(ref, mel_spectrogram(x).T)  # [80, T] is accepted too
    result = runner.invoke(app, ["validate-mel", str(path), "--reference", str(ref)])
    assert result.exit_code == 0, result.output
    assert "ref.npy" in result.output and "FAIL" not in result.output  # the reference is named by its file


def test_passes_with_no_argument():
    result = runner.invoke(app, ["validate-mel"])
    assert result.exit_code == 0, result.output
    assert "chunked" in result.output


def test_planted_mismatch_exits_1(write_audio, tmp_path):
    x = speech_like(1.0)
    path = write_audio(x, 16000, subtype="FLOAT")
    ref = mel_spectrogram(x)
    ref[10, 5] += 0.01
    np.save(tmp_path / "off.npy", ref)
    result = runner.invoke(app, ["validate-mel", str(path), "-r", str(tmp_path / "off.npy")])
    assert result.exit_code == 1
    assert "FAIL" in result.output


def test_bad_file_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage" * 10)
    result = runner.invoke(app, ["validate-mel", str(bad)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in result.stderr
