"""The bodies of the two Serve deployments and the router of the live one. Imported only where Ray is.

A live replica is one runtime on one device (its GPU, or a CPU share) behind `serve/live_ws.py`'s
`Connection`, unchanged: the same protocol, trust rules and admission, with the replica's own capacity. The
front is the same FastAPI app (serve/app.py) whose readiness and metrics speak for every replica."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.serve.request_router import RequestRouter
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket

from lipsync_cli.cluster.worker import PREFIX, remove_dead_workers
from lipsync_cli.runtime import Runtime, RuntimeConfig
from lipsync_cli.serve.app import create_app
from lipsync_cli.serve.cluster.hub import (
    METRICS_EVERY,
    REFRESH_EVERY,
    REPORT_EVERY,
    Report,
    merge_metrics,
    readiness,
    unpack,
)
from lipsync_cli.serve.cluster.options import HUB_NAME, HUB_NAMESPACE
from lipsync_cli.serve.config import ServeConfig
from lipsync_cli.serve.live_ws import Connection
from lipsync_cli.serve.manager import SessionManager
from lipsync_cli.serve.metrics import Metrics
from lipsync_cli.serve.server import Server

log = logging.getLogger("lipsync")


class FewestSessions(RequestRouter):
    """Every replica is a candidate, and Serve takes the one with the fewest ongoing requests (open sessions)
    below its limit. Serve's default (the better of two picked at random) would, with three or more replicas,
    send a session to a full one while another has room."""

    async def choose_replicas(self, candidate_replicas: list, pending_request: Any = None) -> list[list]:
        return [list(candidate_replicas)]


def normal_priority() -> int:
    """Undo Ray's niceness for this process where Ray did not start it at 0 (the cluster was started without
    RAY_worker_niceness=0); lowering niceness needs CAP_SYS_NICE, so without it the replica says so and runs on.
    Returns the niceness it runs at."""
    niceness = os.getpriority(os.PRIO_PROCESS, 0)
    if niceness > 0:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 0)
            return 0
        except OSError:
            log.warning("this replica runs at niceness %d and may not lower it: its live frames come late when the "
                        "machine is busy; start Ray with RAY_worker_niceness=0 (docs/cluster.md)", niceness)
    return niceness


async def _hub():
    return ray.get_actor(HUB_NAME, namespace=HUB_NAMESPACE)


async def _characters(hub) -> tuple[Path, Path]:
    """A folder of this process for the characters the hub holds: (root, characters)."""
    remove_dead_workers()  # the folders of replicas killed on this machine before
    root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
    return root, unpack(await hub.archives.remote(), root)


def live_app(server: Server, on_shutdown):
    """The ASGI app of `/v1/live` (Serve strips nothing: every path under the route is this one WebSocket)."""

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await on_shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "websocket":
            await Connection(WebSocket(scope, receive, send), server).run()
        else:
            await PlainTextResponse("/v1/live is a WebSocket (protocol v1)", status_code=426)(scope, receive, send)

    return app


class LiveReplica:
    """One runtime on this replica's device, its sessions, its reports to the hub."""

    def __init__(self, config: ServeConfig, runtime: RuntimeConfig) -> None:
        self.name = serve.get_replica_context().replica_id.unique_id
        self.niceness = normal_priority()
        self.given = config, runtime

    async def __serve_build_asgi_app__(self):
        """Serve calls this once the replica is constructed, on the loop that will serve its requests."""
        config, runtime = self.given
        self.hub = await _hub()
        self.root, folder = await _characters(self.hub)
        devices = "auto" if ray.get_gpu_ids() else "cpu"  # Ray shows this replica its own GPU only
        capacity = config.per_device
        self.config = replace(config, characters=(str(folder),), devices=devices, max_sessions=capacity,
                              max_sessions_per_device=capacity)
        self.runtime = Runtime(replace(runtime, devices=devices))
        self.server = Server(self.config, self.runtime)
        self.server.replica = self.name
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._report()), loop.create_task(self._watch_drain())]
        return live_app(self.server, self._shutdown)

    def _report_now(self, metrics: bytes | None) -> Report:
        return Report(self.name, socket.gethostname(), os.getpid(), self.server.manager.active,
                      self.config.per_device, self.server.manager.draining.is_set(), self.niceness, metrics)

    async def _report(self) -> None:
        sent_metrics, sent_active = 0.0, -1
        while True:
            try:
                metrics = None
                if time.monotonic() - sent_metrics >= METRICS_EVERY:
                    metrics = await asyncio.to_thread(self.server.metrics.text)  # reads /proc: not on the loop
                    sent_metrics = time.monotonic()
                active = self.server.manager.active
                if metrics is not None or active != sent_active:
                    await self.hub.report.remote(self._report_now(metrics))
                    sent_active = active
            except ray.exceptions.RayActorError:
                return  # the command that started the application is gone; the sessions go on
            except Exception:  # one report lost (the hub busy, a scrape failing): the next one goes
                log.warning("replica %s: a report to the hub failed", self.name, exc_info=True)
            await asyncio.sleep(REPORT_EVERY)

    async def _watch_drain(self) -> None:
        try:
            await self.hub.wait_drain.remote()
        except ray.exceptions.RayActorError:
            return
        self.server.manager.draining.set()  # every session closes with 1001 within a tenth of a second

    async def _shutdown(self) -> None:
        self.server.manager.draining.set()
        ends = time.monotonic() + 1.0
        while self.server.manager.active and time.monotonic() < ends:
            await asyncio.sleep(0.02)
        for task in self.tasks:
            task.cancel()
        self.server.heap.close()
        await asyncio.to_thread(self.runtime.close)
        shutil.rmtree(self.root, ignore_errors=True)


