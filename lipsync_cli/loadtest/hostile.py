"""`lipsync loadtest --hostile K`: healthy sessions alone, then beside K hostile clients of each kind, then
alone again, with the server's memory all along. The kinds: slow readers (a session whose client reads
nothing, with a small receive buffer, held until the server drops it), bursts (30 s of audio at once, past
the 20 s a session queues: refused) and vanishing clients (a session begun and left without a close frame).
Each hostile client starts again as soon as it is done, until the hostile phase ends."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.protocol import State
from websockets.uri import parse_uri

from lipsync_cli.loadtest.client import Scenario, SessionResult, run_session
from lipsync_cli.loadtest.run import _server_process, every_second, percentiles

AFTER = 10.0  # seconds after the hostile clients are gone when the memory is read again
SLOW_HOLD = 16.0  # seconds a slow reader keeps its connection at most (the server drops it before: 10 s + 5)
BURST_SECONDS = 30  # of audio a burst sends at once


@dataclass
class Hostiles:
    """What the hostile clients did and what the server answered (close codes; 'reset': dropped)."""

    started: Counter = field(default_factory=Counter)
    outcomes: dict[str, Counter] = field(default_factory=dict)

    def record(self, kind: str, outcome: str) -> None:
        self.outcomes.setdefault(kind, Counter())[outcome] += 1


def _start(scenario: Scenario, codec: str | None = None) -> str:
    return json.dumps({"type": "start", "character": scenario.character, "audio": {"format": "s16le", "rate": 16000},
                       "video": {"codec": codec or scenario.codec}})


def _headers(scenario: Scenario) -> dict[str, str] | None:
    return {"Authorization": f"Bearer {scenario.token}"} if scenario.token else None


async def _slow_reader(scenario: Scenario, stop: asyncio.Event, seen: Hostiles) -> None:
    """A session whose client never reads: a socket with a 4 KiB receive buffer that nothing reads from
    until the server has dropped it (or SLOW_HOLD has passed), asking for JPEG frames (they fill the buffers
    soonest); then what came is read to learn the close."""
    loop = asyncio.get_running_loop()
    url = urlsplit(scenario.url)
    sock = socket.socket(socket.AF_INET6 if ":" in (url.hostname or "") else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (url.hostname, url.port or 80))
        protocol = ClientProtocol(parse_uri(scenario.url), max_size=None)
        request = protocol.connect()
        for name, value in (_headers(scenario) or {}).items():
            request.headers[name] = value
        protocol.send_request(request)
        await loop.sock_sendall(sock, b"".join(protocol.data_to_send()))
        while protocol.state is not State.OPEN and protocol.handshake_exc is None:
            protocol.receive_data(await loop.sock_recv(sock, 4096))
            protocol.events_received()
        protocol.send_text(_start(scenario, "jpeg").encode())  # the larger frames: buffers fill at once
        await loop.sock_sendall(sock, b"".join(protocol.data_to_send()))
        seen.started["slow reader"] += 1
        ends = time.monotonic() + SLOW_HOLD
        while not stop.is_set() and time.monotonic() < ends:
            await asyncio.sleep(0.2)
        seen.record("slow reader", await _drain(loop, sock, protocol))
    except OSError as exc:
        seen.record("slow reader", f"error: {type(exc).__name__}")
    finally:
        sock.close()


async def _drain(loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: ClientProtocol) -> str:
    """Read what the server sent until it closed: its close code with its reason, or 'reset'."""
    try:
        while protocol.close_rcvd is None:
            data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 2.0)
            protocol.receive_data(data)
            protocol.events_received()
            if not data:
                break
    except (OSError, TimeoutError):
        return "reset"
    close = protocol.close_rcvd
    return f"{close.code} {close.reason}".strip() if close is not None else "reset"


async def _burst(scenario: Scenario, speech: np.ndarray, stop: asyncio.Event, seen: Hostiles) -> None:
    """A session sent BURST_SECONDS of audio at once, past what a session queues."""
    second = np.resize(speech, 16000).astype("<i2").tobytes()
    try:
        async with connect(scenario.url, additional_headers=_headers(scenario), open_timeout=30,
                           max_size=None) as ws:
            await ws.send(_start(scenario))
            seen.started["burst"] += 1
            await ws.recv()
            for _ in range(BURST_SECONDS):
                await ws.send(second)
            async for _ in ws:
                pass
        seen.record("burst", "1000")
    except ConnectionClosed as exc:
        seen.record("burst", f"{exc.rcvd.code} {exc.rcvd.reason}" if exc.rcvd is not None else "reset")
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        seen.record("burst", f"error: {type(exc).__name__}")
    await asyncio.sleep(0.2)


async def _vanishing(scenario: Scenario, speech: np.ndarray, stop: asyncio.Event, seen: Hostiles) -> None:
    """A session begun, half a second of speech sent and a few frames read, then the connection dropped
    without a close frame."""
    try:
        async with connect(scenario.url, additional_headers=_headers(scenario), open_timeout=30,
                           max_size=None) as ws:
            await ws.send(_start(scenario))
            seen.started["vanishing"] += 1
            await ws.recv()
            await ws.send(np.resize(speech, 8000).astype("<i2").tobytes())
            for _ in range(5):
                await ws.recv()
            ws.transport.abort()
        seen.record("vanishing", "vanished")
    except ConnectionClosed as exc:
        seen.record("vanishing", "vanished" if exc.rcvd is None else f"{exc.rcvd.code} {exc.rcvd.reason}")
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        seen.record("vanishing", f"error: {type(exc).__name__}")
    await asyncio.sleep(0.5)


def _between(results: list[SessionResult], start: float, end: float) -> list[float]:
    """The lateness of the healthy sessions' frames that arrived between two moments."""
    return [late for r in results for (at, _), late in zip(r.arrivals, r.lateness, strict=True)
            if r.origin is not None and start <= r.origin + at < end]


