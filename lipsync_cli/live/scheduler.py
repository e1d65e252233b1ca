"""One UNet for many streams: the ready frames of every session of one character on one device, batched into
as few UNet calls as the policy allows (design.md section 13, micro-batching across sessions).

Requests are served earliest deadline first. Once a request is waiting, a call waits at most `wait` seconds
for more (or until `frames` are waiting), then runs what it has. A call that fails is retried frame by
frame, so that a frame that breaks the model fails its own session only.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lipsync_cli.frames.template import TemplateFrame
from lipsync_cli.render.renderer import FrameRenderer, Patch

Done = Callable[["Patch | BaseException", float, float], None]  # (patch or error, waited s, inference s)


class Withdrawn(RuntimeError):
    """A request its owner no longer needs."""


@dataclass(frozen=True)
class BatchPolicy:
    frames: int  # most frames per call
    wait: float | None = None  # seconds a call waits for more once one is ready; None: until `frames` are


@dataclass(order=True)
class _Request:
    deadline: float
    seq: int
    frame: TemplateFrame = field(compare=False)
    inputs: np.ndarray = field(compare=False)
    features: np.ndarray = field(compare=False)
    index: int = field(compare=False)
    done: Done = field(compare=False)
    owner: int = field(compare=False, default=0)
    submitted: float = field(compare=False, default=0.0)


class UNetScheduler:
    def __init__(self, renderer: FrameRenderer, policy: BatchPolicy, owns_renderer: bool = False,
                 name: str = "lipsync-unet") -> None:
        """`owns_renderer`: close the renderer (and so its lease) with the scheduler."""
        self.renderer, self.policy, self._owns = renderer, policy, owns_renderer
        self._heap: list[_Request] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._closed = False
        self.batches: Counter[int] = Counter()  # batch size -> calls
        self.shared_calls = 0  # calls with the frames of more than one owner (session)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, frame: TemplateFrame, inputs: np.ndarray, features: np.ndarray, index: int, deadline: float,
               done: Done, owner: int = 0) -> None:
        """Ask for frame `index`'s patch; `done` is called on the scheduler's thread."""
        request = _Request(deadline, next(self._seq), frame, inputs, features, index, done, owner, time.monotonic())
        with self._cond:
            if self._closed:
                raise RuntimeError("the UNet scheduler is closed")
            heapq.heappush(self._heap, request)
            self._cond.notify_all()

    def withdraw(self, owner: int) -> int:
        """Drop `owner`'s requests not yet in a call (a session that closed, an utterance interrupted): nobody
        will use their patches, and others should not wait behind them. Their `done` hears so."""
        with self._cond:
            gone = [r for r in self._heap if r.owner == owner]
            if gone:
                self._heap = [r for r in self._heap if r.owner != owner]
                heapq.heapify(self._heap)
        for request in gone:
            request.done(Withdrawn("withdrawn"), 0.0, 0.0)
        return len(gone)

    def _take(self) -> list[_Request] | None:
        with self._cond:
            while True:
                while not self._heap and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return None
                if self.policy.wait is None or self.policy.wait > 0:
                    until = None if self.policy.wait is None else time.monotonic() + self.policy.wait
                    while 0 < len(self._heap) < self.policy.frames and not self._closed:
                        left = None if until is None else until - time.monotonic()
                        if left is not None and left <= 0:
                            break
                        self._cond.wait(left)
                if self._heap or self._closed:  # frames withdrawn while it waited: wait for others
                    count = min(self.policy.frames, len(self._heap))
                    return None if self._closed else [heapq.heappop(self._heap) for _ in range(count)]

    def _call(self, batch: list[_Request]) -> list[Patch]:
        frames = [r.frame for r in batch]
        inputs = np.stack([r.inputs for r in batch])
        features = np.stack([r.features for r in batch])
        return self.renderer.infer(frames, inputs, features, min(r.index for r in batch))

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            started = time.monotonic()
            self.batches[len(batch)] += 1
            self.shared_calls += len({r.owner for r in batch}) > 1
            try:
                outcomes: list[Patch | BaseException] = list(self._call(batch))
            except Exception as exc:  # one frame may have broken the call: isolate it
                outcomes = [exc] if len(batch) == 1 else [self._alone(r) for r in batch]
            seconds = time.monotonic() - started
            for request, outcome in zip(batch, outcomes, strict=True):
                request.done(outcome, started - request.submitted, seconds)

    def _alone(self, request: _Request) -> Patch | BaseException:
        try:
            return self._call([request])[0]
        except Exception as exc:
            return exc

    def close(self) -> None:
        with self._cond:
            self._closed = True
            pending, self._heap = self._heap, []
            self._cond.notify_all()
        self._thread.join(timeout=5)
        for request in pending:
            request.done(RuntimeError("the session's UNet scheduler closed"), 0.0, 0.0)
        if self._owns:
            self.renderer.close()
