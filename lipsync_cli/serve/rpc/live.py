"""`lipsync.v1.Live/Stream`: the live protocol over one bidirectional gRPC stream, on the same `LiveSession`
objects, admission and limits as the WebSocket (`serve/live_ws.py`, protocol v1).

The client sends a Start, then Audio, Flush, Interrupt and Stop; the server answers Ready, then a Frame per
output frame (its video and its own audio), Stats about once a second, Interrupted, and an Error before a
stream it ends: the Error carries the WebSocket close code it corresponds to, and the stream ends with the
matching gRPC status. A Stop, or the client closing its side, ends the stream with OK.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from lipsync_cli.errors import InputError, LipsyncError
from lipsync_cli.live import LiveOptions, LiveSession
from lipsync_cli.live.session import Overrun
from lipsync_cli.render.planning import resolve_device
from lipsync_cli.serve.encoders import H264Encoder, JpegEncoder
from lipsync_cli.serve.live_ws import FRAME_QUEUE, START_TIMEOUT, device_request
from lipsync_cli.serve.protocol import (
    GOING_AWAY,
    POLICY,
    SERVER_ERROR,
    TOO_BIG,
    TRY_AGAIN,
    ProtocolError,
    Start,
    parse_start,
)
from lipsync_cli.serve.rpc import live_pb2 as pb
from lipsync_cli.serve.rpc import live_pb2_grpc

if TYPE_CHECKING:
    from lipsync_cli.serve.app import Server

STATUS = {POLICY: grpc.StatusCode.INVALID_ARGUMENT, TOO_BIG: grpc.StatusCode.INVALID_ARGUMENT,
          SERVER_ERROR: grpc.StatusCode.INTERNAL, TRY_AGAIN: grpc.StatusCode.RESOURCE_EXHAUSTED,
          GOING_AWAY: grpc.StatusCode.UNAVAILABLE}


class _Stopped(Exception):
    """The client asked to stop, or closed its side of the stream."""


def start_of(message: pb.ClientMessage) -> Start:
    """The Start message, checked by the WebSocket protocol's own rules."""
    if message.WhichOneof("kind") != "start":
        raise ProtocolError(f"the first message must be a start, not {message.WhichOneof('kind')}",
                            reason="not_started")
    s = message.start
    fields: dict[str, Any] = {"type": "start", "character": s.character,
                              "audio": {"format": s.audio_format or "s16le", "rate": s.rate or 16000},
                              "video": {"codec": s.codec or "h264"}}
    if s.HasField("latency_ms"):
        fields["latency_ms"] = s.latency_ms
    return parse_start(fields)


