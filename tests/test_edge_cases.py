"""Inputs that are unusual but valid must render."""

import math
import tracemalloc
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from lipsync_cli.audio.loading import probe_audio
from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.characters.manifest import load_character
from lipsync_cli.cli.app import app
from lipsync_cli.features.windows import FrameWindows
from lipsync_cli.render.pipeline import audio_windows
from lipsync_cli.specs import ping_pong

from .characters import make_character
from .media import decoded_frames, probe

runner = CliRunner()


def render(audio, out, character="alice"):
    result = runner.invoke(app, ["render", str(audio), "-c", str(character), "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    return probe(out)


def voice(seconds, rate):
    return speech_like(seconds, rate=rate)


EDGE = [
    ("shorter than a frame", lambda: (np.full(100, 0.2, np.float32), 16000), "wav", None),
    ("silence", lambda: (np.zeros(8000, np.float32), 16000), "wav", None),
    ("clipped full scale", lambda: (np.sign(voice(0.4, 16000)) * 1.0, 16000), "wav", "PCM_16"),
    ("8-bit", lambda: (voice(0.4, 16000), 16000), "wav", "PCM_U8"),
    ("24-bit", lambda: (voice(0.4, 16000), 16000), "wav", "PCM_24"),
    ("float", lambda: (voice(0.4, 16000), 16000), "wav", "FLOAT"),
    ("6 channels", lambda: (np.stack([voice(0.4, 48000)] * 6, axis=1), 48000), "wav", None),
    ("8 kHz", lambda: (voice(0.4, 8000), 8000), "wav", None),
    ("96 kHz", lambda: (voice(0.4, 96000), 96000), "wav", None),
    ("flac", lambda: (voice(0.4, 22050), 22050), "flac", None),
    ("ogg", lambda: (voice(0.4, 16000), 16000), "ogg", None),
]


@pytest.mark.parametrize("case", EDGE, ids=[c[0] for c in EDGE])
def test_edge_inputs_render(tmp_path, case):
    _, make, ext, subtype = case
    x, rate = make()
    audio = tmp_path / f"in.{ext}"
    sf.write(audio, x, rate, subtype=subtype)
    info = probe_audio(audio)
    p = render(audio, tmp_path / "out.mp4")
    assert p.frames == max(1, math.ceil(info.samples_16k * 25 / 16000))
    assert "aac" in p.audio and abs(p.audio_seconds - info.duration) < 0.05


def test_audio_longer_than_the_template_plays_it_ping_pong(tmp_path, write_audio):
    indices = [0, 12, 24, 36, 48]
    folder, frames = make_character(tmp_path / "short", indices)
    audio = write_audio(speech_like(0.8), 16000)
    out = tmp_path / "pp.mp4"
    assert render(audio, out, folder).frames == 20
    character = load_character(folder)
    x1 = int(character.boxes[:, 0].min())  # left of every box: the template shows through untouched
    for i, decoded in enumerate(decoded_frames(out)):
        errors = [np.abs(decoded[:, : x1 - 4].astype(int) - f[:, : x1 - 4]).mean() for f in frames]
        assert int(np.argmin(errors)) == ping_pong(i, len(indices)), i


def test_odd_sized_template_is_padded_not_resampled(tmp_path, write_audio):
    folder, frames = make_character(tmp_path / "odd", [0, 1, 2], crop=(719, 1279))
    audio = write_audio(speech_like(0.3), 16000)
    out = tmp_path / "odd.mp4"
    p = render(audio, out, folder)
    assert (p.width, p.height) == (1280, 720)
    decoded = decoded_frames(out)[0]
    assert np.abs(decoded[:719, :300].astype(int) - frames[0][:, :300]).mean() < 3  # same pixels, not rescaled
    assert decoded[719].mean() < 20 and decoded[:, 1279].mean() < 20  # the padding is black


def front_end_peak(tmp_path, minutes):
    path = tmp_path / f"long{minutes}.wav"
    with sf.SoundFile(path, "w", 16000, 1, "PCM_16") as f:
        block = speech_like(60.0)
        for _ in range(minutes):
            f.write(block)
    info = probe_audio(path)
    character = type("C", (), {})()
    audio = {"pad_mode": "constant", "window_end": "silence", "resample": "soxr"}
    character.fps, character.audio = Fraction(25), type("A", (), audio)
    tracemalloc.start()
    count = sum(len(w) for w in audio_windows(character, info, 10240))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == FrameWindows(info.samples_16k, Fraction(25)).frames
    return peak


def test_front_end_memory_is_flat_in_the_audio_length(tmp_path):
    short, long = front_end_peak(tmp_path, 1), front_end_peak(tmp_path, 5)
    assert long < 1.2 * short + 1_000_000, (short, long)
    assert long < 5_000_000, long  # 5 minutes of float32 audio alone would be 19 MB
