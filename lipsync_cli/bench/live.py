"""Live figures on this machine (`lipsync bench --live`): a session's latency and its parts when audio
arrives in real time in chunks of a given size, and the aggregate frame rate of several sessions of one
character with and without micro-batching across them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.characters.manifest import Character
from lipsync_cli.live import LiveFrame, LiveOptions, LiveSession
from lipsync_cli.live.broadcast import feed
from lipsync_cli.runtime import Runtime


@dataclass(frozen=True)
class LatencyRow:
    chunk_ms: float
    latency_budget_ms: float
    frames: int
    total_p50_ms: float
    total_p95_ms: float
    lookahead_ms: float  # medians of the parts
    queueing_ms: float
    inference_ms: float
    composite_ms: float
    underrun_frames: int
    late_frames: int  # made after their due time


def _take_until_drained(session: LiveSession, fed: threading.Event) -> list[LiveFrame]:
    frames = []
    while not (fed.is_set() and session.drained()):
        frame = session.next_frame(timeout=0.5)
        if frame is not None:
            frames.append(frame)
    return frames


def latency(runtime: Runtime, character: Character, chunk_ms: float, seconds: float, options: LiveOptions
            ) -> LatencyRow:
    """One session fed speech at real-time pace in chunks of chunk_ms, its budget sized for the chunks."""
    probe = LiveSession(runtime, character, options)
    budget = probe.lookahead + (options.compute_ms + chunk_ms + 100) / 1000
    probe.close()
    x = speech_like(seconds, seed=31)
    size = max(1, round(16000 * chunk_ms / 1000))
    with LiveSession(runtime, character, replace(options, latency_ms=budget * 1000)) as session:
        fed = threading.Event()

        def run_feed() -> None:
            try:
                feed(session, iter([x[a : a + size] for a in range(0, len(x), size)]), threading.Event(), 16000)
            finally:
                fed.set()

        feeder = threading.Thread(target=run_feed, daemon=True)
        feeder.start()
        frames = _take_until_drained(session, fed)
        feeder.join()
    speech = [f for f in frames if f.latency is not None]
    parts = np.array([[f.latency.lookahead, f.latency.queueing, f.latency.inference, f.latency.composite]
                      for f in speech if f.latency is not None]) * 1000
    totals = parts.sum(axis=1)
    lookahead, queueing, inference, composite = (float(v) for v in np.median(parts, axis=0))
    return LatencyRow(chunk_ms, budget * 1000, len(speech), float(np.median(totals)), float(np.percentile(totals, 95)),
                      lookahead, queueing, inference, composite, sum(f.underrun for f in speech),
                      sum(f.made > f.due for f in frames))


def aggregate_fps(runtime: Runtime, character: Character, sessions: int, seconds: float, options: LiveOptions
                  ) -> float:
    """Speech frames per second made by `sessions` sessions at once, each given its whole clip at once."""
    clips = [speech_like(seconds, seed=40 + i) for i in range(sessions)]
    opened = [LiveSession(runtime, character, options) for _ in range(sessions)]
    counts = [0] * sessions
    try:
        want = [int(np.ceil(len(c) * float(character.fps) / 16000)) for c in clips]

        def drain(i: int) -> None:  # speech frames only: a session opened earlier shows idle ones meanwhile
            while counts[i] < want[i]:
                frame = opened[i].next_frame(timeout=60)
                if frame is None:
                    raise RuntimeError("a live session stalled")
                counts[i] += frame.speech

        threads = [threading.Thread(target=drain, args=(i,), daemon=True) for i in range(sessions)]
        start = time.perf_counter()
        for session, clip in zip(opened, clips, strict=True):
            session.push(clip)
            session.flush()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts) / (time.perf_counter() - start)
    finally:
        for session in opened:
            session.close()


def encode_ms(runtime: Runtime, character: Character, options: LiveOptions, frames: int = 75) -> dict[str, float]:
    """Median milliseconds per frame of the server's H.264 and JPEG encoders on a session's speech frames."""
    from lipsync_cli.serve.encoders import H264Encoder, JpegEncoder

    with LiveSession(runtime, character, replace(options, start="first_audio")) as session:
        session.push(speech_like(frames / float(character.fps), seed=51))
        session.flush()
        images: list[np.ndarray] = []
        while len(images) < frames:
            frame = session.next_frame(timeout=60)
            if frame is None:
                raise RuntimeError("a live session stalled")
            images.append(frame.image)
    height, width = images[0].shape[0] * 2 // 3, images[0].shape[1]
    out = {}
    for name, encoder in (("h264", H264Encoder(width, height, character.fps)), ("jpeg", JpegEncoder())):
        times = []
        for image in images:
            started = time.perf_counter()
            encoder.encode(image)
            times.append(time.perf_counter() - started)
        out[name] = round(float(np.median(times[5:])) * 1000, 2)  # past the first keyframe and warm-up
    return out


def live_bench(runtime: Runtime, character: Character, options: LiveOptions, chunks_ms: Sequence[float],
               levels: Sequence[int], seconds: float, say: Callable[[str], None] = lambda s: None) -> dict:
    say("warming up (the template cache, the models' first calls)")
    aggregate_fps(runtime, character, max(levels), min(seconds, 2.0), options)
    rows = []
    for chunk in chunks_ms:
        say(f"latency with {chunk:g} ms chunks")
        rows.append(latency(runtime, character, chunk, seconds, options))
    fps: dict[str, dict[int, float]] = {"micro-batched": {}, "separate": {}}
    for n in levels:  # side by side: each count with and without micro-batching, one after the other
        for micro in (True, False):
            say(f"{n} sessions, {'micro-batched' if micro else 'separate UNet calls'}")
            key = "micro-batched" if micro else "separate"
            fps[key][n] = aggregate_fps(runtime, character, n, seconds, replace(options, micro_batching=micro))
    say("encode cost per frame")
    return {"character": character.name, "device": str(options.device), "latency": [r.__dict__ for r in rows],
            "aggregate_fps": fps, "encode_ms": encode_ms(runtime, character, options)}
