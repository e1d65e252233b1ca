"""A live server on a free port of 127.0.0.1 for a test, and clients of the WebSocket protocol."""

from __future__ import annotations

import json
import socket
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
def server(runtime, http="auto", grpc_port=None, **kw):
    config = ServeConfig(port=0, devices="cpu", **kw).checked()
    with RunningServer(config, runtime, grpc_port=grpc_port, http=http) as running:
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
        missed = sorted(set(range(len(self.indices))) - set(self.indices))
        assert self.indices and self.indices == list(range(len(self.indices))), f"the healthy session missed {missed}"
        return len(self.indices)


class RawClient:
    """A WebSocket client on a plain socket that reads only when asked (a client that never reads, with a
    small receive buffer), sends whatever bytes it is given as a message, and names any Host."""

    def __init__(self, running, host=None, origin=None, receive_buffer=4096, query=""):
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", running.port))
        self.protocol = ClientProtocol(parse_uri(f"ws://{host or f'127.0.0.1:{running.port}'}/v1/live{query}"),
                                       max_size=None)
        request = self.protocol.connect()
        if origin is not None:
            request.headers["Origin"] = origin
        self.protocol.send_request(request)
        self._flush()
        self.events: list = []
        while self.protocol.handshake_exc is None and not self._opened():
            self._read()
        if self.protocol.handshake_exc is not None:
            raise self.protocol.handshake_exc

    def _opened(self):
        """The handshake is over (the server's first messages, even its close, may have come with it)."""
        from websockets.protocol import State

        return self.protocol.state is not State.CONNECTING

    def _flush(self):
        self.sock.sendall(b"".join(self.protocol.data_to_send()))

    def _read(self):
        data = self.sock.recv(1 << 16)
        self.protocol.receive_data(data)
        self.events += self.protocol.events_received()
        if not data:
            raise ConnectionError("closed")

    def text(self, data: str | bytes):
        if self._open():  # a server that has closed is sent nothing more
            self.protocol.send_text(data.encode() if isinstance(data, str) else data)
            self._flush()

    def binary(self, data: bytes):
        if self._open():
            self.protocol.send_binary(data)
            self._flush()

    def _open(self):
        from websockets.protocol import State

        return self.protocol.state is State.OPEN

    def next_text(self) -> str:
        """The next text message (binary ones are read past)."""
        from websockets.frames import Opcode

        while True:
            for i, event in enumerate(self.events):
                if getattr(event, "opcode", None) is Opcode.TEXT:
                    del self.events[: i + 1]
                    return event.data.decode()
            self.events.clear()
            self._read()

    def closing(self):
        """Read until the server closes: (its texts, its close code)."""
        from websockets.frames import Opcode

        while self.protocol.close_rcvd is None:
            try:
                self._read()
            except (ConnectionError, OSError):
                break
        texts = [e.data.decode() for e in self.events if getattr(e, "opcode", None) is Opcode.TEXT]
        code = self.protocol.close_rcvd.code if self.protocol.close_rcvd is not None else None
        return texts, code

    def gone(self, timeout=10.0) -> bool:
        """Whether the server dropped the connection (its unread frames read and thrown away meanwhile)."""
        ends = time.monotonic() + timeout
        self.sock.settimeout(0.5)
        while time.monotonic() < ends:
            try:
                if not self.sock.recv(1 << 20):
                    return True
            except TimeoutError:
                continue
            except OSError:  # reset
                return True
        return False

    def close(self):
        self.sock.close()


class LogWatch:
    """While on: every record of the server's loggers at WARNING or above, every exception a thread ends with
    and every unraisable one; `tracebacks()` are those that carry a traceback or are errors."""

    LOGGERS = ("", "uvicorn", "uvicorn.error", "lipsync", "asyncio", "grpc", "grpc._cython.cygrpc")

    def __init__(self):
        import logging

        self.records: list = []
        self.handler = logging.Handler(logging.WARNING)
        self.handler.emit = self.records.append  # type: ignore[method-assign]

    def __enter__(self):
        import logging
        import sys

        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self.handler)
        self._hooks = threading.excepthook, sys.unraisablehook
        threading.excepthook = lambda args: self.records.append(f"thread: {args.exc_type.__name__}: {args.exc_value}")
        sys.unraisablehook = lambda u: self.records.append(f"unraisable: {u.exc_type.__name__}: {u.exc_value}")
        return self

    def __exit__(self, *exc):
        import logging
        import sys

        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self.handler)
        threading.excepthook, sys.unraisablehook = self._hooks

    def tracebacks(self) -> list[str]:
        import logging

        found = []
        for r in self.records:
            if isinstance(r, str):
                found.append(r)
            elif r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage():
                found.append(f"{r.name}: {r.getMessage()}")
        return found
