"""Running the server: uvicorn on the app, logs as text or JSON, and a shutdown that closes every session
with a close frame (1001) before uvicorn stops."""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import uvicorn

from lipsync_cli.runtime import Runtime, RuntimeConfig
from lipsync_cli.serve.app import create_app
from lipsync_cli.serve.config import ServeConfig
from lipsync_cli.serve.server import Server
from lipsync_cli.serve.wire import HttpParser, uvicorn_options
from lipsync_cli.trust import address

if TYPE_CHECKING:
    from lipsync_cli.serve.rpc.server import GrpcServer


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": round(record.created, 3), "level": record.levelname.lower(),
                           "logger": record.name, "message": record.getMessage()})


def _logging(fmt: str) -> dict:
    formatter = {"()": JsonFormatter} if fmt == "json" else {"format": "%(asctime)s %(levelname)s %(message)s"}
    handler = {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}
    loggers = {name: {"handlers": ["main"], "level": "INFO", "propagate": False}
               for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "lipsync")}
    loggers["uvicorn.access"]["level"] = "WARNING"
    return {"version": 1, "disable_existing_loggers": False, "formatters": {"main": formatter},
            "handlers": {"main": handler}, "loggers": loggers}


class _Uvicorn(uvicorn.Server):
    """On SIGINT/SIGTERM: the sessions close first (each with a close frame), then uvicorn stops."""

    def __init__(self, config: uvicorn.Config, server: Server) -> None:
        super().__init__(config)
        self.lipsync = server

    def handle_exit(self, sig: int, frame: object) -> None:
        self.lipsync.manager.draining.set()

        def later() -> None:
            ends = time.monotonic() + 1.2
            while self.lipsync.manager.active and time.monotonic() < ends:
                time.sleep(0.02)
            super(_Uvicorn, self).handle_exit(sig, frame)  # type: ignore[arg-type]

        threading.Thread(target=later, daemon=True).start()


def runtime_config(config: ServeConfig, parse_size: Callable[[str | None], int | None]) -> RuntimeConfig:
    return RuntimeConfig(devices=config.devices, max_models=config.max_models, max_memory=parse_size(config.max_memory))


def serve(config: ServeConfig, runtime: Runtime, announce: Callable[[str], None], sock: socket.socket | None = None
          ) -> None:
    """Serve until SIGINT or SIGTERM (or `should_exit`)."""
    server = Server(config, runtime)
    app = create_app(server)
    uv_config = uvicorn.Config(app, host=config.host, port=config.port, log_config=_logging(config.log_format),
                               timeout_graceful_shutdown=2, lifespan="on", **uvicorn_options())
    uv = _Uvicorn(uv_config, server)
    grpc = open_grpc(server, config.grpc_port) if config.grpc_port else None
    names = ", ".join(sorted(server.manager.characters)) or "no characters"
    auth = "token" if config.token else ("none (--no-auth)" if config.no_auth else "none (this machine only)")
    per_device = f", {config.per_device} per device" if config.per_device < config.max_sessions else ""
    announce(f"lipsync serve: http://{config.host}:{config.port}/ (WebSocket /v1/live) serving {names}; up to "
             f"{config.max_sessions} sessions{per_device}; auth: {auth}")
    if grpc is not None:
        announce(grpc_line(server, grpc))
    if threading.current_thread() is threading.main_thread():
        # uvicorn takes SIGINT and SIGTERM while it runs and raises them again once it has shut down: by then
        # the shutdown they asked for is done, and the command ends with 0
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda number, frame: None)
    try:
        uv.run(sockets=[sock] if sock is not None else None)
    finally:
        server.heap.close()
        if grpc is not None:
            grpc.stop()


def open_grpc(server: Server, port: int) -> GrpcServer:
    """The gRPC services, started on the server's host and `port` (a free one when 0)."""
    from lipsync_cli.serve.rpc.monolithic import GrpcOptions
    from lipsync_cli.serve.rpc.server import GrpcServer

    c = server.config
    return GrpcServer(server, c.host, port, GrpcOptions(jpeg_quality=server.jpeg_quality, queue=c.grpc_queue))


def grpc_line(server: Server, grpc: GrpcServer) -> str:
    return (f"lipsync serve: gRPC on {address(server.config.host, grpc.port)} (monolithic.MonolithicService, "
            "lipsync.v1.Live, grpc.health.v1.Health, reflection)")


class RunningServer:
    """A server on a thread of this process (for `lipsync loadtest` and tests): bound to a free port of the
    config's host when its port is 0; `stop()` closes every session and waits for uvicorn to end."""

    def __init__(self, config: ServeConfig, runtime: Runtime, grpc_port: int | None = None,
                 http: HttpParser = "auto") -> None:
        """`grpc_port`: also serve gRPC there (0: a free port; None: no gRPC); `http`: uvicorn's HTTP parser."""
        self.server = Server(config, runtime)
        self.grpc = open_grpc(self.server, grpc_port) if grpc_port is not None else None
        self._sock = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((config.host, config.port))
        self.port = self._sock.getsockname()[1]
        uv_config = uvicorn.Config(create_app(self.server), log_config=_logging(config.log_format),
                                   timeout_graceful_shutdown=2, lifespan="on", **uvicorn_options(http))
        self._uv = uvicorn.Server(uv_config)
        self._thread = threading.Thread(target=self._uv.run, kwargs={"sockets": [self._sock]}, daemon=True,
                                        name="lipsync-serve")
        self._thread.start()
        ends = time.monotonic() + 30
        while not self._uv.started:
            if not self._thread.is_alive() or time.monotonic() > ends:
                if self.grpc is not None:
                    self.grpc.stop()
                raise RuntimeError("the server did not start")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"http://{self.server.config.host}:{self.port}"

    def stop(self) -> None:
        self.server.manager.draining.set()
        ends = time.monotonic() + 1.5
        while self.server.manager.active and time.monotonic() < ends:
            time.sleep(0.02)
        self._uv.should_exit = True
        self._thread.join(timeout=10)
        self.server.heap.close()
        self._sock.close()
        if self.grpc is not None:
            self.grpc.stop()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