class LiveService(live_pb2_grpc.LiveServicer):
    def __init__(self, server: Server) -> None:
        self.server = server

    async def Stream(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        stream = _Stream(self.server, requests, context)
        try:
            await stream.run()
        except _Stopped:
            return
        except ProtocolError as exc:
            await stream.fail(exc.code, str(exc), exc.reason)
        except LipsyncError as exc:
            await stream.fail(POLICY if isinstance(exc, InputError) else SERVER_ERROR, str(exc), "refused")
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug: this stream ends, the server goes on
            await stream.fail(SERVER_ERROR, f"internal error: {type(exc).__name__}: {exc}", "internal")


class _Stream:
    def __init__(self, server: Server, requests: Any, context: grpc.aio.ServicerContext) -> None:
        self.server, self.context = server, context
        self.requests = requests.__aiter__()
        self.loop = asyncio.get_running_loop()
        self.control: asyncio.Queue[pb.ServerMessage] = asyncio.Queue()
        self.frames: asyncio.Queue[tuple[int, pb.ServerMessage, float] | BaseException] = asyncio.Queue(FRAME_QUEUE)
        self.stop = threading.Event()
        self.session: LiveSession | None = None
        self.sent = 0
        self.last_latency: pb.Latency | None = None

    async def fail(self, code: int, message: str, reason: str) -> None:
        self.server.metrics.refused.labels(reason).inc()
        try:
            await asyncio.wait_for(self.context.write(pb.ServerMessage(error=pb.Error(
                message=message, code=code, reason=reason))), 5.0)
        except Exception:  # noqa: BLE001 - the client is gone already
            pass
        await self.context.abort(STATUS.get(code, grpc.StatusCode.INTERNAL), message)

    async def _next(self) -> pb.ClientMessage:
        try:
            return await self.requests.__anext__()
        except StopAsyncIteration:
            raise _Stopped() from None

    async def run(self) -> None:
        try:
            first = await asyncio.wait_for(self._next(), START_TIMEOUT)
        except TimeoutError:
            raise ProtocolError(f"no start message within {START_TIMEOUT:g} s", POLICY, "not_started") from None
        start = start_of(first)
        server = self.server
        folder = server.manager.folder(start.character)
        character = await asyncio.to_thread(server.runtime.character, folder)
        device, _ = await asyncio.to_thread(resolve_device, server.runtime, character, server.device_request)
        admission = server.manager.admit(device)
        try:
            options = LiveOptions(rate=start.rate, latency_ms=start.latency_ms, device=device_request(device))
            self.session = await asyncio.to_thread(LiveSession, server.runtime, character, options)
            server.metrics.admitted.inc()
            server.metrics.active.inc()
            try:
                await self._stream(start)
            finally:
                server.metrics.active.dec()
        finally:
            self.stop.set()
            if self.session is not None:
                await asyncio.to_thread(self.session.close)
            server.manager.release(admission)

    async def _stream(self, start: Start) -> None:
        session = self.session
        assert session is not None
        video = session.character.video
        width, height = video.width + video.width % 2, video.height + video.height % 2
        encoder = H264Encoder(width, height, session.fps) if start.codec == "h264" else \
            JpegEncoder(self.server.jpeg_quality)
        await self.context.write(pb.ServerMessage(ready=pb.Ready(
            session=str(id(self)), fps=float(session.fps), width=width, height=height, codec=encoder.codec_string,
            audio_rate=16000, lookahead_ms=round(session.lookahead * 1000, 1),
            latency_ms=round(session.latency * 1000, 1))))
        pump = threading.Thread(target=self._pump, args=(encoder, start.codec), name="lipsync-grpc-pump", daemon=True)
        pump.start()
        sender = asyncio.create_task(self._send())
        tasks = [asyncio.create_task(self._receive(start)), sender, asyncio.create_task(self._watch())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            self.stop.set()
            # a write cancelled half way can leave the call unable to send the error and the status: the
            # sender is left to end by itself at its next look at `stop`
            await asyncio.wait([sender], timeout=2.0)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(pump.join, 2)

    def _pump(self, encoder: H264Encoder | JpegEncoder, codec: str) -> None:
        """Frames from the session, encoded, onto the send queue (a thread: encoding blocks)."""
        session = self.session
        assert session is not None
        generation = 0

        def put(item: object) -> None:
            future = asyncio.run_coroutine_threadsafe(self.frames.put(item), self.loop)  # type: ignore[arg-type]
            while not self.stop.is_set():
                try:
                    future.result(timeout=0.2)
                    return
                except TimeoutError:
                    continue

        try:
            while not self.stop.is_set():
                frame = session.next_frame(timeout=0.2)
                if frame is None:
                    continue
                if frame.generation != generation:
                    generation = frame.generation
                    encoder.keyframe_next()
                started = time.perf_counter()
                data, key = encoder.encode(frame.image)
                encoded = time.perf_counter() - started
                pcm = (np.clip(frame.audio, -1, 1) * 32767).round().astype("<i2").tobytes()
                message = pb.ServerMessage(frame=pb.Frame(
                    index=frame.index, generation=frame.generation, pts_us=round(frame.pts * 1e6), keyframe=key,
                    speech=frame.speech, jpeg=codec == "jpeg", video=data, audio=pcm))
                if frame.latency is not None:
                    p = frame.latency
                    self.last_latency = pb.Latency(
                        total=round((p.total + encoded) * 1000, 1), lookahead=round(p.lookahead * 1000, 1),
                        queueing=round(p.queueing * 1000, 1), inference=round(p.inference * 1000, 1),
                        composite=round(p.composite * 1000, 1), encode=round(encoded * 1000, 1))
                put((frame.generation, message, encoded))
        except BaseException as exc:  # the session broke (a model returning NaN): this stream ends
            if not self.stop.is_set():
                put(exc)

    async def _send(self) -> None:
        session, metrics = self.session, self.server.metrics
        assert session is not None
        next_stats = time.monotonic() + 1.0
        while not self.stop.is_set():
            while not self.control.empty():
                await self.context.write(self.control.get_nowait())
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + 1.0
                await self.context.write(self._stats())
            try:
                item = await asyncio.wait_for(self.frames.get(), 0.1)
            except TimeoutError:
                continue
            if isinstance(item, BaseException):
                raise ProtocolError(f"the session failed: {item}", SERVER_ERROR, "session_failed")
            generation, message, encoded = item
            if generation != session.generation:
                continue  # of an utterance interrupted meanwhile
            await self.context.write(message)
            self.sent += 1
            metrics.frames.labels("speech" if message.frame.speech else "idle").inc()
            metrics.encode.labels("jpeg" if message.frame.jpeg else "h264").observe(encoded)

    def _stats(self) -> pb.ServerMessage:
        assert self.session is not None
        s = self.session.stats()
        return pb.ServerMessage(stats=pb.Stats(
            frames_sent=self.sent, speech_frames=s.speech_frames, idle_frames=s.idle_frames,
            underrun_frames=s.underrun_frames, underruns=s.underruns, generation=s.generation,
            queued_ms=round(s.queued_ms, 1), latency_ms=self.last_latency))

    async def _receive(self, start: Start) -> None:
        session = self.session
        assert session is not None
        dtype = "<i2" if start.audio_format == "s16le" else "<f4"
        while True:
            message = await self._next()
            kind = message.WhichOneof("kind")
            if kind == "audio":
                data = message.audio.pcm
                if len(data) > start.max_binary:
                    raise ProtocolError(f"an audio message is limited to 1 s ({start.max_binary} bytes), this one "
                                        f"has {len(data)}", TOO_BIG, "too_big")
                if len(data) % start.sample_bytes:
                    raise ProtocolError(f"an audio message must hold whole {start.audio_format} samples",
                                        POLICY, "bad_audio")
                try:
                    session.push(np.frombuffer(data, dtype))
                except Overrun as exc:
                    raise ProtocolError(str(exc), POLICY, "overrun") from None
                except InputError as exc:
                    raise ProtocolError(str(exc), POLICY, "bad_audio") from None
            elif kind == "flush":
                session.flush()
            elif kind == "interrupt":
                done = session.interrupt()
                await self.control.put(pb.ServerMessage(interrupted=pb.Interrupted(generation=done.generation,
                                                                                   first_frame=done.first_frame)))
            elif kind == "stop":
                raise _Stopped()
            else:
                raise ProtocolError(f"unexpected message {kind!r} (audio, flush, interrupt, stop)", POLICY,
                                    "bad_message")

    async def _watch(self) -> None:
        limit = self.server.config.session_max_seconds
        ends = time.monotonic() + limit
        while True:
            if self.server.manager.draining.is_set():
                raise ProtocolError("the server is shutting down", GOING_AWAY, "shutting_down")
            if time.monotonic() >= ends:
                raise ProtocolError(f"the session reached its length limit of {limit:g} s", POLICY, "too_long")
            await asyncio.sleep(0.1)
