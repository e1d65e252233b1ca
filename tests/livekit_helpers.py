"""For the LiveKit tests: the voice as `rtc.AudioFrame`s, a stand-in room whose local participant records
what `AvatarRunner` publishes (LiveKit's own audio and video streams read the published tracks, so what the
room would send is what they record), and a stand-in language model and voice for an `AgentSession`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc
from livekit.agents import APIConnectOptions, llm, tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

from lipsync_cli.audio.synthetic import speech_like


def voice(seconds: float, rate: int = 24_000, seed: int = 4) -> np.ndarray:
    """Speech-like int16 samples whose first sample is not 0 (so the published audio can be lined up)."""
    x = np.rint(speech_like(seconds, seed=seed, rate=rate) * 20_000).astype(np.int16)
    first = int(np.flatnonzero(x)[0])
    return x[first:]


def audio_frames(x: np.ndarray, rate: int = 24_000, ms: int = 20, channels: int = 1) -> list[rtc.AudioFrame]:
    size = rate * ms // 1000
    frames = []
    for a in range(0, len(x), size):
        part = x[a : a + size]
        data = np.repeat(part[:, None], channels, axis=1) if channels > 1 else part
        frames.append(rtc.AudioFrame(np.ascontiguousarray(data).tobytes(), rate, channels, len(part)))
    return frames


@dataclass
class Published:
    track: rtc.LocalTrack
    options: rtc.TrackPublishOptions
    frames: list = field(default_factory=list)  # (monotonic time, frame)


class StandInPublication:
    def __init__(self, track: rtc.LocalTrack) -> None:
        self.track, self.sid = track, f"TR_{track.name}"

    async def wait_for_subscription(self) -> None:
        return None


class StandInParticipant:
    def __init__(self, identity: str, audio_rate: int, audio_channels: int) -> None:
        self.identity = identity
        self.published: list[Published] = []
        self.track_publications: dict[str, StandInPublication] = {}
        self._rate, self._channels = audio_rate, audio_channels
        self._tasks: list[asyncio.Task] = []
        self._streams: list[rtc.AudioStream | rtc.VideoStream] = []

    async def publish_track(self, track: rtc.LocalTrack, options: rtc.TrackPublishOptions) -> StandInPublication:
        record = Published(track, options)
        self.published.append(record)
        if isinstance(track, rtc.LocalAudioTrack):
            stream: rtc.AudioStream | rtc.VideoStream = rtc.AudioStream.from_track(
                track=track, sample_rate=self._rate, num_channels=self._channels)
        else:
            stream = rtc.VideoStream(track)
        self._streams.append(stream)
        self._tasks.append(asyncio.create_task(self._record(stream, record)))
        publication = StandInPublication(track)
        self.track_publications[publication.sid] = publication
        return publication

    @staticmethod
    async def _record(stream, record: Published) -> None:
        async for event in stream:
            record.frames.append((time.monotonic(), event.frame))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for stream in self._streams:
            await stream.aclose()

    def of_kind(self, kind: type) -> Published:
        return next(p for p in self.published if isinstance(p.track, kind))

    def frames(self, kind: type) -> list:
        """The frames received so far on the published track of `kind` (none before it is published)."""
        return next((p.frames for p in self.published if isinstance(p.track, kind)), [])


class StandInRoom(rtc.EventEmitter):
    """What `AvatarRunner` uses of an `rtc.Room`: connected, events, a local participant that publishes."""

    def __init__(self, audio_rate: int = 24_000, audio_channels: int = 1) -> None:
        super().__init__()
        self.name = "stand-in"
        self.local_participant = StandInParticipant("agent", audio_rate, audio_channels)
        self.remote_participants: dict = {}

    def isconnected(self) -> bool:
        return True


def published_audio(room: StandInRoom) -> np.ndarray:
    frames = room.local_participant.of_kind(rtc.LocalAudioTrack).frames
    return np.concatenate([np.frombuffer(f.data, np.int16) for _, f in frames]) if frames else np.zeros(0, np.int16)


# -- an agent's other parts, standing in for real services --------------------------------------------------
class StandInLLM(llm.LLM):
    """Answers every turn with the same sentence."""

    def __init__(self, reply: str = "Hello, I am a lipsync character.") -> None:
        super().__init__()
        self.reply = reply

    def chat(self, *, chat_ctx, tools=None, conn_options=DEFAULT_API_CONNECT_OPTIONS, **_) -> llm.LLMStream:
        return _Reply(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _Reply(llm.LLMStream):
    async def _run(self) -> None:
        assert isinstance(self._llm, StandInLLM)
        for word in self._llm.reply.split(" "):
            self._event_ch.send_nowait(llm.ChatChunk(id=utils.shortuuid(),
                                                     delta=llm.ChoiceDelta(role="assistant", content=word + " ")))


class StandInTTS(tts.TTS):
    """Speech-like audio, 60 ms a character of text, at 24 kHz."""

    def __init__(self, rate: int = 24_000) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False), sample_rate=rate, num_channels=1)
        self.spoken: list[np.ndarray] = []

    def synthesize(self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
                   ) -> tts.ChunkedStream:
        return _Speech(tts=self, input_text=text, conn_options=conn_options)


class _Speech(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        assert isinstance(self._tts, StandInTTS)
        rate = self._tts.sample_rate
        x = voice(max(0.3, 0.06 * len(self._input_text.strip())), rate, seed=len(self._tts.spoken))
        self._tts.spoken.append(x)
        output_emitter.initialize(request_id=utils.shortuuid(), sample_rate=rate, num_channels=1,
                                  mime_type="audio/pcm")
        for a in range(0, len(x), rate // 50):
            output_emitter.push(x[a : a + rate // 50].tobytes())
        output_emitter.flush()

