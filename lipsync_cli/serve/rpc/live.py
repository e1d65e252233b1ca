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
from typing import TYPE_CHECKING, Any

import grpc

from lipsync_cli.errors import InputError, LipsyncError
from lipsync_cli.live import LiveSession
from lipsync_cli.serve.live_ws import START_TIMEOUT
from lipsync_cli.serve.protocol import (
    BAD_DATA,
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
from lipsync_cli.serve.transport import (
    CLOSE_TIMEOUT,
    Encoded,
    Outbox,
    bounded,
    live_session,
    pump,
    push_audio,
    send_loop,
    video_encoder,
    watch_limits,
)

if TYPE_CHECKING:
    from lipsync_cli.serve.server import Server

STATUS = {BAD_DATA: grpc.StatusCode.INVALID_ARGUMENT, POLICY: grpc.StatusCode.INVALID_ARGUMENT,
          TOO_BIG: grpc.StatusCode.INVALID_ARGUMENT, SERVER_ERROR: grpc.StatusCode.INTERNAL,
          TRY_AGAIN: grpc.StatusCode.RESOURCE_EXHAUSTED, GOING_AWAY: grpc.StatusCode.UNAVAILABLE}


class _Stopped(Exception):
    """The client asked to stop, or closed its side of the stream."""


def start_of(message: pb.ClientMessage) -> Start:
    """The Start message, checked by the WebSocket protocol's own rules."""
    if message.WhichOneof("kind") != "start":
        raise ProtocolError(f"the first message must be a start, not {message.WhichOneof('kind')}",
                            reason="not_started")
    s = message.start
    fields: dict[str, Any] = {"type": "start", "character": s.character,
                              "audio": {"format": s.audio_format or "s16le", "rate": s.rate or 16000,
                                        "return_rate": s.return_rate or 16000},
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
        self.outbox = Outbox(self.loop)
        self.stop = threading.Event()
        self.session: LiveSession | None = None
        self.sent = 0
        self.last_latency: pb.Latency | None = None

    async def fail(self, code: int, message: str, reason: str) -> None:
        self.server.metrics.refused.labels(reason).inc()
        try:
            await asyncio.wait_for(self.context.write(pb.ServerMessage(error=pb.Error(
                message=message, code=code, reason=reason))), CLOSE_TIMEOUT)
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
        try:
            async with live_session(self.server, start) as self.session:
                await self._stream(start)
        finally:
            self.stop.set()
            self.outbox.clear()
            self.session = None

    async def _stream(self, start: Start) -> None:
        session = self.session
        assert session is not None
        encoder, width, height = video_encoder(self.server, session, start.codec)
        try:  # a client that never takes `ready` ends here: its encoder goes with it
            await bounded(self.context.write(pb.ServerMessage(ready=pb.Ready(
                session=str(id(self)), fps=float(session.fps), width=width, height=height, codec=encoder.codec_string,
                audio_rate=session.return_rate, lookahead_ms=round(session.lookahead * 1000, 1),
                latency_ms=round(session.latency * 1000, 1)))))
        except BaseException:
            encoder.close()
            raise
        jpeg = start.codec == "jpeg"

        def wrap(f: Encoded, video: bytes, pcm: bytes) -> pb.ServerMessage:
            return pb.ServerMessage(frame=pb.Frame(
                index=f.index, generation=f.generation, pts_us=round(f.pts * 1e6), keyframe=f.keyframe,
                speech=f.speech, jpeg=jpeg, video=video, audio=pcm))

        thread = threading.Thread(target=pump, args=(session, encoder, self.stop, self.outbox, wrap),
                                  name="lipsync-grpc-pump", daemon=True)
        thread.start()
        sender = asyncio.create_task(self._send(start.codec))
        tasks = [asyncio.create_task(self._receive(start)), sender, asyncio.create_task(watch_limits(self.server))]
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
            await asyncio.to_thread(thread.join, 2)
            encoder.close()
            # what ended the stream may carry this frame in its traceback: nothing big stays reachable from it
            del tasks, thread, encoder, session

    async def _send(self, codec: str) -> None:
        assert self.session is not None

        def sent(item: Encoded) -> None:
            self.sent += 1
            latency = item.latency_ms()
            if latency is not None:
                self.last_latency = pb.Latency(**latency)

        await send_loop(self.server, self.session, codec, self.control, self.outbox, self.context.write,
                        self.context.write, self._stats, sent, self.stop)

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
        while True:
            message = await self._next()
            kind = message.WhichOneof("kind")
            if kind == "audio":
                push_audio(session, start, message.audio.pcm)
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
