"""Progress on stderr: a live bar on a terminal; otherwise a plain line at most every few seconds, so that the
logs of unattended runs show progress."""

from __future__ import annotations

import threading
import time
from typing import IO

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from lipsync_cli.batch.report import JobRecord
from lipsync_cli.cli.common import err_console
from lipsync_cli.render import FramesDone, RenderEvent, Started

PLAIN_EVERY = 5.0  # seconds between plain progress lines


class BatchProgress:
    def __init__(self, jobs: int, frames: int, interactive: bool, enabled: bool = True,
                 stream: IO[str] | None = None, every: float = PLAIN_EVERY) -> None:
        self.jobs, self.frames = jobs, frames
        self.done_jobs = self.done_frames = 0
        self.enabled, self.interactive, self.every = enabled, interactive and enabled, every
        self._stream = stream
        self._lock = threading.Lock()
        self._started = time.perf_counter()
        self._last_line = self._started
        self._bar: Progress | None = None
        self._closed = False
        self._tasks: dict[int, TaskID] = {}
        if self.interactive:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("frames {task.fields[fps]}"), TimeRemainingColumn(),
                                 console=err_console, transient=True)
            self._overall = self._bar.add_task(self._title(), total=frames or None, fps="")
            self._bar.start()

    def _title(self) -> str:
        return f"jobs {self.done_jobs}/{self.jobs}"

    def _fps(self) -> float:
        elapsed = time.perf_counter() - self._started
        return self.done_frames / elapsed if elapsed > 0 else 0.0

    def update(self, record: JobRecord, event: RenderEvent | None) -> None:
        with self._lock:
            if isinstance(event, FramesDone):
                self.done_frames += event.frames
            elif event is None and record.status != "interrupted":
                self.done_jobs += 1
            if self._bar is not None:
                self._draw(record, event)
            elif self.enabled:
                self._plain()

    def _draw(self, record: JobRecord, event: RenderEvent | None) -> None:
        assert self._bar is not None
        if isinstance(event, Started):
            self._tasks[record.index] = self._bar.add_task(f"  {record.source} on {event.device}", total=event.frames,
                                                           fps="")
        elif isinstance(event, FramesDone) and record.index in self._tasks:
            self._bar.update(self._tasks[record.index], completed=event.done)
        elif event is None and record.index in self._tasks:
            self._bar.remove_task(self._tasks.pop(record.index))
        self._bar.update(self._overall, completed=self.done_frames, description=self._title(),
                         fps=f"{self._fps():.1f} fps")

    def _plain(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last_line < self.every:
            return
        self._last_line = now
        total = f"/{self.frames}" if self.frames else ""
        line = (f"lipsync: {self.done_jobs}/{self.jobs} jobs, {self.done_frames}{total} frames, "
                f"{self._fps():.1f} fps, {now - self._started:.0f} s")
        if self._stream is not None:
            self._stream.write(line + "\n")
            self._stream.flush()
        else:
            err_console.print(line, soft_wrap=True, highlight=False)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._bar is not None:
                self._bar.stop()
                self._bar = None
            elif self.enabled and self.done_frames and time.perf_counter() - self._started >= self.every:
                self._plain(force=True)
