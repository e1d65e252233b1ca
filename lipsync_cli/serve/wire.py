"""What uvicorn reads from a client before the app sees it, held to lipsync's own limits whichever HTTP
parser uvicorn picks (h11, or httptools where it is installed, as `uvicorn[standard]` and Ray Serve install
it; httptools has no limits of its own): a request head of at most MAX_HEAD bytes, MAX_LINE bytes a line and
MAX_HEADERS header lines, arriving within HEAD_TIMEOUT seconds; past them the answer is 431 (408 for the
time) and the connection closes. And two things of the WebSocket layer: a text message that is not UTF-8
goes to the app to be refused there (protocol.parse_text: 1007) instead of a traceback in the log, and a
connection whose session is over while the client still has not read what was sent is dropped after
LINGER seconds instead of being kept forever."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from typing import Any, Literal

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

HttpParser = Literal["auto", "h11", "httptools"]

MAX_HEAD = 32 * 1024  # bytes of a request's line and headers
MAX_LINE = 8 * 1024  # bytes of one of its lines
MAX_HEADERS = 100  # header lines
HEAD_TIMEOUT = 10.0  # seconds from the connection (or the last response) to the end of the next head
LINGER = 5.0  # seconds a finished WebSocket connection may take to hand over what is still unsent

log = logging.getLogger("lipsync")


class _HeadLimit(asyncio.Protocol):
    """Counts a request head's bytes and lines as they arrive, before the parser sees them."""

    transport: asyncio.Transport
    _head = 0  # bytes of the head so far; -1 past its end (the body, the response)
    _lines = 0  # ended, the request line and the empty one included
    _line = 0  # bytes of the line not yet ended
    _tail = b""  # the head's last 3 bytes: its end may straddle two reads
    _timer: asyncio.TimerHandle | None = None
    _refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._head >= 0:
            seen = self._tail + data
            end = seen.find(b"\r\n\r\n")
            part = data if end < 0 else seen[len(self._tail) : end + 4]
            self._head += len(part)
            segments = part.split(b"\n")
            if len(segments) == 1:
                self._line += len(part)
                longest = self._line
            else:
                longest = max(self._line + len(segments[0]), *map(len, segments[1:]))
                self._line = len(segments[-1])
                self._lines += len(segments) - 1
            self._tail = seen[-3:]
            if self._head > MAX_HEAD or longest > MAX_LINE or self._lines > MAX_HEADERS + 2:
                self._refuse(431, "Request Header Fields Too Large", f"a request head is limited to {MAX_HEAD} "
                             f"bytes, {MAX_LINE} bytes a line and {MAX_HEADERS} headers")
                return
            if end >= 0:
                self._head = -1
                self._disarm()
        super().data_received(data)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        self._head, self._lines, self._line, self._tail = 0, 0, 0, b""
        self._arm()
        super().on_response_complete()  # type: ignore[misc]

    def _arm(self) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT, self._late)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _late(self) -> None:
        self._timer = None
        if self._head >= 0:
            self._refuse(408, "Request Timeout", f"a request head must arrive within {HEAD_TIMEOUT:g} s")

    def _refuse(self, status: int, phrase: str, message: str) -> None:
        self._refused = True
        self._disarm()
        body = (message + "\n").encode()
        self.transport.write(f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
                             f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
        self.transport.close()
        if self._head:
            log.warning("refused a request from %s: %s", self.transport.get_extra_info("peername"), message)


def http_protocol(parser: HttpParser = "auto") -> type[asyncio.Protocol]:
    """uvicorn's protocol for the parser (auto: httptools where it is installed, as uvicorn picks), held to
    lipsync's limits."""
    if parser == "httptools" or (parser == "auto" and importlib.util.find_spec("httptools") is not None):
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        class HttpTools(_HeadLimit, HttpToolsProtocol):
            pass

        return HttpTools
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class H11(_HeadLimit, H11Protocol):
        pass

    return H11


class LiveWebSockets(WebSocketsSansIOProtocol):
    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            data = b"".join(self.frames)
            try:
                data.decode()
            except UnicodeDecodeError:  # the bad bytes as surrogates: the app refuses the message with 1007
                self.frames = []
                self.queue.put_nowait({"type": "websocket.receive", "text": data.decode("utf-8", "surrogateescape")})
                if not self.read_paused:  # as uvicorn does: one message at a time
                    self.read_paused = True
                    self.transport.pause_reading()
                return
        super().send_receive_event_to_app()

    async def run_asgi(self) -> None:
        await super().run_asgi()
        self.loop.call_later(LINGER, self._drop_if_stuck)

    def _drop_if_stuck(self) -> None:
        """A client that has not taken what was sent LINGER seconds after its session ended never will."""
        if self.transport.get_write_buffer_size() and not self.disconnected:
            if self.close_timer is not None:
                self.close_timer.cancel()
                self.close_timer = None
            self.transport.abort()


def uvicorn_options(parser: HttpParser = "auto") -> dict[str, Any]:
    """The options of uvicorn.Config that hold its connections to these limits."""
    return {"http": http_protocol(parser), "ws": LiveWebSockets, "h11_max_incomplete_event_size": MAX_HEAD + 1,
            "ws_max_size": 1 << 20}
