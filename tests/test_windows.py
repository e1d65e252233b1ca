from fractions import Fraction

import numpy as np
import pytest
from scipy.signal import lfilter

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.features.mel import frames_to_mel, mel_spectrogram
from lipsync_cli.features.windows import FrameWindows, frame_windows, parse_fps, video_frame_count, window_start

NTSC = Fraction(30000, 1001)


def silence_extended_mel(x, extra_frames):
    """Whole-signal mel with the STFT's zero padding continuing past the end (design.md section 2)."""
    emphasised = lfilter([1.0, -0.97], [1.0], x.astype(np.float64))
    padded = np.pad(emphasised, (400, 400 + 200 * extra_frames))
    return frames_to_mel(padded, 1 + len(x) // 200 + extra_frames)


def test_parse_fps():
    assert parse_fps(25) == 25 and parse_fps("30000/1001") == NTSC and parse_fps(29.97) == Fraction(2997, 100)
    for bad in ("0", "-25", "abc", "1/0"):
        with pytest.raises(ValueError):
            parse_fps(bad)


def test_frame_count_covers_the_audio():
    assert video_frame_count(16000, Fraction(25)) == 25
    assert video_frame_count(16001, Fraction(25)) == 26
    assert video_frame_count(10240, Fraction(25)) == 16  # a 640 ms chunk is 16 frames at 25 fps
    assert video_frame_count(16000, Fraction(30)) == 30
    assert video_frame_count(16000, NTSC) == 30  # 29.97 frames -> 30
    assert video_frame_count(1, Fraction(25)) == 1
    assert video_frame_count(0, Fraction(25)) == 1


def test_window_starts_use_exact_arithmetic():
    assert [window_start(i, Fraction(25)) for i in range(4)] == [0, 3, 6, 9]  # 3.2 mel frames per video frame
    assert [window_start(i, Fraction(30)) for i in (0, 1, 2, 3)] == [0, 2, 5, 8]
    assert window_start(1001, NTSC) == 2672  # 80 * 1001 * 1001 / 30000 = 2672.0027 (a float 29.97 gives 2671)
    assert window_start(30000, NTSC) == 80 * 1001


@pytest.mark.parametrize("fps", [Fraction(25), Fraction(30), NTSC])
@pytest.mark.parametrize("chunk", [160, 10240, 33333])
def test_windows_are_slices_of_the_whole_mel(fps, chunk):
    x = speech_like(2.13, seed=3)
    n = len(x)
    batches = list(frame_windows((x[i : i + chunk] for i in range(0, n, chunk)), n, fps))
    windows = np.concatenate([b.windows for b in batches])
    assert [b.first for b in batches] == list(np.cumsum([0] + [len(b) for b in batches[:-1]]))
    frames = video_frame_count(n, fps)
    assert windows.shape == (frames, 80, 16)
    mel = silence_extended_mel(x, 200)
    for i in range(frames):
        s = window_start(i, fps)
        assert np.abs(windows[i] - mel[s : s + 16].T).max() <= 1e-6, i


def test_window_end_modes():
    x = speech_like(1.0, seed=4) + 0.05
    n, fps = len(x), Fraction(25)
    silence = np.concatenate([b.windows for b in frame_windows([x], n, fps, window_end="silence")])
    clamp = np.concatenate([b.windows for b in frame_windows([x], n, fps, window_end="clamp")])
    mel = mel_spectrogram(x)
    assert len(mel) == 81
    assert np.array_equal(silence[:20], clamp[:20])
    assert np.allclose(clamp[-1], mel[-16:].T, atol=1e-6)  # clamped to the last 16 frames
    assert np.all(silence[-1][:, -3:] == -4.0)  # running past the end sees silence


def test_short_audio_still_gives_one_window():
    for mode in ("silence", "clamp"):
        w = FrameWindows(100, Fraction(25), window_end=mode)
        batches = [w.push(np.full(100, 0.3, np.float32)), w.finish()]
        windows = np.concatenate([b.windows for b in batches if b is not None])
        assert windows.shape == (1, 80, 16)


@pytest.mark.parametrize("mode", ["silence", "clamp"])
@pytest.mark.parametrize("fps", [Fraction(25), NTSC])
def test_windows_without_a_total_equal_those_with_one(mode, fps):
    """A live stream does not know its length: the windows, the total and the clamp rule come out the same."""
    x = speech_like(1.37, seed=9)
    n = len(x)
    known = FrameWindows(n, fps, window_end=mode)
    open_ended = FrameWindows(None, fps, window_end=mode)
    got = {id(known): [], id(open_ended): []}
    for a in range(0, n, 777):
        for w in (known, open_ended):
            batch = w.push(x[a : a + 777])
            if batch is not None:
                assert batch.first == len(got[id(w)])
                got[id(w)].extend(batch.windows)
    assert open_ended.frames is None and len(got[id(open_ended)]) <= len(got[id(known)])
    for w in (known, open_ended):
        batch = w.finish()
        if batch is not None:
            got[id(w)].extend(batch.windows)
    assert open_ended.frames == known.frames == video_frame_count(n, fps) == len(got[id(open_ended)])
    assert np.array_equal(np.stack(got[id(known)]), np.stack(got[id(open_ended)]))
