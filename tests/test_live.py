"""Live sessions (design.md section 13): the frames of a render, whatever the chunks; idle frames in gaps;
underruns; the buffer ahead; interrupt; several sessions on one runtime. The clock is a fake one the test
moves, so nothing here depends on how fast the machine is."""

import numpy as np
import pytest

from lipsync_cli.audio.loading import read_audio
from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.characters.manifest import load_character
from lipsync_cli.errors import InputError
from lipsync_cli.live import LiveSession
from lipsync_cli.live.session import Overrun

from .live_helpers import FakeClock, chunks, options, rendered, take
from .models import character_with, synctalk_unet


@pytest.fixture(scope="module")
def synctalk(tmp_path_factory):
    return load_character(character_with(tmp_path_factory.mktemp("st"), "synctalk", unet=synctalk_unet()))


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """1.3 s of speech-like audio at 16 and 44.1 kHz."""
    import soundfile as sf

    folder = tmp_path_factory.mktemp("speech")
    out = {}
    for rate in (16000, 44100):
        path = folder / f"speech_{rate}.wav"
        sf.write(path, speech_like(1.3, rate=rate, seed=3), rate, subtype="FLOAT")
        out[rate] = path
    return out


def session_frames(runtime, character, path, rate, chunk_ms, clock=None, paced=False, **kw):
    """Push the file's samples in chunks (at real-time pace on the fake clock when `paced`), flush, and take
    as many frames as the render of the file has."""
    import soundfile as sf

    x, file_rate = sf.read(path, dtype="float32")
    assert file_rate == rate
    clock = clock or FakeClock()
    with LiveSession(runtime, character, options(rate=rate, **kw), clock=clock) as session:
        size = max(1, round(rate * chunk_ms / 1000))
        for part in chunks(x, size):
            session.push(part)
            if paced:
                clock.advance(len(part) / rate)
        session.flush()
        return session, take(session, expected_frames(character, path))


def expected_frames(character, path):
    from lipsync_cli.audio.loading import probe_audio
    from lipsync_cli.render.pipeline import frame_count

    return frame_count(character, probe_audio(path))


@pytest.mark.parametrize(("rate", "chunk_ms"), [(16000, 1), (16000, 17), (16000, 640), (16000, 1000),
                                                (44100, 17), (44100, 1000)])
def test_a_session_gives_the_frames_of_a_render_whatever_the_chunks(runtime, alice, speech, rate, chunk_ms):
    reference = rendered(alice, speech[rate], runtime)
    _, frames = session_frames(runtime, alice, speech[rate], rate, chunk_ms)
    assert [f.index for f in frames] == list(range(len(reference)))
    assert all(f.speech and f.generation == 0 for f in frames)
    for ours, theirs in zip(frames, reference, strict=True):
        assert np.array_equal(ours.image, theirs), ours.index
    audio = np.concatenate([f.audio for f in frames])
    x16 = read_audio(speech[rate])
    assert np.array_equal(audio[: len(x16)], x16) and not audio[len(x16) :].any()  # the sent audio, resampled


@pytest.mark.parametrize("chunk_ms", [17, 1000])
def test_a_synctalk_layout_session_gives_the_frames_of_a_render(runtime, synctalk, speech, chunk_ms):
    reference = rendered(synctalk, speech[16000], runtime)
    _, frames = session_frames(runtime, synctalk, speech[16000], 16000, chunk_ms)
    assert all(np.array_equal(f.image, r) for f, r in zip(frames, reference, strict=True))


def test_audio_arriving_at_real_time_pace_changes_nothing(runtime, alice, speech):
    """The timeline stays contiguous while the client keeps up, so arrival times do not matter."""
    reference = rendered(alice, speech[16000], runtime)
    session, frames = session_frames(runtime, alice, speech[16000], 16000, 40, paced=True)
    assert all(np.array_equal(f.image, r) for f, r in zip(frames, reference, strict=True))
    assert session.stats().underrun_frames == 0
    parts = frames[-1].latency
    assert parts is not None and min(parts.lookahead, parts.queueing, parts.inference, parts.composite) >= 0


def gap_then_speech(runtime, alice, fade_frames):
    clock = FakeClock()
    with LiveSession(runtime, alice, options(fade_frames=fade_frames), clock=clock) as session:
        session.push(speech_like(0.4, seed=1))
        session.flush()
        clock.advance(1.01)
        session.push(speech_like(0.2, seed=2))
        session.flush()
        return take(session, 31)


