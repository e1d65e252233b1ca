"""A live server on a free port of 127.0.0.1 for a test, and clients of the WebSocket protocol."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from lipsync_cli.serve.config import ServeConfig
from lipsync_cli.serve.protocol import parse_frame
from lipsync_cli.serve.run import RunningServer

TOKEN = "test-token-123"


@contextmanager
def server(runtime, **kw):
    config = ServeConfig(port=0, devices="cpu", **kw).checked()
    with RunningServer(config, runtime) as running:
        yield running


def ws_url(running, path="/v1/live", **query):
    q = "&".join(f"{k}={v}" for k, v in query.items())
    return running.url.replace("http://", "ws://") + path + (f"?{q}" if q else "")


def start_message(character="alice", rate=16000, fmt="s16le", codec="h264", **extra):
    return json.dumps({"type": "start", "character": character, "audio": {"format": fmt, "rate": rate},
                       "video": {"codec": codec}, **extra})


def pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).round().astype("<i2").tobytes()


def refusal(ws, timeout=10.0):
    """Read until the server's error message and close: (message, close code)."""
    message = None
    ends = time.monotonic() + timeout
    try:
        while time.monotonic() < ends:
            data = ws.recv(timeout=timeout)
            if isinstance(data, str) and json.loads(data)["type"] == "error":
                message = json.loads(data)["message"]
    except ConnectionClosed as exc:
        return message, exc.rcvd.code if exc.rcvd is not None else None
    return message, "not closed"


class Healthy:
    """A session that streams speech at real-time pace on a thread and records every frame's index, to show
    that other sessions' troubles never cost it a frame."""

    def __init__(self, running, token=None):
        self.url = ws_url(running, token=token) if token else ws_url(running)
        self.indices: list[int] = []
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "the healthy session did not start"

    def _run(self):
        from lipsync_cli.audio.synthetic import speech_like

        try:
            with connect(self.url, open_timeout=30) as ws:
                ws.send(start_message())
                json.loads(ws.recv(timeout=30))
                self.ready.set()
                x = pcm16(speech_like(30.0, seed=12))
                started, sent = time.monotonic(), 0
                while not self.stop.is_set():
                    if sent < len(x) and time.monotonic() - started >= sent / 32000:
                        ws.send(x[sent : sent + 1280])
                        sent += 1280
                    try:
                        data = ws.recv(timeout=0.01)
                    except TimeoutError:
                        continue
                    if isinstance(data, bytes):
                        self.indices.append(parse_frame(data)[0].index)
                ws.send(json.dumps({"type": "stop"}))
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    def finish(self):
        self.stop.set()
        self.thread.join(10)
        assert self.error is None, self.error
        assert self.indices and self.indices == list(range(len(self.indices))), "the healthy session missed frames"
        return len(self.indices)
