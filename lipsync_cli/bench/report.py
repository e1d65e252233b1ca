"""What `lipsync bench` measures and reports: stages with their samples and targets, and the whole report."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

# The seed's targets (design.md section 7) and ours, in ms.
TARGETS = {
    "audio front end": (5.0, 0.5),
    "audio encoder": (2.0, 1.0),
    "UNet": (10.0, None),  # the seed's is a GPU figure
    "end to end": (50.0, None),
}
TRANSCODE_RATIO_TARGET = 1.25
OVER_UNET_TARGET = 1.10  # end to end / UNet alone, for a model that costs more than the work around it


@dataclass
class Stage:
    name: str
    per: str
    samples_ms: list[float] = field(repr=False)
    seed_target_ms: float | None = None
    our_target_ms: float | None = None

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def spread_ms(self) -> tuple[float, float]:
        q = np.percentile(self.samples_ms, [10, 90])
        return float(q[0]), float(q[1])

    def met(self, device: str) -> bool | None:
        target = self.our_target_ms
        if target is None and (self.name != "UNet" or device != "cpu"):  # the seed's UNet figure is a GPU one
            target = self.seed_target_ms
        return None if target is None else self.median_ms <= target

    def to_dict(self, device: str) -> dict:
        p10, p90 = self.spread_ms
        return {"per": self.per, "median_ms": self.median_ms, "p10_ms": p10, "p90_ms": p90,
                "samples": len(self.samples_ms), "seed_target_ms": self.seed_target_ms,
                "our_target_ms": self.our_target_ms, "met": self.met(device)}


@dataclass
class BenchReport:
    character: str
    device: str
    provider: str
    layout: str
    threads: int
    batch_size: int
    seconds: float
    frames: int
    frame_size: str
    stages: list[Stage]
    render_seconds: float
    transcode_seconds: float
    peak_memory_mb: float
    cold_render_seconds: float  # the first render of the character: template decoded and prepared
    warm_render_seconds: float  # the second, in a fresh runtime: template read from the on-disk cache
    seam: dict = field(default_factory=dict)  # blend -> {"ring_difference", "boundary_step"} in levels
    parameters: dict = field(default_factory=dict)
    in_flight_fps: dict = field(default_factory=dict)  # renders at once -> aggregate frames per second
    blend: str = "match"
    io_binding: bool = False
    device_processing: bool = False
    precision: str = "fp32"  # the character's float models, or the variant's precision

    @property
    def request(self):
        """The request that runs on exactly the device measured."""
        from lipsync_cli.models.devices import parse_device

        return parse_device(self.device)

    @property
    def fps(self) -> float:
        return self.frames / self.render_seconds

    @property
    def realtime(self) -> float:
        return self.seconds / self.render_seconds

    @property
    def transcode_ratio(self) -> float:
        return self.render_seconds / self.transcode_seconds

    @property
    def warm_speedup(self) -> float:
        return self.cold_render_seconds / self.warm_render_seconds

    def median(self, stage: str) -> float:
        return next(s.median_ms for s in self.stages if s.name == stage)

    @property
    def over_unet(self) -> float:
        """End to end per frame / the UNet's own run per frame: 1.0 means the model is all that costs."""
        return self.median("end to end") / self.median("UNet alone")

    def to_json(self) -> dict:
        data = asdict(self)
        data["stages"] = {s.name: s.to_dict(self.device) for s in self.stages}
        data.update(fps=self.fps, realtime=self.realtime, transcode_ratio=self.transcode_ratio,
                    warm_speedup=self.warm_speedup, end_to_end_over_unet=self.over_unet,
                    end_to_end_over_unet_target=OVER_UNET_TARGET,
                    transcode_ratio_target=TRANSCODE_RATIO_TARGET,
                    transcode_ratio_met=self.transcode_ratio <= TRANSCODE_RATIO_TARGET)
        return data


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def make_stage(name: str, per: str, samples: list[float]) -> Stage:
    seed, ours = TARGETS.get(name, (None, None))
    return Stage(name, per, samples, seed, ours)
