"""Running the server as a Ray Serve application: Ray (a local instance, or the cluster at an address), Serve's
proxy on the server's host and port, the live replicas and the front, and a shutdown that closes every session
with 1001 before the applications, Serve and the Ray this command started are stopped."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from lipsync_cli.cluster.worker import pack_character
from lipsync_cli.errors import InputError, LipsyncError
from lipsync_cli.runtime import RuntimeConfig
from lipsync_cli.serve.cluster.hub import Hub, Report
from lipsync_cli.serve.cluster.options import (
    FRONT_APP,
    HUB_NAME,
    HUB_NAMESPACE,
    INSTALL,
    LIVE_APP,
    LIVE_ROUTE,
    ClusterOptions,
    front_deployment,
    live_deployment,
)
from lipsync_cli.serve.config import ServeConfig
from lipsync_cli.serve.manager import discover
from lipsync_cli.trust import address

START_TIMEOUT = 120.0  # seconds for every replica to report after Serve says the applications run
DRAIN_WAIT = 2.0  # seconds for the sessions to close with 1001 before Serve stops


def import_ray():
    try:
        import ray
        from ray import serve  # noqa: F401
    except ImportError:
        raise InputError(f"serving on a Ray cluster needs Ray Serve, which is not installed: {INSTALL}",
                         option="cluster") from None
    return ray


def token_auth() -> None:
    """A cluster started by `ray start` (Ray 2.60 on) wants its token from every driver, but a driver sends it
    only in token mode: take that mode where the token is at hand and nothing says otherwise, as Ray does
    for a cluster it starts itself."""
    if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get(
            "RAY_AUTH_TOKEN_PATH") or (Path.home() / ".ray" / "auth_token").is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ClusterServer:
    """The application, deployed and running until `stop()`. Uses the Ray this process is connected to, else
    connects to `options.address` (or RAY_ADDRESS), else starts a local Ray that `stop()` shuts down."""

    def __init__(self, config: ServeConfig, options: ClusterOptions, runtime: RuntimeConfig = RuntimeConfig(),
                 announce: Callable[[str], None] | None = None) -> None:
        if options.address or os.environ.get("RAY_ADDRESS"):
            token_auth()  # before Ray is imported: it reads its authentication mode once
        self.ray = import_ray()
        self.config, self.options, self.runtime_config = config, options, runtime
        self.announce = announce or (lambda line: None)
        self.port = config.port or free_port(config.host)
        self.started_ray = self.started_serve = False
        self.hub: Any = None
        self.stopped = False
        try:
            self._connect()
            self._deploy()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://{address(self.config.host, self.port)}"

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        where = self.options.address or os.environ.get("RAY_ADDRESS")
        quiet: dict[str, Any] = dict(log_to_driver=False, logging_level="ERROR")
        try:
            if where:
                ray.init(address=where, **quiet)
            else:  # "local": a new instance, never one found running on this machine; workers at niceness 0
                ray.init(address="local", include_dashboard=False, _system_config={"worker_niceness": 0}, **quiet)
        except Exception as exc:  # Ray's own connection errors
            raise InputError(f"cannot start or reach the Ray cluster {where or '(local)'}: "
                             f"{' '.join(str(exc).split())[:200]}", option="address") from None
        self.started_ray = True
        logging.getLogger("ray.serve").setLevel(logging.WARNING)

    def _deploy(self) -> None:
        ray = self.ray
        from ray import serve

        from lipsync_cli.serve.cluster.replicas import FewestSessions, deployments

        if any(isinstance(n, dict) and n.get("name") in ("SERVE_CONTROLLER_ACTOR", HUB_NAME)
               for n in ray.util.list_named_actors(all_namespaces=True)):
            raise InputError("Ray Serve already runs on this cluster (its proxies' host and port are set); stop it "
                             "first (serve shutdown) so that lipsync serve --cluster ray runs its own",
                             option="cluster")
        characters = discover(self.config.characters)
        self.hub = ray.remote(Hub).options(name=HUB_NAME, namespace=HUB_NAMESPACE, num_cpus=0).remote(
            {name: pack_character(folder) for name, folder in characters.items()})
        serve.start(http_options={"host": self.config.host, "port": self.port, "location": "EveryNode"})
        self.started_serve = True
        gpus = self.options.gpus_per_replica
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        threads = max(1, round(self.options.cpus))
        live, front = deployments()
        live_options = live_deployment(self.options, self.config.per_device, gpus, self.config.session_max_seconds)
        live_options["request_router_config"] = {"request_router_class": FewestSessions}
        app_config = replace(self.config, port=self.port, grpc_port=0)
        try:
            serve.run(live.options(**live_options, max_constructor_retry_count=2).bind(
                app_config, replace(self.runtime_config, threads=self.runtime_config.threads or threads)),
                name=LIVE_APP, route_prefix=LIVE_ROUTE, blocking=False)
            serve.run(front.options(**front_deployment(), max_constructor_retry_count=2).bind(app_config),
                      name=FRONT_APP, route_prefix="/", blocking=False)
        except RuntimeError as exc:
            raise LipsyncError(f"the application did not start on the cluster: {self._why(exc)}") from None
        reports = self._wait_reports()
        names_line = ", ".join(sorted(characters)) or "no characters"
        auth = "token" if self.config.token else ("none (--no-auth)" if self.config.no_auth else
                                                  "none (this machine only)")
        self.announce(f"lipsync serve: {self.url}/ (WebSocket {LIVE_ROUTE}) on Ray Serve serving {names_line}; "
                      f"{self.options.describe()} of {self.config.per_device} sessions each; auth: {auth}")
        for r in sorted(reports, key=lambda r: r.replica):
            nice = "" if r.niceness == 0 else f" at niceness {r.niceness} (start Ray with RAY_worker_niceness=0)"
            self.announce(f"lipsync serve: replica {r.replica} on {r.node} (process {r.pid}){nice}")

    def _why(self, exc: Exception) -> str:
        try:
            from ray import serve

            for name, app in serve.status().applications.items():
                if app.status != "RUNNING" and app.message:
                    return f"{name}: {' '.join(app.message.split())[:400]}"
        except Exception:  # the status itself cannot be read
            pass
        return " ".join(str(exc).split())[:400]

    def _wait_reports(self) -> list[Report]:
        """Every replica heard from (so /readyz and /metrics speak for all of them from the start)."""
        want = self.options.min_replicas or self.options.replicas or 1
        ends = time.monotonic() + START_TIMEOUT
        while True:
            reports = self.ray.get(self.hub.reports.remote())
            if len(reports) >= want or time.monotonic() > ends:
                return reports
            time.sleep(0.1)

    def reports(self) -> list[Report]:
        return self.ray.get(self.hub.reports.remote()) if self.hub is not None else []

    def stop(self) -> None:
        """Every session closed with 1001, then the applications, Serve and (if this started it) Ray stopped."""
        if self.stopped:
            return
        self.stopped = True
        ray = self.ray
        if self.hub is not None:
            try:
                ray.get(self.hub.drain.remote(), timeout=5)
                ends = time.monotonic() + DRAIN_WAIT
                while any(r.active for r in self.reports()) and time.monotonic() < ends:
                    time.sleep(0.05)
            except Exception:  # the hub is gone: the replicas are stopped all the same
                pass
        if self.started_serve:
            from ray import serve

            try:
                # the live replicas first, gracefully, while the proxies still carry the sessions' last
                # messages (their close frames) to the clients; then the front, the proxies, the controller
                serve.delete(LIVE_APP)
                serve.shutdown()
            except Exception:  # noqa: S110 (Serve is going away with Ray anyway)
                pass
        if self.hub is not None:
            try:
                ray.kill(self.hub)
            except Exception:
                pass
        if self.started_ray:
            ray.shutdown()

    def __enter__(self) -> ClusterServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_cluster(config: ServeConfig, options: ClusterOptions, runtime: RuntimeConfig,
                  announce: Callable[[str], None]) -> None:
    """`lipsync serve --cluster ray`: run until SIGINT or SIGTERM, then stop as `ClusterServer.stop` says."""
    stop = threading.Event()
    cluster = ClusterServer(config, options, runtime, announce)
    previous = {s: signal.signal(s, lambda number, frame: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
        announce("lipsync serve: closing every session and stopping the application")
    finally:
        cluster.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
