"""One load-test session: a WebSocket client that streams speech at real-time pace in chunks (with optional
gaps and interrupts) and records when each frame came, against when it was due."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from lipsync_cli.serve.protocol import TRY_AGAIN, parse_frame

AT_CAPACITY = "at capacity, try again"
BUSY_STATUSES = (429, 500, 503)  # before the upgrade: Ray Serve's refusals (500 from Serve 2.60 for a WebSocket)
RECONNECT_FIRST, RECONNECT_MOST = 0.25, 4.0  # seconds before a reconnect, doubling


@dataclass(frozen=True)
class Scenario:
    url: str  # ws://host:port/v1/live
    character: str = "alice"
    seconds: float = 10.0
    chunk_ms: float = 40.0
    gap_every: float = 0.0  # seconds of speech between pauses (0: no pauses)
    gap_seconds: float = 1.0
    interrupt_every: float = 0.0  # seconds between interrupts (0: none)
    latency_ms: float | None = None
    codec: str = "h264"
    token: str | None = None
    idle: bool = False  # send no audio: the cost of a session that only shows idle frames


@dataclass
class SessionResult:
    frames: int = 0
    speech_frames: int = 0
    lateness: list[float] = field(default_factory=list)  # seconds after the frame's due time (< 0: early)
    glass: list[float] = field(default_factory=list)  # from sending the audio that completes a frame to receiving it
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (seconds since the first ready, frame index)
    origin: float | None = None  # when the first connection's session was ready (monotonic)
    aligned: int = 0  # speech frames whose audio is the sent audio at their place on the stream
    misaligned: int = 0  # speech frames whose audio was not found where the stream has it
    offsets: dict[int, int] = field(default_factory=dict)  # (sample sent - k * samples per frame): frames
    underruns: int = 0
    latency_parts: list[dict] = field(default_factory=list)  # the server's stats, about once a second
    refused: str | None = None  # why the server refused or ended the session
    close_code: int | None = None
    http_status: int | None = None  # the server's answer when it refused before the WebSocket upgrade
    reconnects: int = 0  # connections that dropped (no close frame: 1006) and were opened again
    error: str | None = None
    budget_ms: float = 0.0
    fps: float = 25.0


async def run_session(scenario: Scenario, speech: np.ndarray, stop: asyncio.Event) -> SessionResult:
    """`speech`: int16 samples at 16 kHz, played in a loop for the scenario's length. A connection that drops
    (a replica that died) is opened again, with a growing pause, until the scenario's time is up."""
    result = SessionResult()
    ends = time.monotonic() + scenario.seconds
    pause = RECONNECT_FIRST
    while True:
        dropped = await _connection(scenario, speech, stop, result, ends)
        if not dropped or stop.is_set() or time.monotonic() + pause >= ends:
            return result
        result.reconnects += 1
        await asyncio.sleep(pause)
        pause = min(2 * pause, RECONNECT_MOST)


