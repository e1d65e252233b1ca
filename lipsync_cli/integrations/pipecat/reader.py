"""The thread that takes a live session's frames for the Pipecat service: it converts each to what the pipeline
carries (RGB, 16-bit PCM) off the event loop, hands each out `LEAD` seconds before its due time (the session's
timeline, t0 + latency + k / fps: idle frames are ready at their stream time and speech frames a look-ahead
later, so pacing both by their due time keeps one timeline at a constant latency; the output transport, which
plays whatever it is given as soon as it can, then holds only the lead), drops frames of an interrupted
generation, and hands the rest, or the session's failure, to the loop."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from lipsync_cli.integrations.pipecat.media import i420_to_rgb, mono_to_pcm
from lipsync_cli.live import LiveFrame, LiveSession

LEAD = 0.1  # seconds before its due time a frame goes to the transport: a cushion against the loop's jitter


@dataclass(frozen=True, eq=False)
class Converted:
    frame: LiveFrame
    rgb: bytes
    pcm: bytes  # 16-bit mono at the session's return rate


class FrameReader:
    def __init__(self, session: LiveSession, loop: asyncio.AbstractEventLoop,
                 queue: asyncio.Queue[Converted | BaseException]) -> None:
        self._session, self._loop, self._queue = session, loop, queue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lipsync-pipecat-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        s = self._session
        while not self._stop.is_set():
            try:
                frame = s.next_frame(timeout=0.1)
            except BaseException as exc:  # the session broke: the service reports it and lets the voice through
                self._hand(exc)
                return
            if frame is None:
                continue
            release = frame.due - LEAD
            while not self._stop.is_set() and frame.generation == s.generation:
                wait = release - s.clock()
                if wait <= 0:
                    break
                self._stop.wait(min(wait, 0.02))
            if self._stop.is_set():
                return
            if frame.generation != s.generation:
                continue
            self._hand(Converted(frame, i420_to_rgb(frame.image).tobytes(), mono_to_pcm(frame.audio)))

    def _hand(self, item: Converted | BaseException) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)