def test_speech_after_idle_frames_fades_in_from_the_template(runtime, alice):
    faded, plain = gap_then_speech(runtime, alice, 3), gap_then_speech(runtime, alice, 0)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(faded[:10], plain[:10], strict=True))
    assert [np.array_equal(a.image, b.image) for a, b in zip(faded[26:], plain[26:], strict=True)] == \
        [False, False, False, True, True]


def test_gaps_are_idle_frames_and_the_next_speech_starts_at_the_next_frame(runtime, alice):
    clock = FakeClock()
    template = runtime.templates.open(alice.template_spec)
    with template, LiveSession(runtime, alice, options(fade_frames=3), clock=clock) as session:
        session.push(speech_like(0.4, seed=1))  # 10 frames at 25 fps
        assert session.flush() == 10  # the frame after the utterance's last
        assert session.flush() == 10  # none open: the end of the last one, again
        speech = take(session, 10)
        assert all(f.speech for f in speech)
        clock.advance(1.0)  # frames up to 24 have begun, with no audio: 3 fading, then idle
        gap = take(session, 15)
        assert [f.index for f in gap] == list(range(10, 25)) and not any(f.speech for f in gap)
        for f in gap[3:]:
            assert np.array_equal(f.image, template.frame(alice.template_index(f.index)).i420)
            assert not f.audio.any() and len(f.audio) == 640
        fading = [np.abs(f.image.astype(int) - template.frame(alice.template_index(f.index)).i420).sum()
                  for f in gap[:3]]
        assert fading[0] > fading[1] > fading[2] > 0  # the cross-fade to the template
        clock.advance(0.01)  # stream time 1.01 s: the next audio starts at frame 26
        session.push(speech_like(0.2, seed=2))
        session.flush()
        more = take(session, 6)
        assert [(f.index, f.speech) for f in more] == [(25, False)] + [(k, True) for k in range(26, 31)]
        assert session.stats().underruns == 0


def test_late_audio_mid_utterance_is_an_underrun_filled_with_silence(runtime, alice):
    clock = FakeClock()
    with LiveSession(runtime, alice, options(latency_ms=600, compute_ms=150), clock=clock) as session:
        session.push(speech_like(0.4, seed=1))  # no flush: the client will be late with the rest
        early = take(session, 5)  # the frames whose windows the audio so far completes
        assert all(not f.underrun for f in early)
        clock.advance(1.0)  # frame k may wait until 0.6 + k / 25 - 0.15 s: frames 5 to 13 get silence
        late = take(session, 9)
        assert [f.index for f in late] == list(range(5, 14)) and all(f.speech for f in late)
        assert [f.underrun for f in late] == [False] * 5 + [True] * 4  # frames 10 on: their own audio is late
        assert session.next_frame(timeout=0.3) is None  # frame 14 can still wait for its audio
        stats = session.stats()
        assert stats.underruns == 1 and stats.underrun_frames >= 1
        session.push(speech_like(0.4, seed=2))  # the client catches up: the same utterance goes on
        session.flush()
        assert take(session, 1)[0].index == late[-1].index + 1


def test_audio_past_the_buffer_ahead_is_refused_and_the_session_goes_on(runtime, alice):
    with LiveSession(runtime, alice, options(ahead_ms=1000), clock=FakeClock()) as session:
        session.push(speech_like(0.8, seed=1))
        with pytest.raises(Overrun, match=r"1\.3 s ahead of the stream, past the limit of 1 s"):
            session.push(speech_like(0.5, seed=2))
        assert 0.15 < session.room() < 0.25
        session.flush()
        assert [f.index for f in take(session, 20)] == list(range(20))


def test_bad_options_and_audio_are_refused(runtime, alice):
    with pytest.raises(InputError, match="audio rate must be 8000 to 48000 Hz, not 96000"):
        LiveSession(runtime, alice, options(rate=96000))
    with pytest.raises(InputError, match=r"latency 100 ms is below what alice needs: \d+ ms"):
        LiveSession(runtime, alice, options(latency_ms=100))
    with LiveSession(runtime, alice, options(), clock=FakeClock()) as session:
        with pytest.raises(InputError, match="NaN or infinite"):
            session.push(np.array([0.0, np.nan], np.float32))


