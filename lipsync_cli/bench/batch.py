"""What rendering many clips in one process buys: K short clips rendered as one batch (one interpreter, the
models and the template loaded once, jobs overlapping) against K separate `lipsync render` processes."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import soundfile as sf

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.batch.runner import Batch, BatchSettings
from lipsync_cli.batch.sources import Entry
from lipsync_cli.models.devices import DeviceRequest
from lipsync_cli.render import RenderJob, RenderOptions
from lipsync_cli.runtime import Runtime, RuntimeConfig


@dataclass
class BatchBenchReport:
    clips: int
    clip_seconds: float
    character: str
    device: str
    separate_seconds: float  # K processes, one after the other
    batch_seconds: dict[int, float]  # jobs in flight -> seconds for the whole batch

    def speedup(self, jobs: int) -> float:
        return self.separate_seconds / self.batch_seconds[jobs]

    def to_json(self) -> dict:
        return dict(asdict(self), speedups={str(j): self.speedup(j) for j in self.batch_seconds})


def run_batch_bench(count: int, character: str, device: DeviceRequest, seconds: float = 1.0,
                    concurrency: tuple[int, ...] = (1, 2), say: Callable[[str], None] = lambda s: None
                    ) -> BatchBenchReport:
    with tempfile.TemporaryDirectory(prefix="lipsync-bench-batch-") as tmp:
        folder = Path(tmp)
        clips = []
        for i in range(count):
            clips.append(folder / f"clip{i:03d}.wav")
            sf.write(clips[-1], speech_like(seconds, seed=100 + i), 16000)
        env = dict(os.environ, LIPSYNC_CACHE=str(folder / "cache"))
        render = [sys.executable, "-m", "lipsync_cli", "render", "-c", character, "--device", str(device), "-q",
                  "--overwrite"]
        say("warming the template cache")
        subprocess.run([*render, str(clips[0]), "-o", str(folder / "warm.mp4")], env=env, check=True)
        say(f"{count} separate processes")
        start = time.perf_counter()
        for clip in clips:
            subprocess.run([*render, str(clip), "-o", str(folder / f"{clip.stem}.single.mp4")], env=env, check=True)
        separate = time.perf_counter() - start
        batch_seconds = {}
        options = RenderOptions(device, overwrite=True)
        for jobs in concurrency:
            say(f"one batch, {jobs} in flight")
            entries = [Entry(i, clip.name, RenderJob(clip, character, folder / f"{clip.stem}.{jobs}.mp4", options))
                       for i, clip in enumerate(clips, 1)]
            start = time.perf_counter()
            with Runtime(RuntimeConfig(cache_dir=folder / "cache" / "templates")) as runtime:
                batch = Batch(entries, runtime, BatchSettings(jobs_per_device=jobs))
                records = batch.plan()
                batch.run()
            batch_seconds[jobs] = time.perf_counter() - start
            bad = [r for r in records if r.status != "ok"]
            if bad:
                raise RuntimeError(f"bench batch job failed: {bad[0].error}")
        return BatchBenchReport(count, seconds, character, str(device), separate, batch_seconds)
