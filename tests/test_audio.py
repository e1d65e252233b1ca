import math

import numpy as np
import pytest

from lipsync_cli.audio.loading import probe_audio, read_audio, stream_audio
from lipsync_cli.errors import AudioError


def dominant_hz(x, rate=16000):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * rate / len(x)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 96000])
def test_resampling_keeps_length_and_frequency(write_audio, rate):
    seconds, hz = 1.5, 440.0
    t = np.arange(int(rate * seconds)) / rate
    path = write_audio(np.sin(2 * np.pi * hz * t).astype(np.float32) * 0.5, rate)
    y = read_audio(path)
    assert y.dtype == np.float32
    assert len(y) == math.ceil(len(t) * 16000 / rate)
    assert abs(dominant_hz(y) - hz) < 2.0
    assert 0.45 < np.abs(y[2000:-2000]).max() < 0.55


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
@pytest.mark.parametrize("chunk", [1, 999, 10240])
def test_streamed_chunks_equal_the_whole_file(write_audio, rate, chunk):
    x = np.random.default_rng(rate).standard_normal((rate * 2 + 13, 2)).astype(np.float32) * 0.1
    path = write_audio(x, rate, subtype="FLOAT")
    info = probe_audio(path)
    chunks = list(stream_audio(info, chunk))
    assert all(len(c) == chunk for c in chunks[:-1]) and 0 < len(chunks[-1]) <= chunk
    assert np.array_equal(np.concatenate(chunks), read_audio(path))


def test_stereo_is_mixed_down_to_the_mean(write_audio):
    t = np.arange(16000) / 16000
    left = np.sin(2 * np.pi * 300 * t) * 0.8
    path = write_audio(np.stack([left, np.zeros_like(left)], axis=1), 16000, subtype="FLOAT")
    y = read_audio(path)
    assert np.allclose(y, left * 0.5, atol=1e-6)
    opposite = write_audio(np.stack([left, -left], axis=1), 16000, name="opp.wav", subtype="FLOAT")
    assert np.abs(read_audio(opposite)).max() < 1e-6


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_pcm_widths_and_float(write_audio, subtype):
    x = (np.sin(np.arange(8000) * 0.1) * 0.5).astype(np.float32)
    y = read_audio(write_audio(x, 16000, subtype=subtype))
    assert np.abs(y - x).max() < (0.01 if subtype == "PCM_U8" else 1e-4)


def test_info_reports_the_file(write_audio):
    info = probe_audio(write_audio(np.zeros((44100, 6), np.float32), 44100))
    assert (info.sample_rate, info.channels, info.frames, info.samples_16k) == (44100, 6, 44100, 16000)
    assert info.duration == pytest.approx(1.0)


def test_refusals_name_the_file(tmp_path, write_audio):
    with pytest.raises(AudioError, match="no such file"):
        probe_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="directory"):
        probe_audio(tmp_path)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        probe_audio(tmp_path / "empty.wav")
    (tmp_path / "text.wav").write_text("hello, this is not audio\n" * 20)
    with pytest.raises(AudioError, match=r"text\.wav: not a readable audio file"):
        probe_audio(tmp_path / "text.wav")
    bad = np.zeros(1000, np.float32)
    bad[500] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        probe_audio(write_audio(bad, 16000, name="nan.wav", subtype="FLOAT"))
    with pytest.raises(AudioError, match="sample rate"):
        probe_audio(write_audio(np.zeros(1000, np.float32), 4000, name="slow.wav"))
