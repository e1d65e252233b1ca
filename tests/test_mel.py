import numpy as np
import pytest

librosa = pytest.importorskip("librosa")

from lipsync_cli.audio.synthetic import speech_like  # noqa: E402
from lipsync_cli.features.mel import MelStream, frame_count, frames_to_mel, mel_filterbank, mel_spectrogram  # noqa: E402
from lipsync_cli.features.validation import librosa_mel  # noqa: E402

LENGTHS = [1, 100, 199, 200, 201, 399, 400, 401, 799, 800, 801, 10_240, 16_123, 48_000]


def signals():
    rng = np.random.default_rng(7)
    for n in LENGTHS:
        yield f"random-{n}", (rng.standard_normal(n) * 0.2).astype(np.float32)
    yield "speech-2.5s", speech_like(2.5, seed=1)
    yield "speech-odd", speech_like(1.2345, seed=2)
    yield "silence", np.zeros(12_345, np.float32)
    yield "full-scale", np.sign(np.sin(np.arange(9_000) * 0.05)).astype(np.float32)


def test_filterbank_matches_librosa():
    ours = mel_filterbank()
    theirs = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    assert ours.shape == theirs.shape == (80, 401)
    assert np.abs(ours - theirs).max() < 1e-8
    assert np.abs(ours - theirs).max() / theirs.max() < 1e-6


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_mel_matches_librosa_pipeline(pad_mode):
    for name, x in signals():
        if pad_mode == "reflect" and len(x) < 2:
            continue
        ours = mel_spectrogram(x, pad_mode)
        theirs = librosa_mel(x, pad_mode)
        assert ours.shape == theirs.shape == (frame_count(len(x)), 80), name
        assert np.abs(ours - theirs).max() <= 1e-4, name


def test_silence_is_the_floor():
    assert np.all(mel_spectrogram(np.zeros(4000, np.float32)) == -4.0)


def test_pad_modes_differ_only_at_the_edges():
    x = speech_like(1.0)
    a, b = mel_spectrogram(x, "constant"), mel_spectrogram(x, "reflect")
    assert np.array_equal(a[2:-2], b[2:-2])
    assert not np.array_equal(a[:2], b[:2])


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
@pytest.mark.parametrize("chunk", [1, 3, 17, 199, 200, 201, 799, 1_000, 10_240, 50_000])
def test_chunked_equals_whole(pad_mode, chunk):
    for n in (1, 401, 7_777, 40_001):
        x = speech_like(n / 16000, seed=n)
        whole = mel_spectrogram(x, pad_mode)
        stream = MelStream(pad_mode)
        parts = [stream.push(x[i : i + chunk]) for i in range(0, n, chunk)] + [stream.finish()]
        streamed = np.concatenate(parts)
        assert streamed.shape == whole.shape
        assert np.abs(streamed - whole).max() <= 1e-6, (n, chunk)


def test_frames_beyond_the_end_continue_the_zero_padding():
    x = speech_like(0.5)
    stream = MelStream()
    got = np.concatenate([stream.push(x), stream.finish(), stream.beyond(10)])
    emphasised = np.concatenate([[x[0]], x[1:] - 0.97 * x[:-1].astype(np.float64)])
    longer = frames_to_mel(np.pad(emphasised, (400, 400 + 2000)), len(got))
    assert np.abs(got - longer).max() <= 1e-6
    assert np.array_equal(got[: len(x) // 200 + 1], mel_spectrogram(x))
    assert np.all(got[-3:] == -4.0)


def test_window_and_preemphasis_are_scipys():
    from scipy.signal import get_window, lfilter

    from lipsync_cli.features.mel import hann_window, preemphasis

    assert np.abs(hann_window() - get_window("hann", 800, fftbins=True)).max() < 1e-15
    x = speech_like(0.3)
    assert np.array_equal(preemphasis(x), lfilter([1.0, -0.97], [1.0], x.astype(np.float64)))
