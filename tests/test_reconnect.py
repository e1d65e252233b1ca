"""What a client does when its connection drops (a cluster's replica died: no close frame, 1006) or the server
has no room (1013, or a refusal before the WebSocket upgrade, as Ray Serve answers): the load generator
reconnects and counts it, and names a refusal "at capacity, try again"; the page, in a real Chromium, shows it
and reconnects by itself. The drop and the refusal come from a TCP forwarder cut in front of a real server."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
from websockets.sync.client import connect

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.loadtest.client import Scenario, SessionResult, run_session

from .browser_helpers import launch
from .cut_proxy import CutProxy
from .serve_helpers import server, start_message, ws_url

SPEECH = (speech_like(4.0, seed=5) * 32767).astype(np.int16)


def in_thread(scenario: Scenario) -> tuple[threading.Thread, list[SessionResult]]:
    out: list[SessionResult] = []
    thread = threading.Thread(target=lambda: out.append(asyncio.run(run_session(scenario, SPEECH, asyncio.Event()))),
                              daemon=True)
    thread.start()
    return thread, out


def test_the_load_generator_reconnects_a_dropped_session_and_names_refusals(runtime):
    with server(runtime, max_sessions=1) as running:
        proxy = CutProxy(int(running.url.rsplit(":", 1)[1]))
        try:
            url = proxy.url.replace("http://", "ws://") + "/v1/live"
            thread, out = in_thread(Scenario(url, seconds=4.0, codec="jpeg"))
            deadline = time.monotonic() + 30
            while running.server.metrics.frames.labels("idle")._value.get() + \
                    running.server.metrics.frames.labels("speech")._value.get() < 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            proxy.cut()
            thread.join(60)
            result = out[0]
            assert result.reconnects == 1 and result.refused is None and result.error is None, result
            indices = [i for _, i in result.arrivals]
            restart = next(k for k in range(1, len(indices)) if indices[k] < indices[k - 1])
            assert indices[:restart] == list(range(restart)) and indices[restart] == 0 and len(indices) > restart + 10

            # the one place is taken: the next session is refused with 1013
            deadline = time.monotonic() + 30
            while running.server.manager.active and time.monotonic() < deadline:  # the last one's place given back
                time.sleep(0.05)
            with connect(ws_url(running), open_timeout=30) as holder:
                holder.send(start_message())
                assert json.loads(holder.recv(timeout=30))["type"] == "ready"
                thread, out = in_thread(Scenario(url, seconds=1.0))
                thread.join(60)
            assert out[0].refused == "at capacity, try again (at capacity: 1 of 1 sessions; try again later)"
            assert out[0].close_code == 1013 and out[0].reconnects == 0

            proxy.refuse_status = 503  # what Ray Serve answers before the upgrade when it can queue no more
            thread, out = in_thread(Scenario(url, seconds=1.0))
            thread.join(60)
            assert out[0].refused == "at capacity, try again (HTTP 503 before the WebSocket upgrade)"
            assert out[0].http_status == 503 and out[0].reconnects == 0 and out[0].frames == 0
        finally:
            proxy.close()


def test_the_page_reconnects_by_itself_and_shows_a_refusal(browser, runtime):  # noqa: F811
    with server(runtime) as running:
        proxy = CutProxy(int(running.url.rsplit(":", 1)[1]))
        chromium = launch(browser)
        try:
            page = chromium.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{proxy.url}/?character=alice")
            live = "window.lipsync && window.lipsync.stats.state.startsWith('live')"
            page.wait_for_function(live, timeout=60_000)
            page.wait_for_function("window.lipsync.stats.framesReceived > 10", timeout=30_000)
            proxy.cut()
            page.wait_for_function("window.lipsync.stats.state.startsWith('connection lost: trying again in')",
                                   timeout=10_000, polling=10)
            page.wait_for_function(live + " && window.lipsync.stats.reconnects === 1", timeout=30_000)

            proxy.refuse_status = 503
            proxy.cut()
            page.wait_for_function("window.lipsync.stats.state.startsWith('at capacity, try again: trying again in')",
                                   timeout=30_000, polling=10)
            proxy.refuse_status = None
            page.wait_for_function(live, timeout=60_000)
            stats = page.evaluate("window.lipsync.stats")
            assert stats["reconnects"] >= 2 and stats["atCapacity"] >= 1 and "replica" not in stats["state"], stats
        finally:
            chromium.close()
            proxy.close()
    assert not errors, errors
