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

from lipsync_cli.audio.pcm import float_to_s16_bytes
from lipsync_cli.errors import InputError
from lipsync_cli.live import LiveOptions, LiveSession
from lipsync_cli.live.frames import LatencyParts
from lipsync_cli.live.session import Overrun
from lipsync_cli.models.devices import Device, DeviceRequest, request_for
from lipsync_cli.models.precision import as_precision_request
from lipsync_cli.render.precision import resolve_models
from lipsync_cli.serve.encoders import H264Encoder, JpegEncoder
from lipsync_cli.serve.protocol import GOING_AWAY, POLICY, SERVER_ERROR, TOO_BIG, ProtocolError, Start

if TYPE_CHECKING:
    from lipsync_cli.serve.server import Server

FRAME_QUEUE = 50  # frames encoded ahead of the transport (2 s at 25 fps), each its encoded bytes only
SEND_TIMEOUT = 10.0  # seconds a client may leave a message untaken before its session ends
CLOSE_TIMEOUT = 2.0  # seconds for the error and the close of a session that has ended


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
        server.heap.soon()


def video_encoder(server: Server, session: LiveSession, codec: str) -> tuple[H264Encoder | JpegEncoder, int, int]:
    """The session's encoder and its picture's size (the character's, rounded up to even)."""
    video = session.character.video
    width, height = video.width + video.width % 2, video.height + video.height % 2
    encoder = H264Encoder(width, height, session.fps) if codec == "h264" else JpegEncoder(server.jpeg_quality)
    return encoder, width, height


@dataclass(frozen=True)
class Encoded:
    """What a transport keeps of a frame once it is encoded: its facts, not its picture."""

    index: int
    generation: int
    speech: bool
    underrun: bool
    pts: float
    due: float  # on the session's clock
    latency: LatencyParts | None
    keyframe: bool
    seconds: float  # encoding it

    def latency_ms(self) -> dict[str, float] | None:
        """A speech frame's latency and its parts, encoding included, in ms."""
        p = self.latency
        if p is None:
            return None
        return {"total": round((p.total + self.seconds) * 1000, 1), "lookahead": round(p.lookahead * 1000, 1),
                "queueing": round(p.queueing * 1000, 1), "inference": round(p.inference * 1000, 1),
                "composite": round(p.composite * 1000, 1), "encode": round(self.seconds * 1000, 1)}


class Outbox:
    """The encoded frames waiting for the transport, at most FRAME_QUEUE. The pump's thread waits for room
    itself (nothing of it is left pending on the event loop when the connection ends), and `clear` drops
    what a connection that ended never took."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int = FRAME_QUEUE) -> None:
        self._loop = loop
        self._items: asyncio.Queue[Any] = asyncio.Queue()
        self._room = threading.Semaphore(size)

    def put(self, item: object, stop: threading.Event) -> None:
        """On the pump's thread: waits for room (or `stop`)."""
        while not stop.is_set():
            if self._room.acquire(timeout=0.2):
                if stop.is_set():  # the connection ended while this waited: nobody will take it
                    self._room.release()
                    return
                try:
                    self._loop.call_soon_threadsafe(self._items.put_nowait, item)
                except RuntimeError:  # the loop is closed: the server has stopped
                    pass
                return

    async def get(self, timeout: float) -> Any:
        """The next item (TimeoutError after `timeout` seconds)."""
        async with asyncio.timeout(timeout):
            item = await self._items.get()
        self._room.release()
        return item

    def clear(self) -> None:
        while not self._items.empty():
            self._items.get_nowait()


def pump(session: LiveSession, encoder: H264Encoder | JpegEncoder, stop: threading.Event, outbox: Outbox,
         wrap: Callable[[Encoded, bytes, bytes], Any]) -> None:
    """On a thread of its own (encoding blocks): the session's frames, encoded and wrapped for the transport
    (as (Encoded, message)), into its outbox, a keyframe first after each interrupt; what broke the session
    goes there too."""
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
            pcm = float_to_s16_bytes(frame.audio)
            facts = Encoded(frame.index, frame.generation, frame.speech, frame.underrun, frame.pts, frame.due,
                            frame.latency, key, time.perf_counter() - started)
            del frame  # its picture goes back now, not when the next frame comes
            outbox.put((facts, wrap(facts, video, pcm)), stop)
    except BaseException as exc:  # the session broke (a model returning NaN): this connection ends
        if not stop.is_set():
            outbox.put(exc, stop)


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


async def bounded(send: Awaitable[None]) -> None:
    """A send to the client, which must take it within SEND_TIMEOUT seconds or lose its session."""
    try:
        async with asyncio.timeout(SEND_TIMEOUT):
            await send
    except TimeoutError:
        raise ProtocolError(f"the client took nothing sent to it for {SEND_TIMEOUT:g} s", POLICY,
                            "slow_client") from None


async def send_loop(server: Server, session: LiveSession, codec: str, control: asyncio.Queue, outbox: Outbox,
                    send_control: Callable[[Any], Awaitable[None]], send_frame: Callable[[Any], Awaitable[None]],
                    stats: Callable[[], Any], sent: Callable[[Encoded], None], stop: threading.Event) -> None:
    """What goes out, in order of urgency: control messages first, stats about once a second, then the
    frames, dropping those of a generation an interrupt has ended; each send bounded in time."""
    next_stats = time.monotonic() + 1.0
    while not stop.is_set():
        while not control.empty():
            await bounded(send_control(control.get_nowait()))
        if time.monotonic() >= next_stats:
            next_stats = time.monotonic() + 1.0
            await bounded(send_control(stats()))
        try:
            item = await outbox.get(0.1)
        except TimeoutError:
            continue
        if isinstance(item, BaseException):
            raise ProtocolError(f"the session failed: {item}", SERVER_ERROR, "session_failed")
        encoded, message = item
        if encoded.generation != session.generation:
            continue  # of an utterance interrupted meanwhile
        await bounded(send_frame(message))
        record(server, encoded, codec, session.clock() - encoded.due)
        sent(encoded)


def record(server: Server, item: Encoded, codec: str, late: float) -> None:
    """The metrics of a frame that went out `late` seconds after its due time (< 0: before)."""
    metrics = server.metrics
    metrics.frames.labels("speech" if item.speech else "idle").inc()
    metrics.encode.labels(codec).observe(item.seconds)
    metrics.lateness.observe(max(0.0, late))
    if item.underrun:
        metrics.underruns.inc()
    if item.latency is not None:
        metrics.latency.observe(item.latency.total + item.seconds)