def test_interrupt_fences_the_old_generation_and_the_next_frame_is_idle(runtime, alice):
    clock = FakeClock()
    with LiveSession(runtime, alice, options(), clock=clock) as session:
        session.push(speech_like(2.0, seed=1))
        session.flush()
        first = take(session, 5)
        assert [f.generation for f in first] == [0] * 5
        interruption = session.interrupt()
        assert (interruption.generation, interruption.first_frame) == (1, 5)
        clock.advance(0.3)  # frames up to 7 have begun
        session.push(speech_like(0.5, seed=2))  # new speech after the barge-in
        session.flush()
        after = take(session, 10)
        assert [f.index for f in after] == list(range(5, 15))  # the frame index goes on
        assert all(f.generation == 1 for f in after)
        assert [f.speech for f in after[:3]] == [False, False, False] and all(f.speech for f in after[3:])


def test_two_characters_interleaved_on_one_runtime_each_equal_their_own_render(runtime, alice, synctalk, speech,
                                                                               tmp_path):
    import soundfile as sf

    other = tmp_path / "other.wav"
    sf.write(other, speech_like(1.1, seed=8), 16000, subtype="FLOAT")
    expected = {"alice": rendered(alice, speech[16000], runtime), "synctalk": rendered(synctalk, other, runtime)}
    audio = {"alice": read_audio(speech[16000]), "synctalk": read_audio(other)}
    sessions = {"alice": LiveSession(runtime, alice, options(), clock=FakeClock()),
                "synctalk": LiveSession(runtime, synctalk, options(), clock=FakeClock())}
    try:
        got = {name: [] for name in sessions}
        for a in range(0, 20000, 1600):  # interleaved pushes and reads
            for name, session in sessions.items():
                session.push(audio[name][a : a + 1600])
                while (frame := session.next_frame(timeout=0.05)) is not None:
                    got[name].append(frame)
        for name, session in sessions.items():
            session.flush()
            got[name] += take(session, len(expected[name]) - len(got[name]))
            assert all(np.array_equal(f.image, r) for f, r in zip(got[name], expected[name], strict=True)), name
    finally:
        for session in sessions.values():
            session.close()


def test_micro_batched_frames_equal_unbatched_ones(runtime, alice, speech):
    """Two sessions of one character share UNet calls (frames of both in one call) and still give exactly the
    frames of a render, which batches nothing across streams."""
    reference = rendered(alice, speech[16000], runtime)
    x = read_audio(speech[16000])
    kw = dict(batch_frames=8, batch_wait_ms=100)
    with LiveSession(runtime, alice, options(**kw), clock=FakeClock()) as a, \
            LiveSession(runtime, alice, options(**kw), clock=FakeClock()) as b:
        assert a._scheduler is b._scheduler  # one scheduler per character and device
        for part in chunks(x, 3200):
            a.push(part)
            b.push(part)
        a.flush()
        b.flush()
        frames_a, frames_b = take(a, len(reference)), take(b, len(reference))
        assert a._scheduler.shared_calls > 0
    for fa, fb, r in zip(frames_a, frames_b, reference, strict=True):
        assert np.array_equal(fa.image, r) and np.array_equal(fb.image, r)
    with LiveSession(runtime, alice, options(micro_batching=False), clock=FakeClock()) as alone:
        alone.push(x)
        alone.flush()
        assert all(np.array_equal(f.image, r) for f, r in zip(take(alone, len(reference)), reference, strict=True))


def test_a_timeline_that_starts_with_its_first_audio_has_no_idle_frames_before_it(runtime, alice, speech):
    reference = rendered(alice, speech[16000], runtime)
    clock = FakeClock()
    with LiveSession(runtime, alice, options(start="first_audio"), clock=clock) as session:
        clock.advance(2.0)  # nothing happens until the first audio
        session.push(read_audio(speech[16000]))
        session.flush()
        frames = take(session, len(reference))
    assert frames[0].index == 0 and all(f.speech for f in frames)
    assert all(np.array_equal(f.image, r) for f, r in zip(frames, reference, strict=True))


