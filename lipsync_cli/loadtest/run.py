"""Running a load test: N sessions at once against a server (a URL, or one started in this process), the
server's memory from /metrics while they run, and the figures of each session and of all of them."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from lipsync_cli.loadtest.client import Scenario, SessionResult, run_session


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    a = np.asarray(values) * 1000
    return {"p50": round(float(np.percentile(a, 50)), 1), "p95": round(float(np.percentile(a, 95)), 1),
            "p99": round(float(np.percentile(a, 99)), 1), "max": round(float(a.max()), 1)}


@dataclass
class LoadReport:
    sessions: int
    seconds: float
    results: list[SessionResult]
    memory_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds, server RSS)
    window: float = 60.0  # seconds per row of the lateness-over-time figures
    cpu_cores: float | None = None  # the server's CPU time per second of the test: cores busy

    def session_row(self, r: SessionResult) -> dict:
        parts = {k: round(float(np.median([p[k] for p in r.latency_parts])), 1)
                 for k in ("lookahead", "queueing", "inference", "composite", "encode")} if r.latency_parts else {}
        span = r.arrivals[-1][0] - r.arrivals[0][0] if len(r.arrivals) > 1 else 0.0
        return {"frames": r.frames, "fps": round((r.frames - 1) / span, 2) if span > 0 else None, "stream_fps": r.fps,
                "speech_frames": r.speech_frames,
                "lateness_ms": percentiles(r.lateness), "glass_to_glass_ms": percentiles(r.glass),
                "parts_ms": parts, "underruns": r.underruns, "budget_ms": r.budget_ms, "refused": r.refused,
                "close_code": r.close_code, "http_status": r.http_status, "reconnects": r.reconnects,
                "error": r.error, "aligned": r.aligned, "misaligned": r.misaligned,
                "alignments": len(r.offsets), "drift_frames": drift(r)}

    def to_json(self) -> dict:
        served = [r for r in self.results if r.refused is None and r.error is None]
        rows = [self.session_row(r) for r in self.results]
        by_window: dict[int, list[float]] = {}
        for r in served:
            for (at, _), late in zip(r.arrivals, r.lateness, strict=True):
                by_window.setdefault(int(at // self.window), []).append(late)
        return {
            "sessions": self.sessions, "seconds": self.seconds, "served": len(served),
            "refused": sum(r.refused is not None for r in self.results),
            "errors": sum(r.error is not None for r in self.results),
            "reconnects": sum(r.reconnects for r in self.results),
            "frames": sum(r.frames for r in served), "fps": round(sum(row["fps"] or 0 for row in rows
                                                                        if row["refused"] is None), 2),
            "lateness_ms": percentiles([x for r in served for x in r.lateness]),
            "glass_to_glass_ms": percentiles([x for r in served for x in r.glass]),
            "underruns": sum(r.underruns for r in served),
            "lateness_by_window": {f"{w * self.window:g}s": percentiles(v) for w, v in sorted(by_window.items())},
            "memory_mb": [[round(t, 1), round(m, 1)] for t, m in self.memory_mb],
            "server_cpu_cores": round(self.cpu_cores, 3) if self.cpu_cores is not None else None,
            "per_session": rows,
        }


def drift(r: SessionResult) -> int | None:
    """How many frames the stream gained or lost against the clock between 10 % and 90 % of its frames: the
    lead of the newest frame over floor((t - budget) * fps) at both moments."""
    if len(r.arrivals) < 10 or r.reconnects:  # a new connection's frames start again at index 0
        return None
    budget = r.budget_ms / 1000

    def lead(at: float, index: int) -> int:
        return index - int((at - budget) * r.fps)

    early, late = r.arrivals[len(r.arrivals) // 10], r.arrivals[len(r.arrivals) * 9 // 10]  # not the flush's tail
    return lead(*late) - lead(*early)


def _server_process(metrics_url: str, token: str | None) -> tuple[float, float] | None:
    """The server's resident memory (MB) and CPU seconds so far, from its /metrics: on a cluster, the sum over
    its replicas (each sample labelled with its `replica`)."""
    request = urllib.request.Request(metrics_url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        text = urllib.request.urlopen(request, timeout=5).read().decode()
    except OSError:
        return None
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("process_resident_memory_bytes", "process_cpu_seconds_total"):
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    if len(values) < 2:
        return None
    return values["process_resident_memory_bytes"] / 2**20, values["process_cpu_seconds_total"]


@contextmanager
def every_second(tick: Callable[[], None]) -> Iterator[None]:
    """`tick()` once a second, on a thread of its own, while the block runs."""
    done = threading.Event()

    def loop() -> None:
        while not done.wait(1.0):
            tick()

    thread = threading.Thread(target=loop, name="lipsync-loadtest-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(5)


def run_load(scenario: Scenario, sessions: int, speech: np.ndarray, metrics_url: str | None = None,
             on_progress: Callable[[str], None] | None = None, window: float = 60.0) -> LoadReport:
    """`sessions` sessions of the scenario at once (each with its own stretch of the speech)."""
    memory: list[tuple[float, float]] = []
    cpu: list[tuple[float, float]] = []  # (seconds, the server's CPU seconds so far)
    results: list[SessionResult] = []
    started = time.monotonic()

    def watch() -> None:
        if metrics_url is not None:
            seen = _server_process(metrics_url, scenario.token)
            if seen is not None:
                memory.append((time.monotonic() - started, seen[0]))
                cpu.append((time.monotonic() - started, seen[1]))
        if on_progress is not None:
            frames = sum(r.frames for r in results) if results else 0
            on_progress(f"{sessions} sessions, {time.monotonic() - started:.0f} of {scenario.seconds:.0f} s"
                        + (f", server {memory[-1][1]:.0f} MB" if memory else "") + (f", {frames} frames"
                                                                                   if frames else ""))

    async def main() -> list[SessionResult]:
        stop = asyncio.Event()
        shifts = [np.roll(speech, i * len(speech) // max(1, sessions)) for i in range(sessions)]
        return list(await asyncio.gather(*(run_session(scenario, s, stop) for s in shifts)))

    with every_second(watch):
        results = asyncio.run(main())
    report = LoadReport(sessions, scenario.seconds, results, memory, window)
    if len(cpu) >= 3:  # from the second sample on: the first second holds the sessions' start
        report.cpu_cores = (cpu[-1][1] - cpu[1][1]) / (cpu[-1][0] - cpu[1][0])
    return report


def find_capacity(scenario: Scenario, speech: np.ndarray, most: int = 16, metrics_url: str | None = None,
                  on_progress: Callable[[str], None] | None = None) -> tuple[int, list[dict]]:
    """Raise the number of sessions until the p99 lateness is past zero (a frame came after its due time,
    that is later than the latency budget allows), a session lost frames or was refused: the capacity is
    the last count that passed (0 if even one session failed)."""
    runs, capacity = [], 0
    for n in range(1, most + 1):
        if on_progress is not None:
            on_progress(f"capacity: trying {n} sessions")
        report = run_load(scenario, n, speech, metrics_url, on_progress).to_json()
        p99 = report["lateness_ms"]["p99"]
        complete = all(row["frames"] >= 0.9 * scenario.seconds * row["stream_fps"] for row in report["per_session"])
        ok = report["refused"] == 0 and report["errors"] == 0 and p99 is not None and p99 <= 0 and complete
        runs.append({"sessions": n, "ok": ok, "lateness_p99_ms": p99, "fps": report["fps"],
                     "refused": report["refused"], "complete": complete})
        if not ok:
            break
        capacity = n
    return capacity, runs
