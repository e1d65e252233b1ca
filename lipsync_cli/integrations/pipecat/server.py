"""The web server of `lipsync agent`: the page, its static files, and the WebRTC offer each browser session
starts with; one Pipecat pipeline (agent.py) per session, all on one runtime.

Who may use it is `lipsync serve`'s rule (trust.py): this machine only unless `--host` says otherwise, and then
a token (`--token`, LIPSYNC_TOKEN; the page passes its `?token=` on as a bearer header) or an explicit
`--no-auth`; a browser's Origin must be the page's own or an allowed one. Every request goes through
`Trust.refusal` (the static files without the token, as `serve` serves its own). The offer's SDP answer carries
aiortc's host candidates: the media flows over this machine's own interfaces (aioice leaves loopback out), with
no STUN or TURN server."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from pipecat.pipeline.worker import PipelineWorker
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.workers.runner import WorkerRunner

from lipsync_cli.errors import InputError
from lipsync_cli.integrations.pipecat.agent import AgentOptions, agent_session
from lipsync_cli.runtime import Runtime
from lipsync_cli.trust import Trust, address, is_loopback

log = logging.getLogger("lipsync.agent")
STATIC = Path(__file__).resolve().parent / "static"
PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
MAX_OFFER = 64 * 1024  # bytes of an offer's JSON
GONE, CONNECT = 3.0, 30.0  # seconds without the page's pings, and to connect at first, before a session ends


@dataclass(frozen=True)
class AgentConfig:
    host: str = "127.0.0.1"
    port: int = 8090
    token: str | None = None
    no_auth: bool = False
    allow_origin: tuple[str, ...] = ()
    max_sessions: int = 2
    options: AgentOptions = AgentOptions()

    def checked(self) -> AgentConfig:
        if not 0 <= self.port <= 65535:
            raise InputError(f"port must be 0 to 65535, not {self.port}", option="port")
        if self.max_sessions < 1:
            raise InputError(f"max sessions must be at least 1, not {self.max_sessions}", option="max_sessions")
        if self.token is not None and len(self.token) < 8:
            raise InputError("a token must be at least 8 characters", option="token")
        if not is_loopback(self.host) and self.token is None and not self.no_auth:
            raise InputError(f"listening on {self.host} (beyond this machine) needs a token (--token or "
                             "LIPSYNC_TOKEN) or an explicit --no-auth", option="host")
        return self

    @property
    def trust(self) -> Trust:
        return Trust(self.token, self.allow_origin, bind=self.host)  # on loopback: DNS rebinding refused


# one browser's session: a pipeline worker over the WebRTC connection (the echo agent's, or a bot of your own)
Bot = Callable[[SmallWebRTCConnection], PipelineWorker]


@dataclass(eq=False)
class _Running:
    worker: PipelineWorker
    task: asyncio.Task
    started: float = field(default_factory=time.monotonic)


class AgentServer:
    def __init__(self, config: AgentConfig, runtime: Runtime | None, bot: Bot | None = None) -> None:
        """`bot`: builds each session's pipeline worker (default: the echo agent of `config.options`, on
        `runtime`)."""
        self.config, self.runtime, self.trust = config, runtime, config.trust
        if bot is None:
            if runtime is None:
                raise ValueError("the echo agent needs a runtime")
            options = config.options
            bot = lambda connection: agent_session(connection, runtime, options).worker  # noqa: E731
        self.bot = bot
        self.sessions: dict[str, _Running] = {}
        self._admitting = 0  # offers being answered: they count against max_sessions too

    def refused(self, request: Request, token: bool = True) -> Response | None:
        trust = self.trust if token else replace(self.trust, token=None)
        why = trust.refusal(request.headers, request.query_params)
        if why is None:
            return None
        reason, message = why
        return JSONResponse({"error": message, "reason": reason}, status_code=401 if reason == "bad_token" else 403)

    async def offer(self, request: Request) -> Response:
        refused = self.refused(request)
        if refused is not None:
            return refused
        body = await _bounded_body(request)
        if body is None:
            return _error(413, f"an offer is at most {MAX_OFFER // 1024} KiB of JSON")
        try:
            data = json.loads(body)
            sdp, kind = data["sdp"], data["type"]
            if not isinstance(sdp, str) or kind != "offer":
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return _error(400, 'an offer is JSON {"sdp": "<the SDP offer>", "type": "offer"}')
        media = [line.split()[0][2:] for line in sdp.splitlines() if line.startswith("m=") and line.split()]
        if media[:2] != ["audio", "video"]:
            return _error(400, "not a usable SDP offer: it needs an audio section (the microphone) and then a video "
                               "section (the character), as the page's")
        if len(self.sessions) + self._admitting >= self.config.max_sessions:
            return _error(503, f"at capacity: {self.config.max_sessions} sessions are running; try again later")
        self._admitting += 1
        try:
            return await self._answer(sdp)
        finally:
            self._admitting -= 1

    async def _answer(self, sdp: str) -> Response:
        connection = SmallWebRTCConnection(ice_servers=[])
        try:
            await connection.initialize(sdp=sdp, type="offer")
        except Exception as exc:
            await connection.disconnect()
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return _error(400, f"not a usable SDP offer: {why}")
        try:
            worker = await asyncio.to_thread(self.bot, connection)
        except Exception as exc:
            await connection.disconnect()
            log.error("lipsync agent: a session could not start: %s", exc)
            return _error(500, f"the session could not start: {exc}")
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        answer = connection.get_answer()
        if answer is None:
            await connection.disconnect()
            return _error(500, "the WebRTC connection gave no answer")
        pc_id = answer["pc_id"]
        task = asyncio.create_task(runner.run(), name=f"lipsync-agent-{pc_id}")
        watch = asyncio.create_task(_watch(connection, worker))
        self.sessions[pc_id] = _Running(worker, task)

        def ended(_: asyncio.Task) -> None:
            self.sessions.pop(pc_id, None)
            watch.cancel()

        task.add_done_callback(ended)
        log.info("lipsync agent: session %s started (%d running)", pc_id, len(self.sessions))
        return JSONResponse(answer)

    async def close(self) -> None:
        running = list(self.sessions.values())
        for r in running:
            await r.worker.cancel(reason="the server is stopping")
        if running:
            await asyncio.wait([r.task for r in running], timeout=5)


async def _watch(connection: SmallWebRTCConnection, worker: PipelineWorker) -> None:
    """End a session whose browser went away without closing (a killed tab leaves aiortc's connection up): the
    page pings over its data channel every second, and Pipecat counts 3 s without a ping as gone; after GONE
    seconds of that, or CONNECT seconds without ever connecting, the pipeline is cancelled."""
    seen, gone, started = False, 0.0, time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        if connection.is_connected():
            seen, gone = True, 0.0
            continue
        gone += 1.0
        if (seen and gone >= GONE) or (not seen and time.monotonic() - started >= CONNECT):
            log.info("lipsync agent: session %s ended: its browser is gone", connection.pc_id)
            await worker.cancel(reason="the browser is gone")
            return


async def _bounded_body(request: Request) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_OFFER):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_OFFER:
            return None
    return body


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(server: AgentServer) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await server.close()

    app = FastAPI(title="lipsync agent", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.get("/")
    async def page(request: Request) -> Response:
        refused = server.refused(request)
        if refused is not None:
            return refused
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}")
    async def static(name: str, request: Request) -> Response:
        refused = server.refused(request, token=False)
        if refused is not None:
            return refused
        if name not in PAGE_FILES:
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(STATIC / name, media_type=PAGE_FILES[name], headers={"Cache-Control": "no-cache"})

    @app.post("/api/offer")
    async def offer(request: Request) -> Response:
        return await server.offer(request)

    @app.get("/healthz")
    async def healthz(request: Request) -> Response:
        refused = server.refused(request, token=False)
        if refused is not None:
            return refused
        return JSONResponse({"status": "ok", "sessions": len(server.sessions)})

    return app


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def run_agent(config: AgentConfig, runtime: Runtime | None, announce: Callable[[str], None], bot: Bot | None = None
              ) -> None:
    """Serve the page and its sessions until SIGINT or SIGTERM (uvicorn stops, and with it every session)."""
    server = AgentServer(config, runtime, bot)
    sock = bind(config.host, config.port)
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(create_app(server), log_level="warning", lifespan="on",
                                       timeout_graceful_shutdown=2))
    auth = "token" if config.token else ("none (--no-auth)" if config.no_auth else "none (this machine only)")
    who = f"talking as {config.options.character}" if bot is None else "running your bot"
    announce(f"lipsync agent: http://{address(config.host, port)}/ {who}; up to {config.max_sessions} sessions; "
             f"auth: {auth}")
    if threading.current_thread() is threading.main_thread():
        # uvicorn takes SIGINT and SIGTERM while it runs and raises them again once it has shut down (every
        # session closed by then): the command then ends with 0
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda number, frame: None)
    uv.run(sockets=[sock])


def serve_agent(bot: Bot, config: AgentConfig = AgentConfig()) -> None:
    """Serve `lipsync agent`'s page for a bot of your own: `bot(connection)` builds each browser session's pipeline
    worker (its SmallWebRTCTransport on that connection); the page, the trust rules and the session limit are the
    agent's."""
    run_agent(config.checked(), None, print, bot)
