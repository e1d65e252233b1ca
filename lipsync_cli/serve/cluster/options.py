"""What `lipsync serve --cluster ray` is told beyond a single server's options, checked, and the Serve
deployment options that follow from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lipsync_cli.errors import InputError

INSTALL = "pip install 'lipsync-cli[ray]'"
LIVE_APP, FRONT_APP = "lipsync-live", "lipsync"
LIVE_ROUTE = "/v1/live"
HUB_NAME, HUB_NAMESPACE = "lipsync-hub", "lipsync"
# Ray starts its workers at niceness 15; a replica serving live frames must not run below the priority of the
# server it replaces (design.md section 18). Ray itself sets this for its job supervisor.
NORMAL_PRIORITY = {"RAY_worker_niceness": "0"}


@dataclass(frozen=True)
class ClusterOptions:
    address: str | None = None  # an existing cluster (ray start --head ...); None: RAY_ADDRESS, else a local Ray
    replicas: int | None = None  # a fixed number of replicas (default 1 when no range is given)
    min_replicas: int | None = None  # autoscaling between these two
    max_replicas: int | None = None
    cpus_per_replica: float | None = None  # default 1
    gpus_per_replica: float | None = None  # default: 1 where the cluster has GPUs, else 0

    def checked(self) -> ClusterOptions:
        ranged = self.min_replicas is not None or self.max_replicas is not None
        if self.replicas is not None and ranged:
            raise InputError("give either --replicas or --min-replicas/--max-replicas, not both", option="replicas")
        if self.replicas is not None and self.replicas < 1:
            raise InputError(f"--replicas must be at least 1, not {self.replicas}", option="replicas")
        if ranged:
            if self.min_replicas is None or self.max_replicas is None:
                raise InputError("autoscaling needs both --min-replicas and --max-replicas", option="min_replicas")
            if self.min_replicas < 1:
                raise InputError(f"--min-replicas must be at least 1 (a live session cannot wait for a replica "
                                 f"to start), not {self.min_replicas}", option="min_replicas")
            if self.max_replicas < self.min_replicas:
                raise InputError(f"--max-replicas ({self.max_replicas}) is below --min-replicas "
                                 f"({self.min_replicas})", option="max_replicas")
        if self.cpus_per_replica is not None and self.cpus_per_replica <= 0:
            raise InputError(f"--cpus-per-replica must be above 0, not {self.cpus_per_replica:g}",
                             option="cpus_per_replica")
        if self.gpus_per_replica is not None and not 0 <= self.gpus_per_replica <= 1:
            raise InputError(f"--gpus-per-replica must be 0 to 1 (a replica is one runtime on one device), not "
                             f"{self.gpus_per_replica:g}", option="gpus_per_replica")
        return self

    @property
    def cpus(self) -> float:
        return self.cpus_per_replica if self.cpus_per_replica is not None else 1.0

    def describe(self) -> str:
        if self.min_replicas is not None:
            return f"{self.min_replicas} to {self.max_replicas} replicas"
        n = self.replicas or 1
        return f"{n} replica{'s' if n != 1 else ''}"


def live_deployment(options: ClusterOptions, capacity: int, gpus: float, session_seconds: float) -> dict[str, Any]:
    """The live replicas' deployment options. An open WebSocket is one ongoing request for its whole life, so
    `max_ongoing_requests` is the replica's session capacity plus one: Serve routes a new session to the replica
    with the fewest (serve/cluster/replicas.py's router), and when every replica is full, the extra place lets a
    replica answer the session itself with 1013 (at capacity), as a single server does, instead of Serve
    queueing it. Beyond that, a short queue for a burst; past it Serve refuses before the upgrade. A replica
    that Serve scales down takes no new session and is stopped once its sessions have ended (at most a session's
    length); stopping the application drains every session first (1001)."""
    scaling: dict[str, Any]
    if options.min_replicas is not None:
        scaling = {"autoscaling_config": {
            "min_replicas": options.min_replicas, "max_replicas": options.max_replicas,
            "initial_replicas": options.min_replicas,
            # a replica is added once the sessions fill the replicas, so a new session finds room
            "target_ongoing_requests": max(0.5, capacity - 0.5)}}
    else:
        scaling = {"num_replicas": options.replicas or 1}
    return {**scaling, "max_ongoing_requests": capacity + 1, "max_queued_requests": max(4, capacity),
            "ray_actor_options": {"num_cpus": options.cpus, "num_gpus": gpus,
                                  "runtime_env": {"env_vars": dict(NORMAL_PRIORITY)}},
            "health_check_period_s": 2.0, "graceful_shutdown_timeout_s": session_seconds + 5.0,
            "graceful_shutdown_wait_loop_s": 0.2}


def front_deployment() -> dict[str, Any]:
    """The page, characters, health and metrics: one light replica that holds no session and takes no CPU
    from the live replicas."""
    return {"num_replicas": 1, "max_ongoing_requests": 64,
            "ray_actor_options": {"num_cpus": 0, "runtime_env": {"env_vars": dict(NORMAL_PRIORITY)}},
            "graceful_shutdown_timeout_s": 2.0, "graceful_shutdown_wait_loop_s": 0.2}
