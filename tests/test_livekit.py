"""lipsync in LiveKit Agents (design.md section 17), with livekit-agents' own classes: the generator's
contract (a fake clock, so nothing depends on the machine's speed), `AvatarRunner` publishing into a
stand-in room, an `AgentSession` speaking through `LipsyncAvatarSession`, and a real room where one is
configured."""

from __future__ import annotations

import asyncio
import math
import os

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarRunner, QueueAudioOutput

from lipsync_cli.characters.manifest import load_character
from lipsync_cli.errors import InputError
from lipsync_cli.integrations.livekit import LipsyncAvatarSession, LipsyncVideoGenerator
from lipsync_cli.live import LiveSession

from .conftest import ALICE
from .live_helpers import FakeClock, options
from .livekit_helpers import StandInLLM, StandInRoom, StandInTTS, audio_frames, published_audio, voice
from .models import character_with, synctalk_unet

FPS = 25


def generator(runtime, character=ALICE, clock=None, **kw) -> LipsyncVideoGenerator:
    return LipsyncVideoGenerator(str(character), runtime=runtime, device="cpu", clock=clock or FakeClock(), **kw)


class Reader:
    """What a generator yields, taken a few at a time (as `AvatarRunner` takes it)."""

    def __init__(self, gen: LipsyncVideoGenerator) -> None:
        self.stream = gen.__aiter__()

    async def take(self, count: int, timeout: float = 60.0) -> list:
        out: list = []

        async def take():
            while len(out) < count:
                out.append(await self.stream.__anext__())

        await asyncio.wait_for(take(), timeout)
        return out


