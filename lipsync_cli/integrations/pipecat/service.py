"""`LipsyncVideoService`: a character's face in a Pipecat pipeline, between the voice (TTS) and
`transport.output()` (design.md section 17).

The voice's `TTSAudioRawFrame`s go into a live session and stop here; for every frame of the session's timeline
the service pushes an `OutputImageRawFrame` (RGB, `sync_with_audio=True`) and then that frame's audio, so the
output transport, which plays the audio as its clock and shows each image once the audio before it has gone out,
keeps picture and sound together. A speech frame's audio is a `TTSAudioRawFrame` at the pipeline's output rate
carrying its reply's `context_id` (the voice's own samples when it came at that rate); an idle frame's is silence
as a plain `OutputAudioRawFrame`, which keeps the picture clocked between turns without telling the transport
that the bot speaks. Idle frames flow from the `StartFrame` on, so the face is there before the first word.

`TTSStoppedFrame` ends the utterance and waits (bounded) until its last speech frame has gone out;
`InterruptionFrame` interrupts the session, and nothing of the old generation follows it; `EndFrame` lets the
queued speech finish, `CancelFrame` stops at once. A session that breaks (a model returning NaN, a device lost)
becomes an `ErrorFrame` upstream and the voice then passes through unchanged, the part of a reply not yet shown
included. The session's work runs on its own threads and the reader's (reader.py), never on the event loop.

Metrics (with the pipeline's `enable_metrics`): each reply's time to first frame (its first audio in -> its first
speech frame out) as Pipecat's TTFB, and each speech frame's latency as `ProcessingMetricsData` (the total) with
`LipsyncFrameLatencyData` (its parts).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    MetricsFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.metrics.metrics import MetricsData, ProcessingMetricsData
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.services.ai_service import AIService
from pipecat.services.settings import ServiceSettings

from lipsync_cli.errors import InputError
from lipsync_cli.integrations.pipecat.media import frame_size, pcm_to_mono
from lipsync_cli.integrations.pipecat.reader import Converted, FrameReader
from lipsync_cli.live import LiveOptions, LiveSession
from lipsync_cli.live.frames import MAX_RATE, MIN_RATE
from lipsync_cli.live.session import session_latency
from lipsync_cli.models.devices import parse_device
from lipsync_cli.render.jobs import as_blend
from lipsync_cli.runtime import Runtime, RuntimeConfig

log = logging.getLogger("lipsync.pipecat")
STOP_GRACE = 2.0  # seconds a held TTSStoppedFrame or an EndFrame waits beyond the speech still to come


class LipsyncFrameLatencyData(MetricsData):
    """A speech frame's latency, in seconds, from the moment its own audio had all arrived (live session parts)."""

    lookahead: float
    queueing: float
    inference: float
    composite: float
    total: float


@dataclass(eq=False)
class _Reply:
    """Audio of one reply given to the session: for its context, its time to first frame and, should the session
    break, the part not yet shown."""

    context_id: str | None
    first_audio: float  # time.time() of its first audio
    frames: list[TTSAudioRawFrame] = field(default_factory=list)
    end: int | None = None  # the frame after its last, once flushed
    said: int = 0  # its speech frames pushed out
    shown: bool = False  # its first speech frame went out