def test_sessions_share_the_models_and_the_template(runtime, alice):
    with LiveSession(runtime, alice, options(), clock=FakeClock()) as a, \
            LiveSession(runtime, alice, options(), clock=FakeClock()) as b:
        for session in (a, b):
            session.push(speech_like(0.3, seed=1))
            session.flush()
            take(session, 5)
        assert len(runtime.registry.loaded()) == 1  # one encoder + UNet pair for both, leased
        assert len(runtime.templates._states) == 1  # one prepared template, read by both
        first, second = a._renderer.template.frame(0), b._renderer.template.frame(0)
        assert np.shares_memory(first.i420, second.i420)  # the same prepared pixels, not a copy per session


def test_frames_are_made_only_a_little_ahead_of_the_reader(runtime, alice):
    """Audio may queue 20 s ahead, but each made frame holds a whole picture: 2 s of them at most."""
    import time

    with LiveSession(runtime, alice, options(frames_ahead_ms=400), clock=FakeClock()) as session:
        session.push(speech_like(6.0, seed=2))
        session.flush()
        time.sleep(1.5)  # plenty of time to make all 150 frames, if nothing held it back
        assert len(session._out) <= 10
        assert [f.index for f in take(session, 150)] == list(range(150))


def test_frames_carry_their_audio_back_at_the_rate_asked_for(runtime, alice, speech):
    """A 24 kHz voice comes back at 24 kHz: each speech frame with exactly its stretch of the samples pushed
    (never the models' 16 kHz), the pictures those of the render; idle frames carry silence at that rate."""
    import soundfile as sf

    from lipsync_cli.audio.resample import StreamResampler

    x44, _ = sf.read(speech[44100], dtype="float32")
    x24 = StreamResampler(44100, target=24000).push(x44)  # a voice at 24 kHz
    path = speech[44100].with_name("speech_24000.wav")
    sf.write(path, x24, 24000, subtype="FLOAT")
    reference = rendered(alice, path, runtime)
    clock = FakeClock()
    with LiveSession(runtime, alice, options(rate=24000, return_rate=24000, start="first_audio"),
                     clock=clock) as session:
        assert session.return_rate == 24000
        for part in chunks(x24, 480):
            session.push(part)
        session.flush()
        speech_frames = take(session, len(reference))
        clock.advance(5.0)
        after = take(session, 5)
    frames = speech_frames + after
    for ours, theirs in zip(speech_frames, reference, strict=True):
        assert ours.speech and np.array_equal(ours.image, theirs), ours.index
    assert all(len(f.audio) == 960 for f in frames)  # 24000 / 25
    audio = np.concatenate([f.audio for f in speech_frames])
    assert np.array_equal(audio[: len(x24)], x24) and not audio[len(x24) :].any()
    assert all(not f.speech and not f.audio.any() for f in after)


def test_audio_comes_back_resampled_when_the_rates_differ(runtime, alice, speech):
    import soundfile as sf

    from lipsync_cli.audio.resample import StreamResampler

    x44, _ = sf.read(speech[44100], dtype="float32")
    whole = StreamResampler(44100, target=48000)
    expected = np.concatenate([whole.push(x44), whole.finish()])
    with LiveSession(runtime, alice, options(rate=44100, return_rate=48000, start="first_audio"),
                     clock=FakeClock()) as session:
        for part in chunks(x44, 441 * 3):
            session.push(part)
        session.flush()
        frames = take(session, expected_frames(alice, speech[44100]))
    assert all(len(f.audio) == 1920 for f in frames)  # 48000 / 25
    audio = np.concatenate([f.audio for f in frames])
    assert len(audio) >= len(expected) and np.array_equal(audio[: len(expected)], expected)


def test_an_utterance_keeps_its_rate_and_the_next_may_have_another(runtime, alice):
    with pytest.raises(InputError, match="audio rate must be 8000 to 48000 Hz, not 4000"):
        LiveSession(runtime, alice, options(return_rate=4000))
    with LiveSession(runtime, alice, options(return_rate=22050), clock=FakeClock()) as session:
        session.push(speech_like(0.3, rate=24000, seed=1), rate=24000)
        with pytest.raises(InputError, match="audio at 16000 Hz pushed into an utterance at 24000 Hz: flush it"):
            session.push(speech_like(0.1, seed=2))
        with pytest.raises(InputError, match="not 96000"):
            session.push(speech_like(0.1, seed=2), rate=96000)
        session.flush()
        session.push(speech_like(0.3, seed=2))  # at the session's own rate, 16 kHz
        session.flush()
        frames = take(session, 16)  # 8 frames each, the second right after the first
    assert [f.index for f in frames] == list(range(16)) and all(f.speech for f in frames)
    assert all(len(f.audio) == 882 for f in frames)  # 22050 / 25


