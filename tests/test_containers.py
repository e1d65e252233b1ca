"""What users bring: audio in any container ffmpeg decodes, resampled as librosa.load does, from a file or
standard input; output containers and audio that play everywhere."""

import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr
from typer.testing import CliRunner

from lipsync_cli.audio.loading import probe_audio, read_audio, stream_audio
from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.cli.app import app
from lipsync_cli.features.mel import mel_spectrogram
from lipsync_cli.features.validation import librosa_load_mel

from .conftest import REPO
from .media import FFMPEG, probe

runner = CliRunner()


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000])
def test_soxr_stream_is_the_one_shot_result_padded_like_librosa(write_audio, rate):
    x = np.random.default_rng(rate).standard_normal(rate + 777).astype(np.float32) * 0.1
    info = probe_audio(write_audio(x, rate, subtype="FLOAT"))
    expected = soxr.resample(x, rate, 16000, quality="HQ")
    expected = np.concatenate([expected, np.zeros(math.ceil(len(x) * 16000 / rate) - len(expected), np.float32)])
    for chunk in (1, 17, 999, 10240, 50000):
        got = np.concatenate(list(stream_audio(info, chunk)))
        assert np.array_equal(got, expected), (rate, chunk)


@pytest.mark.parametrize("rate", [22050, 44100])
def test_mel_of_resampled_speech_is_librosa_loads(write_audio, rate):
    pytest.importorskip("librosa")
    info = probe_audio(write_audio(np.stack([speech_like(1.5, rate=rate, seed=7)] * 2, axis=1), rate))
    ours = mel_spectrogram(read_audio(info.path))
    assert np.abs(ours - librosa_load_mel(info)).max() < 1e-4


CONTAINERS = {
    "m4a": ["-c:a", "aac", "-b:a", "192k"],
    "aac": ["-c:a", "aac", "-b:a", "192k", "-f", "adts"],
    "webm": ["-c:a", "libopus", "-b:a", "128k"],
    "mkv": ["-c:a", "aac", "-b:a", "192k"],
}


@pytest.mark.parametrize("ext", [*CONTAINERS, "mp4 with video"])
def test_any_container_ffmpeg_decodes(tmp_path, write_audio, ext):
    wav = write_audio(speech_like(1.2, rate=48000, seed=3), 48000, name="speech.wav")
    if ext == "mp4 with video":
        out = tmp_path / "clip.mp4"
        args = ["-f", "lavfi", "-i", "color=size=64x64:rate=25", "-i", str(wav), "-map", "0:v", "-map", "1:a",
                "-shortest", "-c:v", "libx264", "-c:a", "aac", "-b:a", "192k"]
    else:
        out = tmp_path / f"speech.{ext}"
        args = ["-i", str(wav), *CONTAINERS[ext]]
    subprocess.run([FFMPEG, "-v", "error", "-y", *args, str(out)], check=True)
    info = probe_audio(out)
    assert info.decoder == "ffmpeg" and info.sample_rate == 48000
    reference = probe_audio(wav)
    assert abs(info.duration - reference.duration) < 0.06  # codec priming and padding
    ours, theirs = mel_spectrogram(read_audio(out)), mel_spectrogram(read_audio(wav))
    n = min(len(ours), len(theirs))
    # the encoder's delay shifts the signal by a few ms: compare at the best shift of at most 2 mel frames
    diff = min(np.abs(ours[s : n - 2 + s] - theirs[: n - 2]).mean() for s in range(3))
    assert diff < 0.15, diff
    result = runner.invoke(app, ["render", str(out), "-c", "alice", "-o", str(tmp_path / "r.mp4"), "--device",
                                 "cpu"])
    assert result.exit_code == 0, result.stderr
    assert abs(probe(tmp_path / "r.mp4").frames - math.ceil(reference.duration * 25)) <= 2


def test_a_video_without_audio_is_refused(tmp_path):
    silent = tmp_path / "silent.mp4"
    subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i", "color=size=64x64:rate=25:duration=1", "-c:v",
                    "libx264", str(silent)], check=True)
    result = runner.invoke(app, ["render", str(silent), "-c", "alice", "-o", str(tmp_path / "x.mp4")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "silent.mp4: has no audio stream" in result.stderr
    garbage = tmp_path / "noise.m4a"
    garbage.write_bytes(b"\x13" * 4000)
    result = runner.invoke(app, ["render", str(garbage), "-c", "alice", "-o", str(tmp_path / "x.mp4")])
    assert result.exit_code == 2 and "noise.m4a: not a readable audio file" in result.stderr
    assert "ffmpeg:" in result.stderr


def test_audio_from_standard_input(tmp_path, write_audio):
    wav = write_audio(speech_like(0.8), 16000)
    done = subprocess.run([sys.executable, "-m", "lipsync_cli", "render", "-", "-c", "alice", "--device", "cpu"],
                          cwd=tmp_path, input=wav.read_bytes(), capture_output=True, timeout=60,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert probe(tmp_path / "stdin_alice.mp4").frames == 20


def test_output_containers_and_audio_that_plays_everywhere(tmp_path, write_audio):
    six = write_audio(np.stack([speech_like(0.6, rate=96000)] * 6, axis=1), 96000, name="six.wav")
    for ext in ("mkv", "mov"):
        out = tmp_path / f"out.{ext}"
        assert runner.invoke(app, ["render", str(six), "-c", "alice", "-o", str(out), "--device", "cpu"]).exit_code == 0
        p = probe(out)
        assert p.frames == 15 and "48000 Hz" in p.audio and "stereo" in p.audio, p.audio
    refused = runner.invoke(app, ["render", str(six), "-c", "alice", "-o", str(tmp_path / "out.avi")])
    assert refused.exit_code == 2 and ".mp4, .mov, .mkv" in refused.stderr


def test_the_manifest_fps_must_be_the_templates(tmp_path, alice_copy, write_audio):
    path = alice_copy / "character.toml"
    path.write_text(path.read_text().replace("fps = 25", "fps = 30"))
    audio = write_audio(speech_like(0.4), 16000)
    result = runner.invoke(app, ["render", str(audio), "-c", str(alice_copy), "-o", str(tmp_path / "x.mp4")])
    assert result.exit_code == 2 and "fps 30 differs from the template's own 25 fps" in result.stderr
    path.write_text(path.read_text().replace("fps = 30", "fps = 30\nfps_override = true"))
    result = runner.invoke(app, ["render", str(audio), "-c", str(alice_copy), "-o", str(tmp_path / "x.mp4"),
                                 "--device", "cpu"])
    assert result.exit_code == 0 and probe(tmp_path / "x.mp4").frames == 12
    sf.write(tmp_path / "unused.wav", np.zeros(10), 16000)
