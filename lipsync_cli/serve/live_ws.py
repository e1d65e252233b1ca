"""`WS /v1/live`: one connection, one live session (protocol v1, serve/protocol.py).

Three tasks on the event loop (receiving, sending, watching the limits) and one thread that takes the
session's frames and encodes them; control messages (interrupted, stats, error) overtake queued frames,
and frames of an old generation are dropped once an interrupt is acknowledged. Whatever ends the
connection, the session is closed and its place given back.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket, WebSocketDisconnect

from lipsync_cli.errors import InputError, LipsyncError
from lipsync_cli.live import LiveSession
from lipsync_cli.serve.protocol import (
    BAD_DATA,
    JPEG,
    KEYFRAME,
    NORMAL,
    POLICY,
    SERVER_ERROR,
    SPEECH,
    ProtocolError,
    Start,
    frame_message,
    parse_start,
    parse_text,
)
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

SUBPROTOCOL = "lipsync.v1"
START_TIMEOUT = 10.0


class Connection:
    def __init__(self, ws: WebSocket, server: Server) -> None:
        self.ws, self.server = ws, server
        self.loop = asyncio.get_running_loop()
        self.control: asyncio.Queue[str] = asyncio.Queue()
        self.outbox = Outbox(self.loop)
        self.stop = threading.Event()
        self.session: LiveSession | None = None
        self.sent = 0
        self.last_latency: dict | None = None
        self.closed = False  # the close frame went out (or the client is gone)
        self.stopped = False  # the client asked to stop

    async def run(self) -> None:
        offered = self.ws.scope.get("subprotocols", [])
        try:
            await bounded(self.ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None))
            self._check_trust()
            start = await self._start()
            await self._serve(start)
        except ProtocolError as exc:
            await self._close(exc.code, str(exc), exc.reason)
        except WebSocketDisconnect as exc:
            self.server.metrics.refused.labels("bad_text" if exc.code == BAD_DATA else "client_gone").inc()
        except LipsyncError as exc:  # a character or model that cannot be served
            await self._close(POLICY if isinstance(exc, InputError) else SERVER_ERROR, str(exc), "refused")
        except Exception as exc:  # a bug: this session ends, the server goes on
            await self._close(SERVER_ERROR, f"internal error: {type(exc).__name__}: {exc}", "internal")

    def _check_trust(self) -> None:
        refused = self.server.trust.refusal(self.ws.headers, self.ws.query_params,
                                            self.ws.scope.get("subprotocols", []))
        if refused is not None:
            reason, message = refused
            raise ProtocolError(message, POLICY, reason)

    async def _start(self) -> Start:
        try:
            message = await asyncio.wait_for(self.ws.receive(), START_TIMEOUT)
        except TimeoutError:
            raise ProtocolError(f"no start message within {START_TIMEOUT:g} s", POLICY, "not_started") from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        if message.get("text") is None:
            raise ProtocolError('the first message must be the text {"type": "start", ...}, not binary', POLICY,
                                "not_started")
        return parse_start(parse_text(message["text"]))

    async def _serve(self, start: Start) -> None:
        # The client hears why at once, while the session is closed and its place given back; the close frame
        # follows once the place is free (a client that reconnects on it finds room), and the place never waits
        # for the client to take the close (it may never take it).
        closing = None
        released = asyncio.Event()
        try:
            async with live_session(self.server, start) as self.session:
                try:
                    await self._stream(start)
                except ProtocolError as exc:
                    closing = asyncio.create_task(self._close(exc.code, str(exc), exc.reason, after=released))
                else:
                    if self.stopped:
                        closing = asyncio.create_task(self._close(NORMAL, "", None, after=released))
        finally:
            self.stop.set()
            self.outbox.clear()
            self.session = None
            released.set()
            if closing is not None:
                await closing

    async def _stream(self, start: Start) -> None:
        session = self.session
        assert session is not None
        encoder, width, height = video_encoder(self.server, session, start.codec)
        try:  # a client that never takes `ready` ends here: its encoder goes with it
            await bounded(self.ws.send_text(json.dumps({
                "type": "ready", "session": id(self), "fps": float(session.fps), "width": width, "height": height,
                "codec": encoder.codec_string, "audio_rate": session.return_rate,
                "lookahead_ms": round(session.lookahead * 1000, 1), "latency_ms": round(session.latency * 1000, 1),
                **({"replica": self.server.replica} if self.server.replica else {})})))
        except BaseException:
            encoder.close()
            raise
        jpeg = JPEG if start.codec == "jpeg" else 0

        def wrap(f: Encoded, video: bytes, pcm: bytes) -> bytes:
            flags = (KEYFRAME if f.keyframe else 0) | (SPEECH if f.speech else 0) | jpeg
            return frame_message(flags, f.generation, f.index, round(f.pts * 1e6), video, pcm)

        thread = threading.Thread(target=pump, args=(session, encoder, self.stop, self.outbox, wrap),
                                  name="lipsync-ws-pump", daemon=True)
        thread.start()
        tasks = [asyncio.create_task(t) for t in (self._receive(start), self._send(start.codec),
                                                  watch_limits(self.server))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises what ended it
        finally:
            self.stop.set()
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
            self.last_latency = item.latency_ms() or self.last_latency

        await send_loop(self.server, self.session, codec, self.control, self.outbox, self.ws.send_text,
                        self.ws.send_bytes, self._stats, sent, self.stop)

    def _stats(self) -> str:
        assert self.session is not None
        s = self.session.stats()
        return json.dumps({"type": "stats", "frames_sent": self.sent, "speech_frames": s.speech_frames,
                           "idle_frames": s.idle_frames, "underrun_frames": s.underrun_frames,
                           "underruns": s.underruns, "generation": s.generation, "queued_ms": round(s.queued_ms, 1),
                           "latency_ms": self.last_latency})

    async def _receive(self, start: Start) -> None:
        session = self.session
        assert session is not None
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            data = message.get("bytes")
            if data is not None:
                push_audio(session, start, data)
                continue
            kind = parse_text(message.get("text") or "").get("type")
            if kind == "flush":
                session.flush()
            elif kind == "interrupt":
                interruption = session.interrupt()
                await self.control.put(json.dumps({"type": "interrupted", "generation": interruption.generation,
                                                   "first_frame": interruption.first_frame}))
            elif kind == "stop":
                self.stopped = True
                return
            else:
                raise ProtocolError(f"unknown message type {kind!r} (flush, interrupt, stop)", POLICY, "bad_message")

    async def _close(self, code: int, message: str, reason: str | None, after: asyncio.Event | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        if reason is not None:
            self.server.metrics.refused.labels(reason).inc()
        try:
            if message:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self.ws.send_text(json.dumps({"type": "error", "message": message, "code": code}))
            if after is not None:
                await after.wait()
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.close(code, reason or "")
        except (RuntimeError, WebSocketDisconnect, OSError, TimeoutError):
            pass  # the client is gone already, or takes nothing (its connection is dropped: serve/wire.py)