class LipsyncVideoService(AIService):
    def __init__(self, character: str, *, runtime: Runtime | None = None, device: str = "auto",
                 latency_ms: float | None = None, blend: str = "match", **kwargs) -> None:
        request, blend_ = parse_device(device), as_blend(blend)
        self._own_runtime = runtime is None
        self._runtime = runtime if runtime is not None else Runtime(RuntimeConfig(devices=str(request)))
        try:
            self.character = self._runtime.character(character)
        except BaseException:
            if self._own_runtime:
                self._runtime.close()
            raise
        self._options = LiveOptions(latency_ms=latency_ms, blend=blend_, device=request)
        try:
            session_latency(self.character, self._options)  # a latency below the character's needs: refused now
        except BaseException:
            if self._own_runtime:
                self._runtime.close()
            raise
        super().__init__(settings=ServiceSettings(model=self.character.name), **kwargs)
        self.width, self.height = frame_size(self.character)
        self._rate = 24_000  # the pipeline's output rate, from setup()
        self._session: LiveSession | None = None
        self._reader: FrameReader | None = None
        self._queue: asyncio.Queue[Converted | BaseException] = asyncio.Queue()
        self._output_task: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # a frame and its audio go out together; an interrupt waits for the pair
        self._progress = asyncio.Event()
        self._generation = 0
        self._next_out = 0  # the index after the last frame pushed out
        self._replies: deque[_Reply] = deque()
        self._open: _Reply | None = None  # the reply whose audio the session is taking
        self._broken = False  # the session failed: the voice passes through ...
        self._released = False  # ... and what it held of the replies has been let through

    def can_generate_metrics(self) -> bool:
        return True

    @property
    def session(self) -> LiveSession | None:
        return self._session

    # -- lifecycle -----------------------------------------------------------------------------------
    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        await super().setup(setup)
        self._rate = setup.audio_out_sample_rate

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        if not MIN_RATE <= self._rate <= MAX_RATE:
            await self._fail(InputError(f"the pipeline's output rate {self._rate} Hz is outside {MIN_RATE} to "
                                        f"{MAX_RATE} Hz"))
            return
        options = replace(self._options, rate=self._rate, return_rate=self._rate)
        try:
            self._session = await asyncio.to_thread(LiveSession, self._runtime, self.character, options)
        except Exception as exc:
            await self._fail(exc)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InterruptionFrame):
            await self.cancel_ttfb_metrics()  # a reply cut before its first frame has no time to first frame
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):  # either way: a processor after this one may broadcast it
            async with self._lock:
                if self._session is not None and not self._broken:
                    self._generation = self._session.interrupt().generation
                self._replies.clear()
                self._open = None
                await self.push_frame(frame, direction)
        elif direction != FrameDirection.DOWNSTREAM:
            await self.push_frame(frame, direction)
        elif isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            if self._session is not None:
                self._reader = FrameReader(self._session, asyncio.get_running_loop(), self._queue)
                self._output_task = self.create_task(self._output(), name="lipsync-output")
        elif isinstance(frame, TTSAudioRawFrame):
            await self._voice(frame)
        elif isinstance(frame, TTSStoppedFrame):
            await self._stopped(frame)
        else:
            await self.push_frame(frame, direction)

    async def stop(self, frame: EndFrame) -> None:
        """Let the speech already given finish, then close (the EndFrame passes on after)."""
        await super().stop(frame)
        session = self._session
        if session is not None and not self._broken:
            try:
                end = session.flush()
            except Exception:
                end = None
            if end is not None:
                await self._until_out(end)
        await self._close()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._close()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._close()
        if self._own_runtime:
            await asyncio.to_thread(self._runtime.close)

    async def _close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await asyncio.to_thread(reader.stop)
        if self._output_task is not None:
            task, self._output_task = self._output_task, None
            await self.cancel_task(task)
        if self._session is not None:
            session, self._session = self._session, None
            await asyncio.to_thread(session.close)

    # -- the voice in --------------------------------------------------------------------------------
    async def _voice(self, frame: TTSAudioRawFrame) -> None:
        session = self._session
        if session is None or self._broken:
            await self.push_frame(frame)
            return
        if not MIN_RATE <= frame.sample_rate <= MAX_RATE or frame.num_channels not in (1, 2):
            await self.push_error(f"voice at {frame.sample_rate} Hz with {frame.num_channels} channels: lipsync "
                                  f"takes {MIN_RATE} to {MAX_RATE} Hz, mono or stereo; passed through unchanged")
            await self.push_frame(frame)
            return
        try:
            samples = pcm_to_mono(frame.audio, frame.num_channels)
        except ValueError as exc:
            await self.push_error(f"voice frame not 16-bit PCM: {exc}; passed through unchanged")
            await self.push_frame(frame)
            return
        reply = self._open
        if reply is None or (frame.context_id is not None and frame.context_id != reply.context_id):
            if reply is not None:
                reply.end = await self._flush(session)
            reply = self._open = _Reply(frame.context_id, time.time())
            self._replies.append(reply)
        reply.frames.append(frame)
        seconds = len(samples) / frame.sample_rate
        try:
            need = min(seconds, self._options.ahead_ms / 2000)
            while session.room() < need:  # a voice far ahead of the clock waits for it (bounded memory)
                await asyncio.sleep(0.05)
            try:
                session.push(samples, frame.sample_rate)
            except InputError as exc:
                if "flush it first" not in str(exc):
                    raise
                session.flush()  # the voice changed its rate mid-reply: a new utterance at the new rate
                session.push(samples, frame.sample_rate)
        except Exception as exc:
            await self._fail(exc)

    async def _flush(self, session: LiveSession) -> int:
        """End the session's utterance; where the reply ends (the session's word, or else the next frame to go
        out: a reply must end, or it heads `_replies` for good)."""
        try:
            end = session.flush()
        except Exception as exc:
            await self._fail(exc)
            end = None
        return end if end is not None else self._next_out

    async def _stopped(self, frame: TTSStoppedFrame) -> None:
        """The reply's end: held back until its last speech frame has gone out."""
        reply, self._open = self._open, None
        session = self._session
        if reply is not None and session is not None and not self._broken:
            reply.end = await self._flush(session)
            await self._until_out(reply.end)
        await self.push_frame(frame)

    async def _until_out(self, end: int) -> None:
        """Wait until frame `end - 1` has been pushed out (or the session broke), at most the time its frames
        take plus the session's latency and a grace."""
        session = self._session
        if session is None:
            return
        bound = max(0, end - self._next_out) / float(session.fps) + session.latency + STOP_GRACE
        ends = time.monotonic() + bound
        while self._next_out < end and not self._released and self._session is not None:
            left = ends - time.monotonic()
            if left <= 0:
                log.warning("%s: frame %d did not go out within %.1f s", self, end - 1, bound)
                return
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), min(left, 0.1))
            except TimeoutError:
                pass

    # -- the frames out ------------------------------------------------------------------------------
    async def _output(self) -> None:
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                await self._fail(item)
                return
            async with self._lock:
                if self._broken:  # queued before the failure: its voice has passed through already
                    continue
                if item.frame.generation != self._generation:
                    continue
                await self._emit(item)
            self._progress.set()

    async def _emit(self, item: Converted) -> None:
        f = item.frame
        image = OutputImageRawFrame(image=item.rgb, size=(self.width, self.height), format="RGB")
        image.sync_with_audio = True
        pts = round(f.pts * 1e9)
        image.pts = pts
        reply = self._reply_of(f.index) if f.speech else None
        audio: OutputAudioRawFrame
        if f.speech:
            audio = TTSAudioRawFrame(audio=item.pcm, sample_rate=self._rate, num_channels=1,
                                     context_id=reply.context_id if reply is not None else None)
        else:
            audio = OutputAudioRawFrame(audio=item.pcm, sample_rate=self._rate, num_channels=1)
        audio.pts = pts
        await self.push_frame(image)
        await self.push_frame(audio)
        self._next_out = f.index + 1
        if f.speech:
            if reply is not None:
                reply.said += 1
                if not reply.shown:
                    reply.shown = True
                    await self.start_ttfb_metrics(start_time=reply.first_audio)
                    await self.stop_ttfb_metrics()
            if f.latency is not None and self.metrics_enabled:
                p = f.latency
                await self.push_frame(MetricsFrame(data=[
                    ProcessingMetricsData(processor=self.name, model=self.character.name, value=p.total),
                    LipsyncFrameLatencyData(processor=self.name, model=self.character.name, lookahead=p.lookahead,
                                            queueing=p.queueing, inference=p.inference, composite=p.composite,
                                            total=p.total)]))
        while self._replies and self._replies[0].end is not None and self._replies[0].end <= self._next_out:
            self._replies.popleft()

    def _reply_of(self, k: int) -> _Reply | None:
        return next((r for r in self._replies if r.end is None or k < r.end), None)

    # -- failure -------------------------------------------------------------------------------------
    async def _fail(self, exc: BaseException) -> None:
        """Report the failure once, close the session and let the voice through, the unshown rest included."""
        if self._broken:
            return
        self._broken = True
        fps = float(self.character.fps)
        rest: list[TTSAudioRawFrame] = []
        for reply in self._replies:
            skip = reply.said / fps  # seconds of it already shown
            for frame in reply.frames:
                width = 2 * frame.num_channels
                seconds = len(frame.audio) / width / frame.sample_rate
                if skip >= seconds:
                    skip -= seconds
                    continue
                cut = int(round(skip * frame.sample_rate)) * width
                skip = 0.0
                part = TTSAudioRawFrame(audio=frame.audio[cut:], sample_rate=frame.sample_rate,
                                        num_channels=frame.num_channels, context_id=frame.context_id)
                rest.append(part)
        self._replies.clear()
        self._open = None
        await self.push_error(f"lipsync: the live session of {self.character.name} failed ({exc}); the voice "
                              "passes through without a face", exception=exc if isinstance(exc, Exception) else None)
        for part in rest:
            await self.push_frame(part)
        self._released = True
        self._progress.set()
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await asyncio.to_thread(reader.stop)
        if self._session is not None:
            session, self._session = self._session, None
            await asyncio.to_thread(session.close)
