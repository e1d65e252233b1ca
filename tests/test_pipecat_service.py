"""LipsyncVideoService in a real Pipecat pipeline (Pipecat's own `run_test`: a PipelineWorker between a source and
a sink), with alice's real models: the frames of a reply against a LiveSession's, each followed by exactly its
stretch of the voice at the voice's rate; idle frames around it; the held TTSStoppedFrame; interruption; EndFrame
and CancelFrame; a broken model's ErrorFrame and the voice passing through."""

from __future__ import annotations

import asyncio
import math

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.pipecat
pytest.importorskip("pipecat", reason="the Pipecat extra is not installed: pip install 'lipsync-cli[pipecat]'")

from pipecat.frames.frames import (  # noqa: E402
    CancelFrame,
    ErrorFrame,
    InterruptionFrame,
    MetricsFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData  # noqa: E402
from pipecat.pipeline.worker import PipelineParams  # noqa: E402
from pipecat.tests.utils import SleepFrame, run_test  # noqa: E402

from lipsync_cli.audio.synthetic import speech_like  # noqa: E402
from lipsync_cli.integrations.pipecat import LipsyncFrameLatencyData, LipsyncVideoService, video_out_params  # noqa: E402
from lipsync_cli.live import LiveSession  # noqa: E402

from .live_helpers import FakeClock, options, take  # noqa: E402
from .models import character_with, load, nan_output  # noqa: E402

FPS = 25


def voice(seconds: float, rate: int, seed: int = 3, channels: int = 1) -> bytes:
    x = np.clip(speech_like(seconds, rate=rate, seed=seed), -1, 1)
    pcm = np.rint(x * 32767).astype("<i2")
    if channels == 2:
        pcm = np.stack([pcm, pcm], axis=1).ravel()
    return pcm.tobytes()


def reply(pcm: bytes, rate: int, context: str, channels: int = 1, chunk_ms: int = 200) -> list:
    step = rate * chunk_ms // 1000 * 2 * channels
    return [TTSStartedFrame(context_id=context)] + [
        TTSAudioRawFrame(audio=pcm[i : i + step], sample_rate=rate, num_channels=channels, context_id=context)
        for i in range(0, len(pcm), step)] + [TTSStoppedFrame(context_id=context)]


def run(service, frames, rate=24000, metrics=False, end=True):
    params = PipelineParams(audio_out_sample_rate=rate, enable_metrics=metrics)
    return asyncio.run(run_test(service, frames_to_send=frames, pipeline_params=params, start_timeout=20,
                                send_end_frame=end))


def pairs(down):
    """(index, image frame, audio frame) for every output frame, in order, and the other frames by position."""
    out, others = [], []
    for i, f in enumerate(down):
        if isinstance(f, OutputImageRawFrame):
            audio = down[i + 1]
            assert isinstance(audio, OutputAudioRawFrame), f"an image followed by {audio}"
            out.append((round(f.pts * FPS / 1e9), f, audio, i))
        elif not isinstance(f, (OutputAudioRawFrame, MetricsFrame)):
            others.append((i, f))
    return out, others


def is_speech(audio) -> bool:
    return isinstance(audio, TTSAudioRawFrame)


@pytest.fixture
def service(runtime):
    svc = LipsyncVideoService("alice", runtime=runtime, device="cpu")
    yield svc


def test_a_reply_gives_a_live_sessions_frames_each_with_its_stretch_of_the_voice(runtime, service, alice):
    seconds, rate = 1.13, 24000
    pcm = voice(seconds, rate)
    down, up = run(service, [SleepFrame(0.4), *reply(pcm, rate, "r1"), SleepFrame(2.6)], metrics=True)
    frames, others = pairs(down)
    assert [k for k, *_ in frames] == list(range(frames[0][0], frames[0][0] + len(frames)))  # one timeline
    speech = [(k, img, aud, i) for k, img, aud, i in frames if is_speech(aud)]
    n = math.ceil(seconds * FPS)
    assert len(speech) == n
    first = speech[0][0]
    assert [k for k, *_ in speech] == list(range(first, first + n))  # one run of speech ...
    assert not is_speech(frames[0][2]) and frames[0][0] < first  # ... with idle frames before it ...
    assert sum(1 for k, *_ in frames if k >= first + n) >= 10  # ... and after
    for _, img, aud, _ in frames:
        assert img.size == (alice.video.width, alice.video.height) and img.format == "RGB" and img.sync_with_audio
        assert aud.sample_rate == rate and aud.num_channels == 1 and len(aud.audio) == 2 * rate // FPS
        if not is_speech(aud):
            assert not any(aud.audio)
    # the voice comes back at its own rate, sample for sample, each frame with exactly its stretch
    per = 2 * rate // FPS
    padded = pcm + bytes(n * per - len(pcm))
    for j, (_, _, aud, _) in enumerate(speech):
        assert aud.audio == padded[j * per : (j + 1) * per], j
        assert aud.context_id == "r1"
    # the images are a live session's for that audio, starting at the same frame
    clock = FakeClock()
    with LiveSession(runtime, alice, options(rate=rate, return_rate=rate), clock=clock) as session:
        clock.advance((first - 0.5) / FPS)  # the reply starts at the next frame: `first`
        session.push(np.frombuffer(pcm, "<i2"))
        session.flush()
        reference = take(session, first + n)[first:]
    for (k, img, _, _), ref in zip(speech, reference, strict=True):
        assert ref.index == k and ref.speech
        ours = np.frombuffer(img.image, np.uint8).reshape(alice.video.height, alice.video.width, 3)
        theirs = cv2.cvtColor(ref.image, cv2.COLOR_YUV2RGB_I420)
        assert np.abs(ours.astype(int) - theirs).max() <= 1, k
    # TTSStoppedFrame after the last speech frame's audio, TTSStartedFrame passed on before the first
    positions = {type(f).__name__: i for i, f in others}
    assert speech[-1][3] + 1 < positions["TTSStoppedFrame"] < speech[-1][3] + 4 + 2 * 3
    assert positions["TTSStartedFrame"] < speech[0][3]
    # time to first frame as Pipecat's TTFB, and each speech frame's latency parts
    metrics = [d for f in down if isinstance(f, MetricsFrame) for d in f.data]
    ttfb = [d for d in metrics if isinstance(d, TTFBMetricsData) and d.processor == service.name and d.value > 0]
    assert len(ttfb) == 1 and 0 < ttfb[0].value < 30
    parts = [d for d in metrics if isinstance(d, LipsyncFrameLatencyData)]
    assert len(parts) == n and all(p.total == pytest.approx(p.lookahead + p.queueing + p.inference + p.composite)
                                   for p in parts)
    assert not [f for f in up if isinstance(f, ErrorFrame)]


@pytest.mark.parametrize(("rate", "channels", "pipeline_rate"), [(48000, 2, 48000), (16000, 1, 24000)])
def test_any_rate_and_stereo_come_back_at_the_pipelines_rate(service, rate, channels, pipeline_rate):
    seconds = 0.6
    pcm = voice(seconds, rate, channels=channels)
    down, up = run(service, [SleepFrame(0.3), *reply(pcm, rate, "r", channels=channels)], rate=pipeline_rate)
    frames, _ = pairs(down)
    speech = [aud for *_, aud, _ in frames if is_speech(aud)]
    assert len(speech) == math.ceil(seconds * FPS)
    assert all(a.sample_rate == pipeline_rate and a.num_channels == 1 for a in speech)
    got = np.frombuffer(b"".join(a.audio for a in speech), "<i2")
    mono = np.frombuffer(pcm, "<i2").reshape(-1, channels)[:, 0]
    if rate == pipeline_rate:  # the same samples (both channels were equal)
        assert np.array_equal(got[: len(mono)], mono)
    else:  # resampled to the pipeline's rate, never the models' 16 kHz
        assert abs(len(got) - len(mono) * pipeline_rate / rate) <= pipeline_rate / FPS
        assert np.abs(got).max() > 1000
    assert not [f for f in up if isinstance(f, ErrorFrame)]


def test_an_interruption_drops_the_rest_of_the_reply_and_passes_on(service):
    rate = 24000
    frames = [SleepFrame(0.3), *reply(voice(3.0, rate), rate, "long")[:-1], SleepFrame(1.2), InterruptionFrame(),
              SleepFrame(0.8)]
    down, _ = run(service, frames)
    out, others = pairs(down)
    at = next(i for i, f in others if isinstance(f, InterruptionFrame))
    before = [aud for *_, aud, i in out if i < at]
    after = [(k, aud) for k, _, aud, i in out if i > at]
    assert sum(map(is_speech, before)) >= 5  # it was speaking
    assert sum(map(is_speech, before)) < math.ceil(3.0 * FPS)
    assert after and not any(is_speech(aud) for _, aud in after)  # nothing of the old generation: all idle
    assert len(after) >= 10  # and the face goes on


def test_end_frame_lets_the_reply_finish_and_cancel_frame_does_not(runtime):
    rate, seconds = 24000, 1.5
    pcm = voice(seconds, rate)
    ended = LipsyncVideoService("alice", runtime=runtime, device="cpu")
    down, _ = run(ended, [SleepFrame(0.3), *reply(pcm, rate, "e")[:-1]])  # EndFrame right after the audio
    assert sum(is_speech(aud) for *_, aud, _ in pairs(down)[0]) == math.ceil(seconds * FPS)

    cancelled = LipsyncVideoService("alice", runtime=runtime, device="cpu")
    down, _ = run(cancelled, [SleepFrame(0.3), *reply(pcm, rate, "c")[:-1], SleepFrame(0.3), CancelFrame()],
                  end=False)
    frames, others = pairs(down)
    assert isinstance(others[-1][1], CancelFrame)
    assert not [i for *_, i in frames if i > others[-1][0]]  # nothing after the cancel
    assert sum(is_speech(aud) for *_, aud, _ in frames) < math.ceil(seconds * FPS)


def test_a_broken_model_is_an_error_frame_and_the_voice_passes_through(runtime, tmp_path):
    folder = character_with(tmp_path, unet=nan_output(load("unet")))
    service = LipsyncVideoService(str(folder), runtime=runtime, device="cpu")
    rate = 24000
    first, second = voice(0.8, rate, seed=1), voice(0.5, rate, seed=2)
    down, up = run(service, [SleepFrame(0.3), *reply(first, rate, "a"), SleepFrame(0.8),
                             *reply(second, rate, "b"), SleepFrame(0.2)])
    errors = [f for f in up if isinstance(f, ErrorFrame)]
    assert len(errors) == 1 and "NaN" in errors[0].error and not errors[0].fatal
    passed = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert b"".join(f.audio for f in passed if f.context_id == "a") == first  # the reply not shown, whole
    assert b"".join(f.audio for f in passed if f.context_id == "b") == second  # and the next, unchanged
    assert isinstance(down[-1], TTSStoppedFrame)  # the pipeline went on to its end


def test_a_reply_whose_stop_comes_late_still_ends_and_the_next_is_its_own(service):
    """TTSStoppedFrame seconds after a short reply's audio (websocket TTS services send it after a timeout): the
    session has ended the utterance itself meanwhile; the reply still ends there, so the next reply's frames
    carry its own context and its own time to first frame."""
    rate = 24000
    first, second = reply(voice(0.4, rate, seed=1), rate, "r1"), reply(voice(0.4, rate, seed=2), rate, "r2")
    down, up = run(service, [SleepFrame(0.3), *first[:-1], SleepFrame(2.8), first[-1], SleepFrame(0.2),
                             *second, SleepFrame(1.0)], metrics=True)
    frames, _ = pairs(down)
    contexts = [aud.context_id for *_, aud, _ in frames if is_speech(aud)]
    assert contexts[0] == "r1" and "r2" in contexts
    switch = contexts.index("r2")
    assert set(contexts[:switch]) == {"r1"} and set(contexts[switch:]) == {"r2"}
    assert len(contexts) - switch == math.ceil(0.4 * FPS)  # every frame of the second reply is its own
    metrics = [d for f in down if isinstance(f, MetricsFrame) for d in f.data]
    ttfb = [d for d in metrics if isinstance(d, TTFBMetricsData) and d.processor == service.name and d.value > 0]
    assert len(ttfb) == 2
    assert not [f for f in up if isinstance(f, ErrorFrame)]


def test_video_out_params_describe_the_characters_frames(runtime, alice):
    params = video_out_params("alice", runtime)
    assert params == {"video_out_enabled": True, "video_out_is_live": False, "video_out_width": alice.video.width,
                      "video_out_height": alice.video.height, "video_out_framerate": 25}
    assert video_out_params("alice") == params
    from pipecat.transports.base_transport import TransportParams

    assert TransportParams(audio_out_enabled=True, **params).video_out_width == alice.video.width
