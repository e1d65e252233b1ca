"""`lipsync serve`: the live server (WebSocket protocol v1, the browser page, health and metrics)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from lipsync_cli.cli.batching import MaxMemory, MaxModels, parse_size
from lipsync_cli.cli.common import Debug, err_console, run_reporting, settle_heap
from lipsync_cli.errors import InputError
from lipsync_cli.runtime import Runtime
from lipsync_cli.serve.cluster.options import ClusterOptions
from lipsync_cli.serve.config import ServeConfig, load_toml, token_from_env


def serve_command(
    host: Annotated[str | None, typer.Option("--host", metavar="ADDRESS", help="Address to listen on "
                                             "[default: 127.0.0.1]; beyond this machine needs --token or --no-auth.",
                                             show_default=False)] = None,
    port: Annotated[int | None, typer.Option("--port", "-p", metavar="PORT", help="Port [default: 8080].",
                                             show_default=False)] = None,
    characters: Annotated[list[str] | None, typer.Option("--characters", metavar="DIR", help="A folder of characters "
                                                         "to serve (repeatable) [default: ./characters and the "
                                                         "bundled ones].", show_default=False)] = None,
    devices: Annotated[str | None, typer.Option("--devices", metavar="LIST", help="auto, cpu, cuda:0,cuda:1, "
                                                "cuda:all or openvino[:TARGET] [default: auto].", show_default=False)
                       ] = None,
    max_sessions: Annotated[int | None, typer.Option("--max-sessions", metavar="N", help="Live sessions at once, in "
                                                     "total [default: 4].", show_default=False)] = None,
    max_sessions_per_device: Annotated[int | None, typer.Option("--max-sessions-per-device", metavar="N",
                                                                help="Live sessions at once on one device "
                                                                "[default: --max-sessions].", show_default=False)
                                       ] = None,
    grpc_port: Annotated[int | None, typer.Option("--grpc-port", metavar="PORT", help="gRPC port (the seed's "
                                                  "MonolithicService, the live stream, health) [default: 50051]; "
                                                  "0 turns gRPC off.", show_default=False)] = None,
    max_models: MaxModels = None,
    max_memory: MaxMemory = None,
    token: Annotated[str | None, typer.Option("--token", metavar="TOKEN", help="Clients must send this token "
                                              "(default: $LIPSYNC_TOKEN).", show_default=False)] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Allow listening beyond this machine without a token."
                                          )] = False,
    allow_origin: Annotated[list[str] | None, typer.Option("--allow-origin", metavar="ORIGIN", help="A page origin "
                                                           "allowed besides the server's own (repeatable; * for "
                                                           "any).", show_default=False)] = None,
    allow_host: Annotated[list[str] | None, typer.Option("--allow-host", metavar="NAME", help="A name clients "
                                                         "reach the server by, besides localhost and IP addresses "
                                                         "(repeatable); other names are refused (DNS rebinding) on "
                                                         "a loopback address, or once one is given.",
                                                         show_default=False)] = None,
    session_max_seconds: Annotated[float | None, typer.Option("--session-max-seconds", metavar="S", help="Longest "
                                                              "session [default: 3600].", show_default=False)] = None,
    log_format: Annotated[str | None, typer.Option("--log-format", metavar="text|json", help="Log lines as text or "
                                                   "JSON [default: text].", show_default=False)] = None,
    jpeg_quality: Annotated[int | None, typer.Option("--jpeg-quality", metavar="1-100", help="Quality of JPEG "
                                                     "frames [default: 75, the seed's].", show_default=False)] = None,
    precision: Annotated[str | None, typer.Option("--precision", metavar="auto|fp32|int8|bf16|fp16",
                                                  help="Models of the live sessions: auto (each character's fastest "
                                                  "checked variant for the device) [default: auto], fp32, or a "
                                                  "variant made by lipsync characters optimize.",
                                                  show_default=False)] = None,
    capacity: Annotated[Path | None, typer.Option("--capacity", metavar="FILE", help="Sessions per device from a "
                                                  "measured capacity: the JSON of lipsync loadtest --find-capacity.",
                                                  show_default=False)] = None,
    config: Annotated[Path | None, typer.Option("--config", metavar="FILE", help="A TOML file with the same keys "
                                                "(host, port, characters, ...); options given here win.",
                                                show_default=False)] = None,
    cluster: Annotated[str | None, typer.Option("--cluster", metavar="ray", help="Run as a Ray Serve application: "
                                                "one replica per device, sessions routed to a replica with room "
                                                "(docs/cluster.md).", show_default=False)] = None,
    ray_address: Annotated[str | None, typer.Option("--address", metavar="ADDR", help="With --cluster: the Ray "
                                                    "cluster to use (default: $RAY_ADDRESS, else a local Ray "
                                                    "started for this command).", show_default=False)] = None,
    replicas: Annotated[int | None, typer.Option("--replicas", metavar="N", help="With --cluster: live replicas "
                                                 "[default: 1].", show_default=False)] = None,
    min_replicas: Annotated[int | None, typer.Option("--min-replicas", metavar="A", help="With --cluster: "
                                                     "autoscale from A replicas ...", show_default=False)] = None,
    max_replicas: Annotated[int | None, typer.Option("--max-replicas", metavar="B", help="... up to B replicas.",
                                                     show_default=False)] = None,
    cpus_per_replica: Annotated[float | None, typer.Option("--cpus-per-replica", metavar="C", help="With "
                                                           "--cluster: CPUs a replica reserves (its onnxruntime "
                                                           "threads) [default: 1].", show_default=False)] = None,
    gpus_per_replica: Annotated[float | None, typer.Option("--gpus-per-replica", metavar="G", help="With "
                                                           "--cluster: GPUs a replica reserves [default: 1 where "
                                                           "the cluster has GPUs, else 0].", show_default=False)
                                ] = None,
    debug: Debug = False,
) -> None:
    """Serve live lip-sync: open the page in a browser, or stream over the WebSocket protocol (/v1/live)."""

    def work() -> int:
        from lipsync_cli.serve.heap import limit_arenas
        from lipsync_cli.serve.run import runtime_config, serve

        limit_arenas()  # before the runtime and the server start their threads

        settings = ServeConfig(**(load_toml(config) if config is not None else {}))
        given: dict[str, Any] = {"host": host, "port": port, "characters": tuple(characters) if characters else None,
                 "devices": devices, "max_sessions": max_sessions, "max_sessions_per_device": max_sessions_per_device,
                 "max_models": max_models, "max_memory": max_memory, "token": token_from_env(token),
                 "no_auth": no_auth or None, "allow_origin": tuple(allow_origin) if allow_origin else None,
                 "allow_host": tuple(allow_host) if allow_host else None,
                 "session_max_seconds": session_max_seconds, "log_format": log_format,
                 "capacity": str(capacity) if capacity is not None else None, "jpeg_quality": jpeg_quality,
                 "grpc_port": grpc_port, "precision": precision}
        settings = replace(settings, **{k: v for k, v in given.items() if v is not None}).with_capacity().checked()
        ray_options = ClusterOptions(ray_address, replicas, min_replicas, max_replicas, cpus_per_replica,
                                     gpus_per_replica)
        if cluster is not None:
            return _serve_on_cluster(cluster, settings, ray_options, {"devices": devices, "grpc_port": grpc_port})
        if ray_options != ClusterOptions():
            raise InputError("--address, --replicas, --min-replicas, --max-replicas, --cpus-per-replica and "
                             "--gpus-per-replica go with --cluster ray", option="cluster")
        with Runtime(runtime_config(settings, parse_size)) as runtime:
            settle_heap()  # the collections after each session then look at the sessions' objects only
            serve(settings, runtime, lambda line: err_console.print(line, soft_wrap=True, markup=False))
        return 0

    raise typer.Exit(run_reporting(work, debug))


def _serve_on_cluster(cluster: str, settings: ServeConfig, options: ClusterOptions, given: dict[str, Any]) -> int:
    from lipsync_cli.serve.cluster.run import serve_cluster
    from lipsync_cli.serve.run import runtime_config

    if cluster != "ray":
        raise InputError(f"--cluster must be ray, not {cluster!r}", option="cluster")
    if given["devices"] is not None:
        raise InputError("--devices does not go with --cluster: each replica is one device (--gpus-per-replica, "
                         "--cpus-per-replica)", option="devices")
    if given["grpc_port"]:
        raise InputError("gRPC is not served on a cluster yet (docs/cluster.md says why); leave out --grpc-port",
                         option="grpc_port")
    serve_cluster(settings, options.checked(), runtime_config(settings, parse_size),
                  lambda line: err_console.print(line, soft_wrap=True, markup=False))
    return 0
