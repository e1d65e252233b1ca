"""`LipsyncVideoGenerator`: a lipsync character as LiveKit's `VideoGenerator` (design.md section 17).

`AvatarRunner` pushes the agent's voice in (`push_audio`: `rtc.AudioFrame`s, `AudioSegmentEnd` after each
segment; `clear_buffer` on barge-in) and iterates the generator, handing what it yields to an
`AVSynchronizer`: for every frame of the live session an `rtc.VideoFrame`, and for a speech frame its own
stretch of the voice right after it; `AudioSegmentEnd` once a segment's last speech frame is out (the runner
then reports playback finished). Idle frames carry no audio, so the room hears nothing between turns.

The live session runs on the wall clock from the moment the generator starts, making an idle frame as each
frame's time begins; the runner takes frames at its own pace, so an idle frame that comes later than
`stale` after its time is left out (never a speech frame, nor the fade after one): the face catches up
after a stall instead of staying behind for good. The session's threads do the ONNX work; the event loop
only waits for them (one `next_frame` call on a worker thread at a time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from fractions import Fraction
from typing import Any

from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarOptions, VideoGenerator

from lipsync_cli.compositing.blend import Blend
from lipsync_cli.errors import InputError
from lipsync_cli.integrations.livekit.media import audio_frame, mono, video_frame
from lipsync_cli.live import LiveFrame, LiveOptions, LiveSession
from lipsync_cli.live.frames import MAX_RATE, MIN_RATE
from lipsync_cli.models.devices import parse_device
from lipsync_cli.render.planning import resolve_character
from lipsync_cli.runtime import Runtime, RuntimeConfig

log = logging.getLogger("lipsync.livekit")

Item = rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd
Taken = tuple[LiveFrame, rtc.VideoFrame, rtc.AudioFrame | None]
_TAKE_S = 0.25  # one wait for a frame on the worker thread
_ROOM_POLL_S = 0.02  # how often a push waits for the session's buffer ahead to have room
_RETRY_S = 2.0  # after a failure, how often a new session is tried while the last picture holds the room


class LipsyncVideoGenerator(VideoGenerator):
    """A character speaking what `push_audio` gives it, as LiveKit video and audio frames.

    `sample_rate` and `channels` are those of the audio it yields, which `AvatarRunner`'s audio source needs
    (`avatar_options()` gives the runner's options): a voice pushed at that rate comes back as the very same
    samples; one at another rate comes back resampled to it. The models hear the voice as 16 kHz mono.
    """

    def __init__(self, character: str, *, runtime: Runtime | None = None, device: str = "auto",
                 latency_ms: float | None = None, blend: Blend = "match", sample_rate: int = 24_000,
                 channels: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if not MIN_RATE <= sample_rate <= MAX_RATE:
            raise InputError(f"sample_rate must be {MIN_RATE} to {MAX_RATE} Hz, not {sample_rate}",
                             option="sample_rate")
        if channels not in (1, 2):
            raise InputError(f"channels must be 1 or 2, not {channels}", option="channels")
        self._own_runtime = runtime is None
        self.runtime = runtime if runtime is not None else Runtime(RuntimeConfig(devices="auto"))
        try:
            self.character = resolve_character(self.runtime, character)
        except BaseException:
            self._close_runtime()
            raise
        self.options = LiveOptions(rate=sample_rate, return_rate=sample_rate, latency_ms=latency_ms, blend=blend,
                                   device=parse_device(device))
        self.sample_rate, self.channels, self.clock = sample_rate, channels, clock
        self.fps: Fraction = self.character.fps
        self.stale = max(0.2, 4 / float(self.fps))
        self._session: LiveSession | None = None
        self._opening: asyncio.Lock | None = None
        self._wake: asyncio.Event | None = None
        self._take: asyncio.Future[Taken | None] | None = None
        self._generation = 0  # +1 at each clear_buffer: a push waiting for room from before it is dropped
        self._speaking = False  # audio pushed since the last AudioSegmentEnd
        self._ends: deque[int] = deque()  # where each segment ended by push_audio ends (the frame after its
        # last, as the session's flush says), until its AudioSegmentEnd is yielded
        self._passed = 0  # the index after the last frame taken from the session
        self._open_segments = 0  # segments with audio whose AudioSegmentEnd has not been yielded
        self._end_now = False  # yield an AudioSegmentEnd before the next frame (clear_buffer, failure)
        self._failure: BaseException | None = None  # for the next push_audio to raise
        self._raised: BaseException | None = None
        self._closed = False
        self.last_frame: LiveFrame | None = None  # the frame whose picture was yielded last

    # -- what the runner needs ------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.character.video.width + self.character.video.width % 2

    @property
    def height(self) -> int:
        return self.character.video.height + self.character.video.height % 2

    def avatar_options(self) -> AvatarOptions:
        """`AvatarRunner`'s options for this generator: the character's size and fps, the audio it yields."""
        return AvatarOptions(video_width=self.width, video_height=self.height, video_fps=float(self.fps),
                             audio_sample_rate=self.sample_rate, audio_channels=self.channels)

    @property
    def session(self) -> LiveSession | None:
        """The live session behind the frames (None until `start`)."""
        return self._session

    async def start(self) -> None:
        """Load the models and open the live session (on a worker thread); from now on the character is idle
        on the session's timeline. `push_audio` and iterating start it too."""
        await self._ready()

    async def _ready(self) -> LiveSession:
        if self._closed:
            raise RuntimeError("the video generator is closed")
        if self._opening is None:
            self._opening, self._wake = asyncio.Lock(), asyncio.Event()
        async with self._opening:
            if self._session is None:
                self._session = await asyncio.to_thread(self._open)
        return self._session

    def _open(self) -> LiveSession:
        return LiveSession(self.runtime, self.character, self.options, clock=self.clock)

    # -- VideoGenerator -------------------------------------------------------------------------------
    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        """The voice, frame by frame, onto the live session; `AudioSegmentEnd` ends the utterance. Waits while
        the session holds as much audio ahead as it buffers (a TTS faster than real time)."""
        session = await self._ready()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        if isinstance(frame, AudioSegmentEnd):
            if self._speaking:
                self._speaking = False
                end = self._call(session.flush)
                self._ends.append(end if end is not None else self._passed)
                if self._wake is not None:  # its frames may all be out already
                    self._wake.set()
            return
        samples, rate = mono(frame)
        if not len(samples):
            return
        generation = self._generation
        while session.room() < len(samples) / rate:
            await asyncio.sleep(_ROOM_POLL_S)
            if generation != self._generation or session is not self._session:
                return  # cleared (or the session replaced) meanwhile: this audio belongs to the old segment
        self._call(session.push, samples, rate)
        if not self._speaking:
            self._speaking = True
            self._open_segments += 1

    def _call(self, fn: Callable, *args: object) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # bad audio, or the session broke (the iterator then replaces it)
            self._raised = exc  # raised here already: the iterator does not leave it for the next push
            raise

    def clear_buffer(self) -> None:
        """Barge-in: nothing of the queued voice comes out from now on; the next frame is idle, after an
        `AudioSegmentEnd` if a segment was playing."""
        self._generation += 1
        if self._session is not None:
            try:
                self._session.interrupt()
            except Exception:  # a broken session: the iterator replaces it and reports the failure
                log.debug("interrupt on a failed live session", exc_info=True)
        if self._open_segments:
            self._end_segment_now()
        self._speaking, self._open_segments = False, 0
        self._ends.clear()

    def _end_segment_now(self) -> None:
        self._end_now = True
        if self._wake is not None:
            self._wake.set()

    def __aiter__(self) -> AsyncIterator[Item]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Item]:
        await self._ready()
        after_speech = 1 << 30  # frames since the last speech frame
        last_video: rtc.VideoFrame | None = None
        while not self._closed:
            if self._end_now:
                self._end_now = False
                yield AudioSegmentEnd()
                continue
            if self._ends and self._passed >= self._ends[0]:  # the segment's last frame is out
                self._ends.popleft()
                self._open_segments = max(0, self._open_segments - 1)
                yield AudioSegmentEnd()
                continue
            try:
                taken = await self._next()
            except Exception as exc:
                async for item in self._recover(exc, last_video):
                    yield item
                continue
            session = self._session
            if taken is None or session is None:
                continue
            frame, video, audio = taken
            self._passed = max(self._passed, frame.index + 1)
            if frame.generation != session.generation:
                continue  # taken just before a clear_buffer
            if frame.speech:
                after_speech = 0
            else:
                after_speech += 1
                late = self.clock() - (session.t0 + frame.pts)
                if after_speech > session.options.fade_frames and late > self.stale:
                    continue
            last_video, self.last_frame = video, frame
            yield video
            if frame.speech and audio is not None:
                yield audio

    async def _next(self) -> Taken | None:
        """The session's next frame, converted on the worker thread; None when `_wake` (a segment to end now)
        or the wait's timeout came first. A take that is still running is kept for the next call."""
        assert self._wake is not None
        session = self._session
        assert session is not None
        if self._take is None:
            self._take = asyncio.ensure_future(asyncio.to_thread(self._take_one, session))
        waker = asyncio.ensure_future(self._wake.wait())
        either: set[asyncio.Future[Any]] = {self._take, waker}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
        self._wake.clear()
        if not self._take.done():
            return None
        take, self._take = self._take, None
        return take.result()

    def _take_one(self, session: LiveSession) -> Taken | None:
        frame = session.next_frame(timeout=_TAKE_S)
        if frame is None:
            return None
        return frame, video_frame(frame), audio_frame(frame, session.return_rate, self.channels) \
            if frame.speech else None

    async def _recover(self, exc: BaseException, last_video: rtc.VideoFrame | None) -> AsyncIterator[Item]:
        """The session broke: log it, end the segment that was playing (the agent hears playback finished),
        keep the room's video going with the last picture while a new session opens, and leave the failure
        for `push_audio` to raise to the runner."""
        log.error("lipsync's live session for %s failed: %s; the character goes on idle in a new session",
                  self.character.name, exc, exc_info=exc)
        if exc is not self._raised:
            self._failure = exc
        broken = self._session  # stays in place (pushes raise its failure) until a new one is open
        self._take = None
        if self._open_segments:
            yield AudioSegmentEnd()
        self._speaking, self._open_segments, self._end_now, self._passed = False, 0, False, 0
        self._ends.clear()
        try:
            async for item in self._reopen(last_video):
                yield item
        finally:
            if broken is not None:
                await asyncio.to_thread(broken.close)

    async def _reopen(self, last_video: rtc.VideoFrame | None) -> AsyncIterator[Item]:
        while not self._closed:
            opening = asyncio.ensure_future(asyncio.to_thread(self._open))
            deadline = time.monotonic() + _RETRY_S
            while not opening.done():
                if last_video is not None:
                    yield last_video  # the AVSynchronizer paces these at the character's fps
                await asyncio.sleep(float(1 / self.fps))
            try:
                self._session = opening.result()
                return
            except Exception as again:
                log.error("a new live session for %s failed too: %s", self.character.name, again)
                while time.monotonic() < deadline:
                    if last_video is not None:
                        yield last_video
                    await asyncio.sleep(float(1 / self.fps))

    # -- closing --------------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the live session (and the runtime, if the generator made its own)."""
        if self._closed:
            return
        self._closed = True
        if self._take is not None:
            self._take.cancel()
        session, self._session = self._session, None
        if session is not None:
            await asyncio.to_thread(session.close)
        await asyncio.to_thread(self._close_runtime)

    def _close_runtime(self) -> None:
        if self._own_runtime:
            self.runtime.close()
