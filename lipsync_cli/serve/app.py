"""The FastAPI app of `lipsync serve`: the page, the live WebSocket, the characters, health and metrics, all
over one `Server` (serve/server.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from lipsync_cli.resources import bundled_dir
from lipsync_cli.serve.live_ws import Connection
from lipsync_cli.serve.server import Server

STATIC = Path(__file__).resolve().parent / "static"
PAGE_FILES = {"app.js": "text/javascript", "worklet.js": "text/javascript", "style.css": "text/css"}


def create_app(server: Server) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        server.manager.draining.set()  # every session closes with 1001 within a tenth of a second
        for _ in range(20):
            if not server.manager.active:
                break
            await asyncio.sleep(0.05)

    app = FastAPI(title="lipsync", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    denied = JSONResponse({"error": "a valid token is needed (Authorization: Bearer or ?token=)"}, status_code=401)

    @app.middleware("http")
    async def trusted(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Every route: the name the server was reached by and the page's origin (the token: per route)."""
        refused = server.trust.refusal(request.headers, request.query_params, token=False)
        if refused is not None:
            return JSONResponse({"error": refused[1]}, status_code=403)
        return await call_next(request)

    @app.get("/")
    async def page(request: Request) -> Response:
        if not server.authorized(request):
            return denied
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in PAGE_FILES:
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(STATIC / name, media_type=PAGE_FILES[name], headers={"Cache-Control": "no-cache"})

    @app.get("/v1/samples/{name}")
    async def sample(name: str, request: Request) -> Response:
        folder = bundled_dir("samples")
        if not server.authorized(request):
            return denied
        if folder is None or name not in {p.name for p in folder.glob("*.wav")}:
            return PlainTextResponse("no such sample", status_code=404)
        return FileResponse(folder / name, media_type="audio/wav")

    @app.get("/v1/characters")
    async def characters(request: Request) -> Response:
        if not server.authorized(request):
            return denied
        return JSONResponse({"characters": await asyncio.to_thread(server.manager.listing)})

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        ready, why = server.manager.ready()
        return JSONResponse({"ready": ready, "reason": why}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if not server.authorized(request):
            return denied
        return Response(server.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/v1/live")
    async def live(ws: WebSocket) -> None:
        await Connection(ws, server).run()

    return app
