"""`WS /v1/live`: one connection, one live session (protocol v1, serve/protocol.py).

Three tasks on the event loop (receiving, sending, watching the limits) and one thread that takes the
session's frames and encodes them; control messages (interrupted, stats, error) overtake queued frames,
and frames of an old generation are dropped once an interrupt is acknowledged. Whatever ends the
connection, the session is closed and its place given back.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from lipsync_cli.errors import InputError, LipsyncError
from lipsync_cli.live import LiveFrame, LiveOptions, LiveSession
from lipsync_cli.live.session import Overrun
from lipsync_cli.models.devices import Device, DeviceRequest
from lipsync_cli.render.planning import resolve_device
from lipsync_cli.serve.encoders import H264Encoder, JpegEncoder
from lipsync_cli.serve.protocol import (
    GOING_AWAY,
    JPEG,
    KEYFRAME,
    NORMAL,
    POLICY,
    SERVER_ERROR,
    SPEECH,
    TOO_BIG,
    ProtocolError,
    Start,
    frame_message,
    parse_start,
    parse_text,
)

if TYPE_CHECKING:
    from lipsync_cli.serve.app import Server

SUBPROTOCOL = "lipsync.v1"
START_TIMEOUT = 10.0
FRAME_QUEUE = 50  # frames encoded ahead of the socket (2 s at 25 fps)


def token_of(ws: WebSocket) -> str | None:
    """A token as a browser can send it (query parameter or subprotocol `token.X`) or as a bearer header."""
    header = ws.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    for protocol in ws.scope.get("subprotocols", []):
        if protocol.startswith("token."):
            return protocol[6:]
    return ws.query_params.get("token")


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    if origin is None:  # not a browser
        return True
    if "*" in allowed or origin in allowed:
        return True
    return host is not None and urlsplit(origin).netloc == host


def device_request(device: Device) -> DeviceRequest:
    return DeviceRequest("cuda", device.index) if device.is_cuda else DeviceRequest("cpu")


class Connection:
    def __init__(self, ws: WebSocket, server: Server) -> None:
        self.ws, self.server = ws, server
        self.loop = asyncio.get_running_loop()
        self.control: asyncio.Queue[str] = asyncio.Queue()
        self.frames: asyncio.Queue[tuple[int, bytes, LiveFrame, float] | BaseException] = asyncio.Queue(FRAME_QUEUE)
        self.stop = threading.Event()
        self.session: LiveSession | None = None
        self.sent = 0
        self.last_latency: dict | None = None
        self.closed = False  # the close frame went out (or the client is gone)

    async def run(self) -> None:
        offered = self.ws.scope.get("subprotocols", [])
        await self.ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        try:
            self._check_trust()
            start = await self._start()
            await self._serve(start)
        except ProtocolError as exc:
            await self._close(exc.code, str(exc), exc.reason)
        except WebSocketDisconnect:
            self.server.metrics.refused.labels("client_gone").inc()
        except LipsyncError as exc:  # a character or model that cannot be served
            await self._close(POLICY if isinstance(exc, InputError) else SERVER_ERROR, str(exc), "refused")
        except Exception as exc:  # a bug: this session ends, the server goes on
            await self._close(SERVER_ERROR, f"internal error: {type(exc).__name__}: {exc}", "internal")

    def _check_trust(self) -> None:
        config = self.server.config
        if not origin_allowed(self.ws.headers.get("origin"), self.ws.headers.get("host"), config.allow_origin):
            raise ProtocolError(f"origin {self.ws.headers.get('origin')} is not allowed", POLICY, "bad_origin")
        if config.token is not None:
            given = token_of(self.ws)
            if given is None or not hmac.compare_digest(given.encode(), config.token.encode()):
                raise ProtocolError("a valid token is needed (Authorization: Bearer, ?token= or the subprotocol "
                                    "token.TOKEN)", POLICY, "bad_token")

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
            except ProtocolError as exc:  # the client hears why at once; the clean-up below may take a moment
                await self._close(exc.code, str(exc), exc.reason)
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
        await self.ws.send_text(json.dumps({
            "type": "ready", "session": id(self), "fps": float(session.fps), "width": width, "height": height,
            "codec": encoder.codec_string, "audio_rate": 16000, "lookahead_ms": round(session.lookahead * 1000, 1),
            "latency_ms": round(session.latency * 1000, 1)}))
        pump = threading.Thread(target=self._pump, args=(encoder, start.codec), name="lipsync-ws-pump", daemon=True)
        pump.start()
        tasks = [asyncio.create_task(t) for t in (self._receive(start), self._send(), self._watch())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises what ended it
        finally:
            self.stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(pump.join, 2)

    def _pump(self, encoder: H264Encoder | JpegEncoder, codec: str) -> None:
        session = self.session
        assert session is not None
        generation = 0
        put: Callable = lambda item: asyncio.run_coroutine_threadsafe(self.frames.put(item), self.loop)  # noqa: E731
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
                flags = (KEYFRAME if key else 0) | (SPEECH if frame.speech else 0) | (JPEG if codec == "jpeg" else 0)
                message = frame_message(flags, frame.generation, frame.index, round(frame.pts * 1e6), data, pcm)
                future = put((frame.generation, message, frame, encoded))
                while not self.stop.is_set():
                    try:
                        future.result(timeout=0.2)
                        break
                    except TimeoutError:
                        continue
        except BaseException as exc:  # the session broke (a model returning NaN): this connection ends
            if not self.stop.is_set():
                put(exc)

    async def _send(self) -> None:
        metrics, session = self.server.metrics, self.session
        assert session is not None
        next_stats = time.monotonic() + 1.0
        while True:
            while not self.control.empty():
                await self.ws.send_text(self.control.get_nowait())
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + 1.0
                await self.ws.send_text(self._stats())
            try:
                item = await asyncio.wait_for(self.frames.get(), 0.1)
            except TimeoutError:
                continue
            if isinstance(item, BaseException):
                raise ProtocolError(f"the session failed: {item}", SERVER_ERROR, "session_failed")
            generation, message, frame, encoded = item
            if generation != session.generation:
                continue  # of an utterance interrupted meanwhile
            await self.ws.send_bytes(message)
            self.sent += 1
            metrics.frames.labels("speech" if frame.speech else "idle").inc()
            metrics.encode.labels("jpeg" if message[1] & JPEG else "h264").observe(encoded)
            metrics.lateness.observe(max(0.0, session.clock() - frame.due))
            if frame.underrun:
                metrics.underruns.inc()
            if frame.latency is not None:
                metrics.latency.observe(frame.latency.total + encoded)
                p = frame.latency
                self.last_latency = {"total": round((p.total + encoded) * 1000, 1),
                                     "lookahead": round(p.lookahead * 1000, 1),
                                     "queueing": round(p.queueing * 1000, 1),
                                     "inference": round(p.inference * 1000, 1),
                                     "composite": round(p.composite * 1000, 1), "encode": round(encoded * 1000, 1)}

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
        dtype = "<i2" if start.audio_format == "s16le" else "<f4"
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            data = message.get("bytes")
            if data is not None:
                if len(data) > start.max_binary:
                    raise ProtocolError(f"an audio message is limited to 1 s ({start.max_binary} bytes), this one "
                                        f"has {len(data)}", TOO_BIG, "too_big")
                if len(data) % start.sample_bytes:
                    raise ProtocolError(f"an audio message must hold whole {start.audio_format} samples",
                                        POLICY, "bad_audio")
                samples = np.frombuffer(data, dtype)
                try:
                    session.push(samples)
                except Overrun as exc:
                    raise ProtocolError(str(exc), POLICY, "overrun") from None
                except InputError as exc:
                    raise ProtocolError(str(exc), POLICY, "bad_audio") from None
                continue
            kind = parse_text(message.get("text") or "").get("type")
            if kind == "flush":
                session.flush()
            elif kind == "interrupt":
                interruption = session.interrupt()
                await self.control.put(json.dumps({"type": "interrupted", "generation": interruption.generation,
                                                   "first_frame": interruption.first_frame}))
            elif kind == "stop":
                await self._close(NORMAL, "", None)
                return
            else:
                raise ProtocolError(f"unknown message type {kind!r} (flush, interrupt, stop)", POLICY, "bad_message")

    async def _watch(self) -> None:
        limit = self.server.config.session_max_seconds
        ends = time.monotonic() + limit
        while True:
            if self.server.manager.draining.is_set():
                raise ProtocolError("the server is shutting down", GOING_AWAY, "shutting_down")
            if time.monotonic() >= ends:
                raise ProtocolError(f"the session reached its length limit of {limit:g} s", POLICY, "too_long")
            await asyncio.sleep(0.1)

    async def _close(self, code: int, message: str, reason: str | None) -> None:
        if self.closed:
            return
        self.closed = True
        if reason is not None:
            self.server.metrics.refused.labels(reason).inc()
        try:
            if message:
                await self.ws.send_text(json.dumps({"type": "error", "message": message, "code": code}))
            await self.ws.close(code, reason or "")
        except (RuntimeError, WebSocketDisconnect, OSError):
            pass  # the client is gone already