def image(video: rtc.VideoFrame) -> np.ndarray:
    return np.frombuffer(video.data, np.uint8).reshape(video.height * 3 // 2, video.width)


def pcm(audio: rtc.AudioFrame) -> np.ndarray:
    return np.frombuffer(audio.data, np.int16)


def reference_frames(runtime, x: np.ndarray, chunk: int, idle_seconds: float, count: int, character=ALICE):
    """A LiveSession fed like the generator: idle for `idle_seconds` of its clock, then the voice, flushed."""
    clock = FakeClock()
    with LiveSession(runtime, load_character(character), options(rate=24000, return_rate=24000),
                     clock=clock) as session:
        clock.advance(idle_seconds)
        for a in range(0, len(x), chunk):
            session.push(x[a : a + chunk].astype(np.float32) / 32768, 24000)
        session.flush()
        frames = []
        while len(frames) < count:
            frame = session.next_frame(timeout=30)
            assert frame is not None
            frames.append(frame)
        return frames


@pytest.mark.parametrize("ms", [10, 20])
def test_the_generator_gives_each_speech_frame_then_its_audio_then_the_segment_end(runtime, ms):
    """N s of 24 kHz voice: idle frames (no audio) before it, ceil(N x fps) speech frames each followed by
    exactly its stretch of the voice, AudioSegmentEnd, then idle frames again; the pictures are a
    LiveSession's for the same audio."""
    seconds = 1.3
    x = voice(seconds)
    speech_frames = math.ceil(len(x) / 24000 * FPS)
    clock = FakeClock()

    async def run():
        gen = generator(runtime, clock=clock)
        try:
            assert gen.avatar_options().video_fps == FPS and gen.avatar_options().audio_sample_rate == 24000
            await gen.start()
            reader = Reader(gen)
            clock.advance(0.1)  # frames 0, 1 and 2 have begun: idle
            before = await reader.take(3)
            for frame in audio_frames(x, ms=ms):
                await gen.push_audio(frame)
            await gen.push_audio(AudioSegmentEnd())
            speech = await reader.take(2 * speech_frames + 1)
            clock.advance(2.0)  # past the speech's frames (they were made ahead of the clock)
            after = await reader.take(6)
            return before, speech, after
        finally:
            await gen.aclose()

    before, speech, after = asyncio.run(run())
    assert all(isinstance(v, rtc.VideoFrame) for v in before + after)
    pairs, end = speech[:-1], speech[-1]
    assert isinstance(end, AudioSegmentEnd)
    assert [type(v) for v in pairs] == [rtc.VideoFrame, rtc.AudioFrame] * speech_frames
    audio = [a for a in pairs if isinstance(a, rtc.AudioFrame)]
    assert all(a.sample_rate == 24000 and a.num_channels == 1 and a.samples_per_channel == 960 for a in audio)
    played = np.concatenate([pcm(a) for a in audio])
    assert np.array_equal(played[: len(x)], x) and not played[len(x) :].any()  # the very samples pushed
    videos = before + [v for v in pairs if isinstance(v, rtc.VideoFrame)]
    assert all((v.width, v.height, v.type) == (1280, 720, rtc.VideoBufferType.I420) for v in videos)
    reference = reference_frames(runtime, x, 24 * ms, 0.1, len(videos))
    assert [f.speech for f in reference] == [False] * 3 + [True] * speech_frames
    for ours, theirs in zip(videos, reference, strict=True):
        assert np.array_equal(image(ours), theirs.image), theirs.index


def test_clear_buffer_ends_the_segment_and_nothing_of_it_comes_after(runtime):
    clock = FakeClock()
    x = voice(3.0)

    async def run():
        gen = generator(runtime, clock=clock)
        reader = Reader(gen)
        try:
            for frame in audio_frames(x):
                await gen.push_audio(frame)
            await gen.push_audio(AudioSegmentEnd())
            first = await reader.take(20)  # 10 speech frames and their audio
            gen.clear_buffer()
            end = await reader.take(1)
            clock.advance(1.0)
            after = await reader.take(6)
            index_after = gen.last_frame.index if gen.last_frame else None
            y = voice(0.5, seed=9)  # the agent speaks again
            for frame in audio_frames(y):
                await gen.push_audio(frame)
            await gen.push_audio(AudioSegmentEnd())
            again = []
            while not again or not isinstance(again[-1], AudioSegmentEnd):
                again += await reader.take(1)
            return first, end, after, index_after, again, y
        finally:
            await gen.aclose()

    first, end, after, index_after, again, y = asyncio.run(run())
    assert [type(v) for v in first] == [rtc.VideoFrame, rtc.AudioFrame] * 10
    assert isinstance(end[0], AudioSegmentEnd)  # the runner reports playback finished, interrupted
    assert all(isinstance(v, rtc.VideoFrame) for v in after)  # idle: no audio, none of the old voice
    assert index_after is not None
    audio = np.concatenate([pcm(a) for a in again if isinstance(a, rtc.AudioFrame)])
    assert np.array_equal(audio[: len(y)], y)  # the next segment plays from its start, nothing old before it
    assert sum(isinstance(a, AudioSegmentEnd) for a in again) == 1


def test_segments_that_follow_each_other_end_each_after_its_own_last_frame(runtime):
    """Two answers sent back to back play with no idle frame between: each AudioSegmentEnd still comes right
    after its own segment's last frame (the frame says it is the last of its utterance)."""
    a, b = voice(0.5, seed=1), voice(0.4, seed=2)
    counts = [math.ceil(len(x) / 24000 * FPS) for x in (a, b)]

    async def run():
        gen = generator(runtime)
        reader = Reader(gen)
        try:
            for x in (a, b):
                for frame in audio_frames(x):
                    await gen.push_audio(frame)
                await gen.push_audio(AudioSegmentEnd())
            return await reader.take(2 * sum(counts) + 2)
        finally:
            await gen.aclose()

    out = asyncio.run(run())
    expected = [rtc.VideoFrame, rtc.AudioFrame] * counts[0] + [AudioSegmentEnd] + \
        [rtc.VideoFrame, rtc.AudioFrame] * counts[1] + [AudioSegmentEnd]
    assert [type(v) for v in out] == expected
    audio = np.concatenate([pcm(v) for v in out[: 2 * counts[0]] if isinstance(v, rtc.AudioFrame)])
    assert np.array_equal(audio[: len(a)], a) and not audio[len(a) :].any()


def test_a_segment_end_after_the_session_ended_the_utterance_itself_still_comes(runtime):
    """The voice stops without its AudioSegmentEnd; the session ends the utterance after a second of underrun.
    AudioSegmentEnd pushed while the fade after it is still going out ends the segment at once (the runner
    then reports playback finished), instead of never."""
    clock = FakeClock()

    async def run():
        gen = generator(runtime, clock=clock)
        reader = Reader(gen)
        ticking = True

        async def tick():  # the session's clock runs (faster than the wall's) while the reader takes
            while ticking:
                clock.advance(0.02)
                await asyncio.sleep(0.005)

        try:
            for frame in audio_frames(voice(0.3)):
                await gen.push_audio(frame)
            ticker = asyncio.ensure_future(tick())
            seen_speech = False
            for _ in range(1000):
                item = (await reader.take(1))[0]
                if isinstance(item, rtc.VideoFrame):
                    assert gen.last_frame is not None
                    if gen.last_frame.speech:
                        seen_speech = True
                    elif seen_speech:
                        break  # the first frame after the utterance: a fade to idle
            ticking = False
            await ticker
            assert not isinstance(item, AudioSegmentEnd) and seen_speech
            fade = gen.last_frame
            await gen.push_audio(AudioSegmentEnd())
            return fade, await reader.take(1), gen.session.flush()
        finally:
            await gen.aclose()

    fade, after, end = asyncio.run(run())
    assert fade is not None and not fade.speech and fade.index == end
    assert isinstance(after[0], AudioSegmentEnd)


def test_two_generators_of_different_characters_on_one_runtime_each_give_their_own_frames(runtime, tmp_path):
    import soundfile as sf

    from .live_helpers import rendered

    other = character_with(tmp_path, "st", unet=synctalk_unet())
    voices = {"alice": voice(1.0, seed=1), "st": voice(0.8, seed=2)}
    folders = {"alice": ALICE, "st": other}
    expected = {}
    for name, x in voices.items():
        path = tmp_path / f"{name}.wav"
        sf.write(path, x, 24000, subtype="PCM_16")
        expected[name] = rendered(load_character(folders[name]), path, runtime)

    async def run():
        gens = {name: generator(runtime, folders[name]) for name in voices}
        try:
            frames = {name: audio_frames(x) for name, x in voices.items()}
            for i in range(max(len(f) for f in frames.values())):  # interleaved, as two rooms would
                for name, gen in gens.items():
                    if i < len(frames[name]):
                        await gen.push_audio(frames[name][i])
            for gen in gens.values():
                await gen.push_audio(AudioSegmentEnd())
            return {name: await Reader(gen).take(2 * len(expected[name]) + 1) for name, gen in gens.items()}
        finally:
            for gen in gens.values():
                await gen.aclose()

    got = asyncio.run(run())
    for name, out in got.items():
        videos = [v for v in out if isinstance(v, rtc.VideoFrame)]
        assert len(videos) == len(expected[name]) and isinstance(out[-1], AudioSegmentEnd)
        assert all(np.array_equal(image(v), r) for v, r in zip(videos, expected[name], strict=True)), name
        audio = np.concatenate([pcm(a) for a in out if isinstance(a, rtc.AudioFrame)])
        assert np.array_equal(audio[: len(voices[name])], voices[name])


def test_stereo_and_other_rates_are_taken_and_bad_frames_refused(runtime):
    x = voice(0.4, rate=48000)

    async def run():
        gen = generator(runtime, sample_rate=48000, channels=2)
        reader = Reader(gen)
        try:
            assert gen.avatar_options().audio_channels == 2
            for frame in audio_frames(x, rate=48000, channels=2):
                await gen.push_audio(frame)
            await gen.push_audio(AudioSegmentEnd())
            count = math.ceil(len(x) / 48000 * FPS)
            out = await reader.take(2 * count + 1)
            with pytest.raises(InputError, match="1 or 2 channels, not 3"):
                await gen.push_audio(rtc.AudioFrame(bytes(6 * 480), 48000, 3, 480))
            with pytest.raises(InputError, match="not 96000"):
                await gen.push_audio(rtc.AudioFrame(bytes(2 * 960), 96000, 1, 960))
            return out
        finally:
            await gen.aclose()

    out = asyncio.run(run())
    audio = [a for a in out if isinstance(a, rtc.AudioFrame)]
    assert all(a.num_channels == 2 and a.sample_rate == 48000 for a in audio)
    stereo = np.concatenate([pcm(a) for a in audio]).reshape(-1, 2)
    assert np.array_equal(stereo[: len(x), 0], x) and np.array_equal(stereo[: len(x), 1], x)
    with pytest.raises(InputError, match="sample_rate must be 8000 to 48000 Hz, not 4000"):
        generator(runtime, sample_rate=4000)


def record_pushes(runner: AvatarRunner) -> list:
    """What the runner hands its AVSynchronizer, in order."""
    pushed: list = []
    sync = runner.av_sync
    push = sync.push

    async def recording(frame, timestamp=None):
        pushed.append(frame)
        await push(frame, timestamp)

    sync.push = recording  # type: ignore[method-assign]
    return pushed


def voice_in_room(room: StandInRoom, x: np.ndarray, seconds: float = 0.04) -> bool:
    """The published audio holds the voice's first frame (40 ms, handed to the audio source at once, so they
    come out together whatever the machine's speed), sample for sample, after the silence of the idle
    frames."""
    heard = published_audio(room)
    start = np.flatnonzero(heard)
    n = int(24000 * seconds)
    return bool(len(start)) and np.array_equal(heard[start[0] : start[0] + n], x[:n])


async def until(condition, timeout: float = 120.0) -> None:
    async def poll():
        while not condition():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


def test_avatar_runner_publishes_face_and_voice_to_the_room_and_reports_playback(runtime):
    """AvatarRunner from livekit-agents, with the generator, a QueueAudioOutput as the agent's side and a
    stand-in room that records the published tracks through LiveKit's own audio and video streams."""
    x = voice(1.2)
    events: list = []

    async def run():
        room = StandInRoom()
        gen = LipsyncVideoGenerator(str(ALICE), runtime=runtime, device="cpu")
        audio = QueueAudioOutput(sample_rate=24000, wait_playback_start=True)
        audio.on("playback_started", lambda ev: events.append(("started", ev)))
        audio.on("playback_finished", lambda ev: events.append(("finished", ev)))
        runner = AvatarRunner(room, audio_recv=audio, video_gen=gen, options=gen.avatar_options())
        pushed = record_pushes(runner)
        await gen.start()
        await runner.start()
        try:
            await until(lambda: len(pushed) >= 5)  # idle: the face is in the room before the first word
            for frame in audio_frames(x):
                await audio.capture_frame(frame)
            audio.flush()
            await until(lambda: len(events) >= 2)
            mark = len(pushed)
            for frame in audio_frames(voice(3.0, seed=5)):  # a second answer, interrupted while it plays
                await audio.capture_frame(frame)
            audio.flush()
            await until(lambda: len(events) >= 3)
            audio.clear_buffer()
            await until(lambda: len(events) >= 4)
            await until(lambda: len(room.local_participant.frames(rtc.LocalVideoTrack)) >= 30)
            return room, pushed, mark
        finally:
            await runner.aclose()
            await gen.aclose()
            await room.local_participant.aclose()

    room, pushed, mark = asyncio.run(run())
    kinds = [(type(p.track), p.options.source) for p in room.local_participant.published]
    assert kinds == [(rtc.LocalAudioTrack, rtc.TrackSource.SOURCE_MICROPHONE),
                     (rtc.LocalVideoTrack, rtc.TrackSource.SOURCE_CAMERA)]
    first_audio = next(i for i, f in enumerate(pushed) if isinstance(f, rtc.AudioFrame))
    assert first_audio >= 5 and all(isinstance(f, rtc.VideoFrame) for f in pushed[:first_audio])
    segment = [f for f in pushed[:mark] if isinstance(f, rtc.AudioFrame)]
    frames = math.ceil(len(x) / 24000 * FPS)
    assert len(segment) == frames
    played = np.concatenate([pcm(a) for a in segment])
    assert np.array_equal(played[: len(x)], x)
    # (AvatarRunner may report a fifth, "started": the audio frame it was handing over when the barge-in came
    # is counted after the runner has reset its position)
    assert [name for name, _ in events[:4]] == ["started", "finished", "started", "finished"]
    assert not events[1][1].interrupted and events[1][1].playback_position == pytest.approx(frames / FPS)
    assert events[3][1].interrupted
    video = room.local_participant.of_kind(rtc.LocalVideoTrack).frames
    assert all((f.width, f.height) == (1280, 720) for _, f in video)
    sound = room.local_participant.of_kind(rtc.LocalAudioTrack).frames
    assert all((f.sample_rate, f.num_channels) == (24000, 1) for _, f in sound)
    assert voice_in_room(room, x)


def test_an_agent_session_speaks_with_the_face_of_the_avatar_session(runtime):
    """An AgentSession (stand-in language model and voice, no room of its own) given a face by
    LipsyncAvatarSession: its reply is published by the avatar's runner and the speech ends when it has
    played."""
    from livekit.agents import Agent, AgentSession

    voice_out = StandInTTS()

    async def run():
        room = StandInRoom()
        session = AgentSession(llm=StandInLLM("Hi there."), tts=voice_out)
        avatar = LipsyncAvatarSession(str(ALICE), runtime=runtime, device="cpu")
        await avatar.start(session, room)
        try:
            assert avatar.audio is not None and session.output.audio is avatar.audio
            await session.start(agent=Agent(instructions="Answer briefly."))
            handle = session.generate_reply(user_input="Hello?")
            await asyncio.wait_for(handle.wait_for_playout(), 120)
            assert handle.done() and not handle.interrupted
            await asyncio.sleep(0.2)
            return room
        finally:
            await session.aclose()
            await avatar.aclose()
            await room.local_participant.aclose()

    room = asyncio.run(run())
    assert len(voice_out.spoken) == 1
    assert voice_in_room(room, voice_out.spoken[0])
    assert len(room.local_participant.of_kind(rtc.LocalVideoTrack).frames) > 0


def test_a_failing_session_is_logged_raised_to_the_runner_and_the_face_stays(runtime, tmp_path, caplog):
    """A UNet that gives NaN breaks the live session at its first speech frame: the generator logs it, ends
    the segment (the agent hears playback finished), keeps the video going in a new session, and the
    runner's audio task raises it at the next push (AvatarRunner.wait_for_complete raises it)."""
    from .models import load, nan_output

    broken = character_with(tmp_path, "broken", unet=nan_output(load("unet")))
    events: list = []

    async def run():
        room = StandInRoom()
        gen = LipsyncVideoGenerator(str(broken), runtime=runtime, device="cpu")
        audio = QueueAudioOutput(sample_rate=24000, wait_playback_start=True)
        audio.on("playback_finished", lambda ev: events.append(ev))
        runner = AvatarRunner(room, audio_recv=audio, video_gen=gen, options=gen.avatar_options())
        await gen.start()
        await runner.start()
        video = room.local_participant
        try:
            for frame in audio_frames(voice(0.6)):
                await audio.capture_frame(frame)
            audio.flush()
            await until(lambda: len(events) >= 1)
            at_failure = len(video.frames(rtc.LocalVideoTrack))
            await until(lambda: len(video.frames(rtc.LocalVideoTrack)) >= at_failure + 25)
            await audio.capture_frame(audio_frames(voice(0.1))[0])  # the next word: the runner hears it
            with pytest.raises(Exception, match="produced NaN") as raised:
                await asyncio.wait_for(runner.wait_for_complete(), 60)
            frames_then = len(video.frames(rtc.LocalVideoTrack))
            await until(lambda: len(video.frames(rtc.LocalVideoTrack)) >= frames_then + 10)
            return raised.value
        finally:
            await runner.aclose()
            await gen.aclose()
            await room.local_participant.aclose()

    with caplog.at_level("ERROR", logger="lipsync.livekit"):
        error = asyncio.run(run())
    assert "model_best.onnx" in str(error)
    assert any("live session for alice failed" in r.getMessage() and "produced NaN" in r.getMessage()
               for r in caplog.records)
    assert len(events) == 1 and not events[0].interrupted


REAL_ROOM = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")


@pytest.mark.skipif(not all(os.environ.get(name) for name in REAL_ROOM),
                    reason="a real LiveKit room needs LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET "
                           "(no LiveKit server can run on this machine)")
def test_in_a_real_room_a_second_participant_sees_the_face_and_hears_the_voice(runtime):
    """The agent (stand-in language model and voice; its turn is started by the test, so no speech-to-text
    is involved) with LipsyncAvatarSession in a real room; a second participant subscribes and receives
    the character's video and the voice."""
    import uuid

    from livekit import api
    from livekit.agents import Agent, AgentSession
    from livekit.agents.testing import fake_job_context
    from livekit.agents.voice.room_io import RoomOptions

    url, key, secret = (os.environ[name] for name in REAL_ROOM)
    room_name = f"lipsync-test-{uuid.uuid4().hex[:8]}"

    def token(identity: str) -> str:
        grants = api.VideoGrants(room_join=True, room=room_name)
        return api.AccessToken(key, secret).with_identity(identity).with_grants(grants).to_jwt()

    voice_out = StandInTTS()
    received: dict[str, list] = {"video": [], "audio": []}

    async def run():
        viewer, agent_room = rtc.Room(), rtc.Room()
        readers: list[asyncio.Task] = []

        async def read(stream, kind):
            async for event in stream:
                received[kind].append(event.frame)

        def subscribed(track, publication, participant):
            if track.kind == rtc.TrackKind.KIND_VIDEO:
                readers.append(asyncio.create_task(read(rtc.VideoStream(track), "video")))
            elif track.kind == rtc.TrackKind.KIND_AUDIO:
                stream = rtc.AudioStream.from_track(track=track, sample_rate=24000, num_channels=1)
                readers.append(asyncio.create_task(read(stream, "audio")))

        viewer.on("track_subscribed", subscribed)
        await viewer.connect(url, token("viewer"))
        await agent_room.connect(url, token("agent"))
        session = AgentSession(llm=StandInLLM("Hello from a real room."), tts=voice_out)
        avatar = LipsyncAvatarSession(str(ALICE), runtime=runtime, device="cpu")
        try:
            with fake_job_context(room=agent_room):
                await avatar.start(session, agent_room)
                await session.start(agent=Agent(instructions="Answer briefly."), room=agent_room,
                                    room_options=RoomOptions(audio_input=False))
                await until(lambda: len(received["video"]) >= 10, 60)  # the face before the first word
                handle = session.generate_reply(user_input="Hello?")
                await asyncio.wait_for(handle.wait_for_playout(), 120)
                await asyncio.sleep(0.5)
        finally:
            await session.aclose()
            await avatar.aclose()
            for task in readers:
                task.cancel()
            await agent_room.disconnect()
            await viewer.disconnect()

    asyncio.run(run())
    assert voice_out.spoken and not any(f.width * 9 != f.height * 16 for f in received["video"])
    heard = np.concatenate([np.frombuffer(f.data, np.int16) for f in received["audio"]])
    assert np.abs(heard).max() > 1000  # the voice came through (Opus: not sample for sample)


def test_the_avatar_session_tells_the_agent_session_when_the_face_broke(runtime, tmp_path, caplog):
    """The first answer breaks the live session (a UNet giving NaN): the answer still finishes playing for
    the agent; at the next answer the runner raises it and the agent session gets an `error` event."""
    from livekit.agents import Agent, AgentSession

    from .models import load, nan_output

    broken = character_with(tmp_path, "broken", unet=nan_output(load("unet")))
    errors: list = []

    async def run():
        room = StandInRoom()
        session = AgentSession(llm=StandInLLM("Hi there."), tts=StandInTTS())
        session.on("error", errors.append)
        avatar = LipsyncAvatarSession(str(broken), runtime=runtime, device="cpu")
        await avatar.start(session, room)
        try:
            await session.start(agent=Agent(instructions="Answer briefly."))
            first = session.generate_reply(user_input="Hello?")
            await asyncio.wait_for(first.wait_for_playout(), 120)
            session.generate_reply(user_input="Are you there?")
            await until(lambda: bool(errors), 120)
            await until(lambda: len(room.local_participant.frames(rtc.LocalVideoTrack)) >= 25)
        finally:
            await session.aclose()
            await avatar.aclose()
            await room.local_participant.aclose()

    with caplog.at_level("ERROR", logger="lipsync.livekit"):
        asyncio.run(run())
    assert errors[0].source.character_name == str(broken) and "produced NaN" in str(errors[0].error)
