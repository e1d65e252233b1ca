"""Prometheus metrics of one server (design.md section 14), in a registry of its own (never the process's
global one), plus the runtime's model registry and UNet batch sizes read when scraped."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lipsync_cli.runtime import Runtime

LATENESS_BUCKETS = (0.0, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)
LATENCY_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)


class _RuntimeCollector:
    def __init__(self, runtime: Runtime, batches: Callable[[], dict[int, int]]) -> None:
        self.runtime, self.batches = runtime, batches

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily("lipsync_model_requests", "Leases of a model", labels=["model", "device"])
        frames = CounterMetricFamily("lipsync_model_frames", "Frames a model has run", labels=["model", "device"])
        seconds = CounterMetricFamily("lipsync_model_inference_seconds", "Time in a model's runs",
                                      labels=["model", "device"])
        for s in self.runtime.registry.stats():
            labels = [s.name, s.device]
            requests.add_metric(labels, s.requests)
            frames.add_metric(labels, s.frames)
            seconds.add_metric(labels, s.inference_seconds)
        loaded = GaugeMetricFamily("lipsync_models_loaded", "Models loaded", value=len(self.runtime.registry.loaded()))
        calls = CounterMetricFamily("lipsync_unet_calls", "Live UNet calls by batch size", labels=["batch_size"])
        for size, count in sorted(self.batches().items()):
            calls.add_metric([str(size)], count)
        return [requests, frames, seconds, loaded, calls]


class Metrics:
    def __init__(self, runtime: Runtime, batches: Callable[[], dict[int, int]]) -> None:
        r = self.registry = CollectorRegistry()
        self.active = Gauge("lipsync_sessions_active", "Live sessions now", registry=r)
        self.admitted = Counter("lipsync_sessions_admitted", "Live sessions admitted", registry=r)
        self.refused = Counter("lipsync_sessions_refused", "Live sessions refused or ended by the server",
                               ["reason"], registry=r)
        self.frames = Counter("lipsync_frames", "Frames sent", ["kind"], registry=r)
        self.underruns = Counter("lipsync_underrun_frames", "Frames whose audio came late", registry=r)
        self.lateness = Histogram("lipsync_frame_lateness_seconds", "How late a frame was sent after its due time",
                                  buckets=LATENESS_BUCKETS, registry=r)
        self.latency = Histogram("lipsync_processing_latency_seconds", "From a frame's own audio to the frame",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.encode = Histogram("lipsync_encode_seconds", "Encoding one frame", ["codec"],
                                buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16), registry=r)
        r.register(_RuntimeCollector(runtime, batches))
        ProcessCollector(registry=r)  # process_resident_memory_bytes, open fds, CPU seconds

    def text(self) -> bytes:
        return generate_latest(self.registry)