async def _connection(scenario: Scenario, speech: np.ndarray, stop: asyncio.Event, result: SessionResult,
                      ends: float) -> bool:
    """One connection, until `ends`; True when it dropped after the session started."""
    headers = {"Authorization": f"Bearer {scenario.token}"} if scenario.token else None
    started = False
    try:
        async with connect(scenario.url, additional_headers=headers, open_timeout=60, max_size=1 << 24) as ws:
            start: dict[str, object] = {"type": "start", "character": scenario.character,
                                        "audio": {"format": "s16le", "rate": 16000}, "video": {"codec": scenario.codec}}
            if scenario.latency_ms is not None:
                start["latency_ms"] = scenario.latency_ms
            await ws.send(json.dumps(start))
            ready = json.loads(await ws.recv())
            if ready.get("type") != "ready":
                result.close_code = ready.get("code")
                result.refused = _refusal(ready.get("message", str(ready)), result.close_code)
                return False
            started = True
            t0 = time.monotonic()
            if result.origin is None:
                result.origin = t0
            seconds = max(0.0, ends - t0)
            result.budget_ms, result.fps = ready["latency_ms"], ready["fps"]
            sent_at: deque[tuple[int, float]] = deque()  # (samples sent so far, when)
            stream = bytearray()  # the samples sent and not yet matched, to check each frame's audio against
            base = [0]  # bytes of the stream dropped from its front
            sender = asyncio.create_task(_send(ws, scenario, speech, t0, seconds, sent_at, stream, base, stop))
            try:
                await _receive(ws, result, t0, seconds, sent_at, stream, base, stop)
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
    except ConnectionClosed as exc:
        if exc.rcvd is None and started:
            return True  # dropped without a close frame (1006)
        result.close_code = exc.rcvd.code if exc.rcvd is not None else None
        reason = exc.rcvd.reason if exc.rcvd is not None else "closed"
        result.refused = result.refused or _refusal(reason, result.close_code)
    except InvalidStatus as exc:
        result.http_status = status = exc.response.status_code
        result.refused = (f"{AT_CAPACITY} (HTTP {status} before the WebSocket upgrade)" if status in BUSY_STATUSES
                          else f"HTTP {status} before the WebSocket upgrade")
    except (OSError, TimeoutError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return False


def _refusal(message: str, code: int | None) -> str:
    return f"{AT_CAPACITY} ({message})" if code == TRY_AGAIN else message


async def _send(ws, scenario: Scenario, speech: np.ndarray, t0: float, seconds: float, sent_at: deque,
                stream: bytearray, sent_base: list[int], stop: asyncio.Event) -> None:
    chunk = max(1, round(16000 * scenario.chunk_ms / 1000))
    position = pushed = 0  # stream time of what was sent (samples, gaps included); samples pushed
    next_gap = scenario.gap_every or float("inf")
    next_interrupt = scenario.interrupt_every or float("inf")
    if scenario.idle:
        return
    while not stop.is_set() and position / 16000 < seconds:
        due = t0 + position / 16000
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        if position / 16000 >= next_interrupt:
            await ws.send(json.dumps({"type": "interrupt"}))
            next_interrupt += scenario.interrupt_every
        if position / 16000 >= next_gap:
            await ws.send(json.dumps({"type": "flush"}))
            position += round(scenario.gap_seconds * 16000)
            next_gap += scenario.gap_every + scenario.gap_seconds
            continue
        part = np.take(speech, range(pushed, pushed + chunk), mode="wrap").astype("<i2").tobytes()
        await ws.send(part)
        stream.extend(part)
        pushed += chunk
        position += chunk
        sent_at.append(((sent_base[0] + len(stream)) // 2, time.monotonic()))
    await ws.send(json.dumps({"type": "flush"}))


async def _receive(ws, result: SessionResult, t0: float, seconds: float, sent_at: deque, stream: bytearray,
                   sent_base: list[int], stop: asyncio.Event) -> None:
    budget, fps = result.budget_ms / 1000, result.fps
    ends = t0 + seconds + budget + 1.0
    searched = [0]
    base = sent_base
    while not stop.is_set():
        left = ends - time.monotonic()
        if left <= 0:
            return
        try:
            message = await asyncio.wait_for(ws.recv(), left)
        except TimeoutError:
            return
        now = time.monotonic()
        if isinstance(message, str):
            data = json.loads(message)
            if data["type"] == "stats":
                result.underruns = data["underrun_frames"]
                if data.get("latency_ms"):
                    result.latency_parts.append(data["latency_ms"])
            elif data["type"] == "error":
                result.refused = _refusal(data["message"], data.get("code"))
            continue
        header, _, audio = parse_frame(message)
        result.frames += 1
        result.lateness.append(now - (t0 + budget + header.index / fps))
        result.arrivals.append((now - (result.origin or t0), header.index))
        if header.speech and len(audio) >= 64 and any(audio):
            result.speech_frames += 1
            at = stream.find(audio[:64], searched[0])  # frames come in order: search on from the last one
            if at >= 0 and stream[at : at + len(audio)] == audio:
                searched[0] = at
                result.aligned += 1
                offset = (base[0] + at) // 2 - round(header.index * 16000 / fps)
                result.offsets[offset] = result.offsets.get(offset, 0) + 1
                end = (base[0] + at + len(audio)) // 2
                if at > 1 << 20:  # what is behind the frames given out is not needed again
                    del stream[:at]
                    base[0] += at
                    searched[0] = 0
                while sent_at and sent_at[0][0] < end:
                    sent_at.popleft()
                if sent_at:
                    result.glass.append(now - sent_at[0][1])
            else:
                result.misaligned += 1
