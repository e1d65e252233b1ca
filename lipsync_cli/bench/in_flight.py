"""Aggregate speed with several renders in flight on one device: the same clips rendered as one batch with
1, 2 and 4 jobs at a time, sharing the runtime's sessions, so one render's model calls fill the time another
spends compositing and encoding."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import soundfile as sf

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.batch.runner import Batch, BatchSettings
from lipsync_cli.batch.sources import Entry
from lipsync_cli.render import RenderJob, RenderOptions
from lipsync_cli.runtime import Runtime, RuntimeConfig

LEVELS = (1, 2, 4)


def in_flight_fps(config: RuntimeConfig, folder: Path, character: str, options: RenderOptions,
                  clip_seconds: float, levels: Sequence[int] = LEVELS, say: Callable[[str], None] = lambda s: None
                  ) -> dict[int, float]:
    """{jobs in flight: frames per second over the whole batch} for max(levels) clips of `clip_seconds`."""
    clips = []
    for i in range(max(levels)):
        clips.append(folder / f"in-flight-{i}.wav")
        sf.write(clips[-1], speech_like(clip_seconds, seed=200 + i), 16000)
    fps: dict[int, float] = {}
    for jobs in levels:
        say(f"{len(clips)} renders, {jobs} in flight")
        entries = [Entry(i, clip.name, RenderJob(clip, character, folder / f"{clip.stem}.{jobs}.mp4", options))
                   for i, clip in enumerate(clips, 1)]
        with Runtime(config) as runtime:
            batch = Batch(entries, runtime, BatchSettings(jobs_per_device=jobs))
            records = batch.plan()
            start = time.perf_counter()
            batch.run()
            elapsed = time.perf_counter() - start
        bad = [r for r in records if r.status != "ok"]
        if bad:
            raise RuntimeError(f"bench job failed: {bad[0].error}")
        fps[jobs] = sum(r.frames or 0 for r in records) / elapsed
    return fps
