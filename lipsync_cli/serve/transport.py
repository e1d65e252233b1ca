"""What every live transport (the WebSocket, gRPC's Live/Stream) does alike around a `LiveSession`: opening
it under admission and closing it, its encoder, the thread that takes its frames and encodes them, the
checks on an audio message, and the watch on the session's limits. A transport only moves bytes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsync_cli.errors import InputError
from lipsync_cli.live import LiveFrame, LiveOptions, LiveSession
from lipsync_cli.live.session import Overrun
from lipsync_cli.models.devices import Device, DeviceRequest, request_for
from lipsync_cli.models.precision import as_precision_request
from lipsync_cli.render.precision import resolve_models
from lipsync_cli.serve.encoders import H264Encoder, JpegEncoder
from lipsync_cli.serve.protocol import GOING_AWAY, POLICY, SERVER_ERROR, TOO_BIG, ProtocolError, Start

if TYPE_CHECKING:
    from lipsync_cli.serve.server import Server

FRAME_QUEUE = 50  # frames encoded ahead of the transport (2 s at 25 fps)


def device_request(device: Device) -> DeviceRequest:
    return request_for(device)


@asynccontextmanager
async def live_session(server: Server, start: Start) -> AsyncIterator[LiveSession]:
    """The session a start message asks for, admitted under the caps; closed and its place given back after."""
    folder = server.manager.folder(start.character)
    character = await asyncio.to_thread(server.runtime.character, folder)
    resolved = await asyncio.to_thread(resolve_models, server.runtime, character, server.device_request,
                                       as_precision_request(server.config.precision))
    device = resolved.device
    admission = server.manager.admit(device)
    session = None
    try:
        options = LiveOptions(rate=start.rate, return_rate=start.return_rate, latency_ms=start.latency_ms,
                              device=device_request(device), precision=resolved.character.precision)
        session = await asyncio.to_thread(LiveSession, server.runtime, character, options)
        server.metrics.admitted.inc()
        server.metrics.active.inc()
        try:
            yield session
        finally:
            server.metrics.active.dec()
    finally:
        if session is not None:
            await asyncio.to_thread(session.close)
        server.manager.release(admission)


def video_encoder(server: Server, session: LiveSession, codec: str) -> tuple[H264Encoder | JpegEncoder, int, int]:
    """The session's encoder and its picture's size (the character's, rounded up to even)."""
    video = session.character.video
    width, height = video.width + video.width % 2, video.height + video.height % 2
    encoder = H264Encoder(width, height, session.fps) if codec == "h264" else JpegEncoder(server.jpeg_quality)
    return encoder, width, height


@dataclass(frozen=True, eq=False)
class Encoded:
    frame: LiveFrame
    video: bytes
    keyframe: bool
    pcm: bytes  # the frame's audio, s16le at the session's return rate
    seconds: float  # encoding it

    def latency_ms(self) -> dict[str, float] | None:
        """A speech frame's latency and its parts, encoding included, in ms."""
        p = self.frame.latency
        if p is None:
            return None
        return {"total": round((p.total + self.seconds) * 1000, 1), "lookahead": round(p.lookahead * 1000, 1),
                "queueing": round(p.queueing * 1000, 1), "inference": round(p.inference * 1000, 1),
                "composite": round(p.composite * 1000, 1), "encode": round(self.seconds * 1000, 1)}


def pump(session: LiveSession, encoder: H264Encoder | JpegEncoder, stop: threading.Event,
         loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, wrap: Callable[[Encoded], Any]) -> None:
    """On a thread of its own (encoding blocks): the session's frames, encoded and wrapped for the transport,
    onto its queue, a keyframe first after each interrupt; what broke the session goes on the queue too."""

    def put(item: object) -> None:
        future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        while not stop.is_set():
            try:
                future.result(timeout=0.2)
                return
            except TimeoutError:
                continue

    generation = 0
    try:
        while not stop.is_set():
            frame = session.next_frame(timeout=0.2)
            if frame is None:
                continue
            if frame.generation != generation:
                generation = frame.generation
                encoder.keyframe_next()
            started = time.perf_counter()
            video, key = encoder.encode(frame.image)
            pcm = (np.clip(frame.audio, -1, 1) * 32767).round().astype("<i2").tobytes()
            put(wrap(Encoded(frame, video, key, pcm, time.perf_counter() - started)))
    except BaseException as exc:  # the session broke (a model returning NaN): this connection ends
        if not stop.is_set():
            put(exc)


def push_audio(session: LiveSession, start: Start, data: bytes) -> None:
    """One audio message onto the session, checked against the start message's format and the limits."""
    if len(data) > start.max_binary:
        raise ProtocolError(f"an audio message is limited to 1 s ({start.max_binary} bytes), this one has "
                            f"{len(data)}", TOO_BIG, "too_big")
    if len(data) % start.sample_bytes:
        raise ProtocolError(f"an audio message must hold whole {start.audio_format} samples", POLICY, "bad_audio")
    try:
        session.push(np.frombuffer(data, "<i2" if start.audio_format == "s16le" else "<f4"))
    except Overrun as exc:
        raise ProtocolError(str(exc), POLICY, "overrun") from None
    except InputError as exc:
        raise ProtocolError(str(exc), POLICY, "bad_audio") from None


async def watch_limits(server: Server) -> None:
    """Ends the session (raises) when the server shuts down or the session reaches its length limit."""
    limit = server.config.session_max_seconds
    ends = time.monotonic() + limit
    while True:
        if server.manager.draining.is_set():
            raise ProtocolError("the server is shutting down", GOING_AWAY, "shutting_down")
        if time.monotonic() >= ends:
            raise ProtocolError(f"the session reached its length limit of {limit:g} s", POLICY, "too_long")
        await asyncio.sleep(0.1)


async def send_loop(server: Server, session: LiveSession, codec: str, control: asyncio.Queue, frames: asyncio.Queue,
                    send_control: Callable[[Any], Awaitable[None]], send_frame: Callable[[Any], Awaitable[None]],
                    stats: Callable[[], Any], sent: Callable[[Encoded], None], stop: threading.Event) -> None:
    """What goes out, in order of urgency: control messages first, stats about once a second, then the
    frames, dropping those of a generation an interrupt has ended."""
    next_stats = time.monotonic() + 1.0
    while not stop.is_set():
        while not control.empty():
            await send_control(control.get_nowait())
        if time.monotonic() >= next_stats:
            next_stats = time.monotonic() + 1.0
            await send_control(stats())
        try:
            item = await asyncio.wait_for(frames.get(), 0.1)
        except TimeoutError:
            continue
        if isinstance(item, BaseException):
            raise ProtocolError(f"the session failed: {item}", SERVER_ERROR, "session_failed")
        encoded, message = item
        if encoded.frame.generation != session.generation:
            continue  # of an utterance interrupted meanwhile
        await send_frame(message)
        record(server, encoded, codec, session.clock() - encoded.frame.due)
        sent(encoded)


def record(server: Server, item: Encoded, codec: str, late: float) -> None:
    """The metrics of a frame that went out `late` seconds after its due time (< 0: before)."""
    metrics, frame = server.metrics, item.frame
    metrics.frames.labels("speech" if frame.speech else "idle").inc()
    metrics.encode.labels(codec).observe(item.seconds)
    metrics.lateness.observe(max(0.0, late))
    if frame.underrun:
        metrics.underruns.inc()
    if frame.latency is not None:
        metrics.latency.observe(frame.latency.total + item.seconds)