def test_full_scale_s16_comes_back_bit_exact_at_its_own_rate(runtime, alice):
    """int16 pushed, the frames' audio at the same rate, and back to int16 with lipsync's one conversion: the
    very samples, -32768 and 32767 included (what every face sends back)."""
    from lipsync_cli.audio.pcm import float_to_s16, s16_to_float

    x = speech_like(0.6, rate=24000, seed=4)
    sent = np.rint(x / np.abs(x).max() * 32767).astype(np.int16)
    sent[np.argmin(sent)], sent[np.argmax(sent)] = -32768, 32767
    assert sent.min() == -32768 and sent.max() == 32767
    with LiveSession(runtime, alice, options(rate=24000, return_rate=24000, start="first_audio"),
                     clock=FakeClock()) as session:
        for part in chunks(sent, 480):
            session.push(part)
        session.flush()
        frames = take(session, 15)
    audio = np.concatenate([f.audio for f in frames])
    assert np.array_equal(audio[: len(sent)], s16_to_float(sent))
    assert np.array_equal(float_to_s16(audio[: len(sent)]), sent)
    stereo = np.stack([sent, sent], axis=1).ravel().astype("<i2").tobytes()
    assert np.array_equal(float_to_s16(s16_to_float(stereo, 2)), sent)


@pytest.mark.parametrize("latency_ms", [float("nan"), float("inf"), -40.0, 0.0])
def test_a_latency_that_is_not_a_positive_number_is_refused_by_the_session(runtime, alice, latency_ms):
    """Every face's session checks it (NaN compared below the minimum would have passed)."""
    from lipsync_cli.live.session import session_latency

    with pytest.raises(InputError, match=f"latency must be a positive number of milliseconds, not {latency_ms}") \
            as refused:
        LiveSession(runtime, alice, options(latency_ms=latency_ms), clock=FakeClock())
    assert refused.value.option == "latency_ms"
    with pytest.raises(InputError, match="latency must be a positive number"):
        session_latency(alice, options(latency_ms=latency_ms))


def test_flush_after_the_session_ended_the_utterance_gives_its_end(runtime, alice):
    """A voice that stops without a flush: the session ends the utterance after idle_after_ms of underrun;
    a flush that comes later (Pipecat's TTSStoppedFrame, seconds after the audio) still says where it ended."""
    clock = FakeClock()
    with LiveSession(runtime, alice, options(idle_after_ms=300), clock=clock) as session:
        assert session.flush() is None  # no utterance yet
        session.push(speech_like(0.3, seed=1))
        for _ in range(400):
            frame = session.next_frame(timeout=0.2)
            if frame is None:
                clock.advance(0.04)
            elif frame.index > 0 and not frame.speech:
                break
        assert frame is not None and not frame.speech and frame.index > 8  # speech, underrun, then idle
        end = session.flush()
        assert end == frame.index  # the first frame after the utterance's last
        assert session.flush() == end  # and again: nothing new was pushed
        session.interrupt()
        assert session.flush() is None  # nothing since the interrupt


def test_finished_utterances_are_dropped_and_the_frames_are_unchanged(runtime, alice):
    """An hours-long conversation keeps a bounded list of utterances (each push and frame scans it)."""
    n, seconds = 30, 0.12  # 3 frames each, back to back
    clock = FakeClock()
    pushed, ends, frames = [], [], []
    with LiveSession(runtime, alice, options(start="first_audio"), clock=clock) as session:
        for i in range(n):
            x = speech_like(seconds, seed=i + 1)
            pushed.append(x)
            session.push(x)
            ends.append(session.flush())
            frames += take(session, ends[-1] - len(frames))
            assert len(session._utterances) <= 2
        assert len(session._utterances) == 1
        assert session.flush() == ends[-1]  # the last one stays: its end is the timeline's
    assert ends == [3 * (i + 1) for i in range(n)]
    assert [f.index for f in frames] == list(range(3 * n)) and all(f.speech for f in frames)
    audio = np.concatenate([f.audio for f in frames])
    assert np.array_equal(audio, np.concatenate(pushed))
