"""`lipsync serve --cluster ray` without Ray running: its options checked before any work, the Serve options
that follow from them, readiness across replicas and every replica's metrics in one scrape."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from lipsync_cli.cli.app import app
from lipsync_cli.errors import InputError
from lipsync_cli.serve.cluster.hub import Report, merge_metrics, readiness
from lipsync_cli.serve.cluster.options import ClusterOptions, live_deployment

runner = CliRunner()


@pytest.mark.parametrize("args, message", [
    (["--replicas", "2"], "go with --cluster ray"),
    (["--cluster", "k8s"], "--cluster must be ray, not 'k8s'"),
    (["--cluster", "ray", "--devices", "cpu"], "--devices does not go with --cluster"),
    (["--cluster", "ray", "--grpc-port", "50052"], "gRPC is not served on a cluster yet"),
    (["--cluster", "ray", "--replicas", "0"], "--replicas must be at least 1, not 0"),
    (["--cluster", "ray", "--replicas", "2", "--min-replicas", "1"], "either --replicas or --min-replicas"),
    (["--cluster", "ray", "--min-replicas", "1"], "needs both --min-replicas and --max-replicas"),
    (["--cluster", "ray", "--min-replicas", "3", "--max-replicas", "2"], "--max-replicas (2) is below"),
    (["--cluster", "ray", "--cpus-per-replica", "0"], "--cpus-per-replica must be above 0"),
    (["--cluster", "ray", "--gpus-per-replica", "2"], "--gpus-per-replica must be 0 to 1"),
    (["--cluster", "ray", "--host", "0.0.0.0"], "needs a token"),
])
def test_bad_cluster_options_get_one_line_and_exit_2_before_ray_starts(args, message):
    result = runner.invoke(app, ["serve", *args])
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_capacity_becomes_max_ongoing_requests_with_one_place_to_refuse_from():
    fixed = live_deployment(ClusterOptions(replicas=3, cpus_per_replica=2).checked(), 4, 0, 600)
    assert fixed["num_replicas"] == 3 and fixed["max_ongoing_requests"] == 5
    assert fixed["ray_actor_options"]["num_cpus"] == 2 and fixed["ray_actor_options"]["num_gpus"] == 0
    assert fixed["ray_actor_options"]["runtime_env"]["env_vars"] == {"RAY_worker_niceness": "0"}
    assert fixed["graceful_shutdown_timeout_s"] > 600  # a replica scaled down ends its sessions first
    scaled = live_deployment(ClusterOptions(min_replicas=1, max_replicas=4).checked(), 2, 1, 60)
    assert "num_replicas" not in scaled and scaled["autoscaling_config"]["min_replicas"] == 1
    assert scaled["autoscaling_config"]["max_replicas"] == 4 and scaled["ray_actor_options"]["num_gpus"] == 1
    with pytest.raises(InputError):
        ClusterOptions(replicas=1, max_replicas=2).checked()


def report(name, active, capacity=2, draining=False, metrics=None):
    return Report(name, "node-a", 100 + len(name), active, capacity, draining, 0, metrics)


def test_ready_while_some_replica_has_room():
    assert readiness([report("a", 2), report("b", 1)], False) == (True, "3 of 4 sessions on 2 replicas")
    assert readiness([report("a", 2), report("b", 2)], False) == (False, "at capacity (4 of 4 sessions on 2 "
                                                                         "replicas)")
    assert readiness([], False) == (False, "no replica is running")
    assert readiness([report("a", 0, draining=True)], False) == (False, "no replica is running")
    assert readiness([report("a", 0)], True) == (False, "shutting down")


def test_every_replicas_metrics_in_one_scrape_labelled_with_its_replica():
    def text(active: int, frames: int) -> bytes:  # what a replica's serve/metrics.py gives
        registry = CollectorRegistry()
        Gauge("lipsync_sessions_active", "Live sessions now", registry=registry).set(active)
        Counter("lipsync_frames", "Frames sent", ["kind"], registry=registry).labels("idle").inc(frames)
        return generate_latest(registry)

    merged = merge_metrics([report("a", 1, metrics=text(1, 50)), report("b", 2, metrics=text(2, 70)),
                            report("c", 0)])
    families = {f.name: f for f in text_string_to_metric_families(merged.decode())}
    assert families["lipsync_replicas"].samples[0].value == 3
    active = {s.labels["replica"]: s.value for s in families["lipsync_sessions_active"].samples}
    assert active == {"a": 1.0, "b": 2.0}
    frames = {(s.labels["replica"], s.labels["kind"]): s.value for s in families["lipsync_frames"].samples}
    assert frames == {("a", "idle"): 50.0, ("b", "idle"): 70.0}
    info = {s.labels["replica"]: s.labels for s in families["lipsync_replica_info"].samples}
    assert set(info) == {"a", "b", "c"} and info["a"]["pid"] == "101" and info["a"]["capacity"] == "2"


def test_a_cluster_where_serve_already_runs_is_refused_in_one_line():
    from types import SimpleNamespace

    from lipsync_cli.serve.cluster.run import ClusterServer
    from lipsync_cli.serve.config import ServeConfig

    # what Ray's list_named_actors(all_namespaces=True) answers where another Serve application runs
    actors = [{"name": "some_actor", "namespace": "app"}, {"name": "SERVE_CONTROLLER_ACTOR", "namespace": "serve"}]
    server = object.__new__(ClusterServer)  # no Ray started: only the check before anything is deployed
    server.ray = SimpleNamespace(util=SimpleNamespace(list_named_actors=lambda all_namespaces: actors))
    server.config = ServeConfig()
    with pytest.raises(InputError, match="Ray Serve already runs on this cluster"):
        server._deploy()