class _View:
    """The front's copy of the hub's reports, refreshed in the background."""

    def __init__(self) -> None:
        self.reports: list[Report] = []


class FrontManager(SessionManager):
    def __init__(self, config: ServeConfig, view: _View) -> None:
        super().__init__(config, 1)
        self.view = view

    def ready(self) -> tuple[bool, str]:
        if not self.characters:
            return False, "no characters to serve"
        return readiness(self.view.reports, self.draining.is_set())


class FrontMetrics(Metrics):
    def __init__(self, runtime: Runtime, view: _View) -> None:
        super().__init__(runtime, dict)
        self.view = view

    def text(self) -> bytes:
        return merge_metrics(self.view.reports)


class FrontServer(Server):
    def __init__(self, config: ServeConfig, runtime: Runtime, view: _View) -> None:
        super().__init__(config, runtime)
        self.manager = FrontManager(config, view)
        self.metrics = FrontMetrics(runtime, view)


class FrontReplica:
    """The page, `/v1/characters`, `/healthz`, and `/readyz` and `/metrics` for every replica."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.view = _View()
        self.runtime = Runtime(RuntimeConfig(devices="cpu"))  # lists characters; loads no model

    async def __serve_build_asgi_app__(self):
        self.hub = await _hub()
        self.root, folder = await _characters(self.hub)
        config = replace(self.config, characters=(str(folder),), devices="cpu")
        self.task = asyncio.get_running_loop().create_task(self._refresh())
        return create_app(FrontServer(config, self.runtime, self.view))

    async def _refresh(self) -> None:
        metrics_read = 0.0
        while True:
            metrics = time.monotonic() - metrics_read >= METRICS_EVERY
            try:
                reports = await self.hub.reports.remote(metrics)
            except ray.exceptions.RayActorError:
                self.view.reports = []
                return
            except Exception:  # one look lost: the view stays as it was until the next
                log.warning("the front's look at the replicas failed", exc_info=True)
                await asyncio.sleep(REFRESH_EVERY)
                continue
            if metrics:
                metrics_read = time.monotonic()
            else:  # the metrics read last, for the replicas still there
                kept = {r.replica: r.metrics for r in self.view.reports}
                reports = [replace(r, metrics=kept.get(r.replica)) for r in reports]
            self.view.reports = reports
            await asyncio.sleep(REFRESH_EVERY)

    def __del__(self) -> None:  # Serve calls it at shutdown, also when building the app failed half-way
        if hasattr(self, "task"):
            self.task.cancel()
        self.runtime.close()
        if hasattr(self, "root"):
            shutil.rmtree(self.root, ignore_errors=True)


def deployments() -> tuple[Any, Any]:
    """The two deployment classes, as Serve wants them (ingress apps built on the replica: a FastAPI app
    cannot be pickled)."""
    live = serve.deployment(serve.ingress()(LiveReplica), name="LiveReplica")
    front = serve.deployment(serve.ingress()(FrontReplica), name="Front")
    return live, front
