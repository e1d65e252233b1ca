"""What the replicas of one application share, held by one small actor (the hub): the characters' files
(sent once from the machine that runs the command, so no other machine needs them), each replica's report
(its sessions, its capacity, its metrics) and the order to drain. And what the front makes of the reports:
readiness across replicas, and every replica's metrics in one scrape. Plain Python: `run.py` wraps `Hub` with
`ray.remote`, so this module does not import Ray."""

from __future__ import annotations

import asyncio
import io
import shutil
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

REPORT_EVERY = 0.05  # seconds between a replica's looks at its session count (it reports each change)
REFRESH_EVERY = 0.1  # seconds between the front's reads of the reports
METRICS_EVERY = 1.0  # seconds between the metrics it sends
STALE = 3.0  # a replica that has not reported for this long is gone (killed, its machine lost)


@dataclass(frozen=True)
class Report:
    replica: str  # Serve's name of the replica (opaque to clients: the `replica` of the ready message)
    node: str
    pid: int
    active: int
    capacity: int
    draining: bool
    niceness: int
    metrics: bytes | None = None  # Prometheus text, sent every METRICS_EVERY seconds


class Hub:
    """The actor's body (async methods: a replica's long poll for the drain waits without holding a thread)."""

    def __init__(self, archives: dict[str, bytes]) -> None:
        self._archives = archives
        self._reports: dict[str, tuple[float, Report]] = {}
        self._metrics: dict[str, bytes] = {}
        self._drain = asyncio.Event()

    async def archives(self) -> dict[str, bytes]:
        return self._archives

    async def report(self, report: Report) -> bool:
        """A replica's state; the answer says whether the application is draining."""
        self._reports[report.replica] = (time.monotonic(), report)
        if report.metrics is not None:
            self._metrics[report.replica] = report.metrics
        return self._drain.is_set()

    async def reports(self, metrics: bool = True) -> list[Report]:
        """The replicas heard from within STALE seconds, with their latest metrics if asked."""
        now = time.monotonic()
        for name in [n for n, (at, _) in self._reports.items() if now - at > STALE]:
            del self._reports[name]
            self._metrics.pop(name, None)
        return [replace(r, metrics=self._metrics.get(r.replica) if metrics else None)
                for _, r in self._reports.values()]

    async def drain(self) -> None:
        self._drain.set()

    async def wait_drain(self) -> None:
        await self._drain.wait()


def readiness(reports: list[Report], draining: bool) -> tuple[bool, str]:
    """Ready when some replica has room for a session (what `/readyz` says for the whole application)."""
    if draining:
        return False, "shutting down"
    live = [r for r in reports if not r.draining]
    if not live:
        return False, "no replica is running"
    active, most = sum(r.active for r in live), sum(r.capacity for r in live)
    where = f"{active} of {most} sessions on {len(live)} replica{'s' if len(live) != 1 else ''}"
    if not any(r.active < r.capacity for r in live):
        return False, f"at capacity ({where})"
    return True, where


class _Merged:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def merge_metrics(reports: list[Report]) -> bytes:
    """Every replica's metrics in one Prometheus text, each sample labelled with its `replica`, plus
    `lipsync_replicas` (the replicas reporting) and `lipsync_replica_info` (where each runs)."""
    families: dict[str, Metric] = {}
    for report in sorted(reports, key=lambda r: r.replica):
        if report.metrics is None:
            continue
        for family in text_string_to_metric_families(report.metrics.decode()):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type)
            for s in family.samples:
                merged.add_sample(s.name, {**s.labels, "replica": report.replica}, s.value, s.timestamp)
    count = GaugeMetricFamily("lipsync_replicas", "Live replicas reporting", value=len(reports))
    info = GaugeMetricFamily("lipsync_replica_info", "Where each replica runs (1 per replica)",
                             labels=["replica", "node", "pid", "niceness", "capacity"])
    for r in reports:
        info.add_metric([r.replica, r.node, str(r.pid), str(r.niceness), str(r.capacity)], 1)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged([count, info, *families.values()]))
    return generate_latest(registry)


def unpack(archives: dict[str, bytes], root: Path) -> Path:
    """The characters' archives as folders under `root/characters` (replaced if there)."""
    folder = root / "characters"
    shutil.rmtree(folder, ignore_errors=True)
    for name, data in archives.items():
        target = folder / name
        target.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            tar.extractall(target, filter="data")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