def _before(memory: list[tuple[float, float]], moment: float) -> float | None:
    """The last memory sample before `moment` (time.monotonic())."""
    earlier = [m for t, m in memory if t < moment]
    return earlier[-1] if earlier else None


KINDS = ("slow reader", "burst", "vanishing")


def run_hostile(scenario: Scenario, sessions: int, speech: np.ndarray, each: int, metrics_url: str,
                on_progress: Callable[[str], None] | None = None, kinds: tuple[str, ...] = KINDS,
                after: float = AFTER) -> dict:
    """`sessions` healthy sessions alone for `scenario.seconds`, beside `each` hostile clients of each kind for
    as long again, then alone until `after` seconds after the last hostile client was gone; the server's RSS
    every second (before: the last reading before the hostile clients came; after: `after` seconds after they
    went)."""
    phase = scenario.seconds
    memory: list[tuple[float, float]] = []  # (time.monotonic(), MB)
    moments: dict[str, float] = {}
    seen = Hostiles()

    def watch() -> None:
        sample = _server_process(metrics_url, scenario.token)
        if sample is not None:
            memory.append((time.monotonic(), sample[0]))
        if on_progress is not None and memory:
            where = "hostile" if "hostile" in moments and "gone" not in moments else "alone"
            on_progress(f"{sessions} healthy sessions, {where}: server {memory[-1][1]:.0f} MB, hostile clients "
                        f"so far {dict(seen.started)}")

    async def main() -> list[SessionResult]:
        stop, stop_hostile = asyncio.Event(), asyncio.Event()
        healthy = replace(scenario, seconds=3 * phase + after + 60)  # ended by `stop`
        shifts = [np.roll(speech, i * len(speech) // max(1, sessions)) for i in range(sessions)]
        tasks = [asyncio.create_task(run_session(healthy, s, stop)) for s in shifts]
        await asyncio.sleep(phase)
        moments["hostile"] = time.monotonic()
        make = {"slow reader": _slow_reader, "burst": lambda *a: _burst(scenario, speech, *a),
                "vanishing": lambda *a: _vanishing(scenario, speech, *a)}
        clients = [make[kind] for kind in kinds for _ in range(each)]
        hostile = [asyncio.create_task(_loop(c, scenario, stop_hostile, seen)) for c in clients]
        await asyncio.sleep(phase)
        stop_hostile.set()
        if hostile:
            await asyncio.wait(hostile, timeout=5.0)
        for task in hostile:
            task.cancel()
        await asyncio.gather(*hostile, return_exceptions=True)
        moments["gone"] = time.monotonic()
        await asyncio.sleep(after + 1.5)  # the healthy sessions go on past the moment memory is read again
        stop.set()
        return list(await asyncio.gather(*tasks))

    with every_second(watch):
        results = asyncio.run(main())
    start = min((r.origin for r in results if r.origin is not None), default=time.monotonic())
    hostile, gone = moments["hostile"], moments["gone"]
    before, later = _before(memory, hostile), _before(memory, gone + after + 0.5)
    worst = max((m for t, m in memory if hostile <= t <= gone + after), default=None)
    return {
        "sessions": sessions, "seconds": phase, "hostile_each": each,
        "healthy": [{"frames": r.frames, "missed": _missed(r), "refused": r.refused, "error": r.error}
                    for r in results],
        "lateness_ms": {"alone": percentiles(_between(results, start + 2.0, hostile)),
                        "hostile": percentiles(_between(results, hostile, gone))},
        "memory_mb": {"before": before, "worst": worst, "after": later, "after_seconds": after,
                      "after_minus_before": round(later - before, 1) if before and later else None,
                      "samples": [[round(t - start, 1), round(m, 1)] for t, m in memory]},
        "hostile": {kind: {"started": seen.started[kind], "outcomes": dict(seen.outcomes.get(kind, {}))}
                    for kind in kinds},
    }


async def _loop(client: Callable[..., Any], scenario: Scenario, stop: asyncio.Event, seen: Hostiles) -> None:
    while not stop.is_set():
        if client is _slow_reader:
            await _slow_reader(scenario, stop, seen)
        else:
            await client(stop, seen)


def _missed(r: SessionResult) -> int:
    """Frames that never came between the first and the last that did."""
    indices = [k for _, k in r.arrivals]
    return (indices[-1] - indices[0] + 1 - len(set(indices))) if indices else 0
