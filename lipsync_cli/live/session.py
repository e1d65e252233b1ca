"""`LiveSession`: a character speaking audio that is still arriving (design.md section 13).

One timeline: output frame k covers stream time [k / fps, (k + 1) / fps) and is due at t0 + L + k / fps on
the session's clock. Audio pushed while no utterance is open starts a new one at the next frame boundary at
or after the current stream time (and after the frames already decided); the frames before it are idle
(the template at that frame's ping-pong index). An open utterance whose audio is late is given silence once
its next frame can wait no longer (an underrun); `flush` ends it. Frames come out in order, each as soon as
it can be made, with its own 1/fps of the timeline's audio.

Threads: the callers (push, flush, interrupt, next_frame) touch shared state under one lock; one worker
thread resamples, encodes, composites and decides what each frame is; the UNet runs on the scheduler's
thread, shared with the other sessions of the character on the device.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from fractions import Fraction

import numpy as np

from lipsync_cli.audio.pcm import s16_to_float
from lipsync_cli.characters.manifest import Character
from lipsync_cli.errors import InputError
from lipsync_cli.features.mel import SILENCE_FRAME_VALUE
from lipsync_cli.live.frames import MAX_RATE, MIN_RATE, Interruption, LiveFrame, LiveOptions, LiveStats
from lipsync_cli.live.scheduler import BatchPolicy, UNetScheduler, Withdrawn
from lipsync_cli.live.slots import Slot, picture
from lipsync_cli.live.timing import lookahead_seconds
from lipsync_cli.live.utterance import Utterance, sample_of
from lipsync_cli.render.compositor import Compositor
from lipsync_cli.render.jobs import default_batch
from lipsync_cli.render.planning import notice_of, resolve_character
from lipsync_cli.render.precision import resolve_models
from lipsync_cli.render.renderer import FrameRenderer, Patch
from lipsync_cli.runtime import Runtime

Clock = Callable[[], float]
_POLL = 0.05  # the worker looks at the clock at least this often (a test's clock moves without telling it)
LEASE_TIMEOUT = 30.0


class Overrun(InputError):
    """Audio pushed further ahead of the clock than the session buffers."""


def _check_rate(rate: int, option: str = "rate") -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InputError(f"audio rate must be {MIN_RATE} to {MAX_RATE} Hz, not {rate}", option=option)


def session_latency(character: Character, options: LiveOptions) -> float:
    """The latency budget L of a session of the character with these options, in seconds; an InputError when
    the one asked for is not a positive number of milliseconds or is below what the character needs
    (look-ahead, compute and one frame)."""
    asked = options.latency_ms
    if asked is not None and not (math.isfinite(asked) and asked > 0):
        raise InputError(f"latency must be a positive number of milliseconds, not {asked}", option="latency_ms")
    lookahead = lookahead_seconds(character)
    minimum = lookahead + options.compute_ms / 1000 + float(1 / character.fps)
    latency = options.latency_ms / 1000 if options.latency_ms is not None else \
        lookahead + (options.compute_ms + options.jitter_ms) / 1000
    if latency < minimum:
        raise InputError(f"latency {latency * 1000:.0f} ms is below what {character.name} needs: "
                         f"{minimum * 1000:.0f} ms (look-ahead, compute and one frame)", option="latency_ms")
    return latency


class LiveSession:
    def __init__(self, runtime: Runtime, character: str | Character, options: LiveOptions = LiveOptions(),
                 clock: Clock = time.monotonic) -> None:
        for name, rate in (("rate", options.rate), ("return_rate", options.return_rate)):
            _check_rate(rate, name)
        found = resolve_character(runtime, character) if isinstance(character, str) else character
        resolved = resolve_models(runtime, found, options.device, options.precision)
        self.character, self.device, self.notice = resolved.character, resolved.device, notice_of(resolved)
        self.options, self.clock, self.fps = options, clock, self.character.fps
        self.lookahead = lookahead_seconds(self.character)
        self.latency = session_latency(self.character, options)
        batch = options.batch_frames or default_batch(self.device)
        self._renderer = FrameRenderer(runtime, self.character, self.device, batch, options.blend, LEASE_TIMEOUT)
        self._runtime, self._shared_key = runtime, None
        policy = BatchPolicy(self._renderer.batch, options.batch_wait_ms / 1000)
        try:
            if options.micro_batching:
                c = self.character
                self._shared_key = ("unet-scheduler", c.model, c.audio_encoder, c.precision, self.device,
                                    options.blend, c.input, c.crop, c.protect is not None, policy)
                renderer = lambda: FrameRenderer(runtime, c, self.device, batch, options.blend, LEASE_TIMEOUT)  # noqa: E731
                self._scheduler = runtime.acquire_shared(
                    self._shared_key, lambda: UNetScheduler(renderer(), policy, owns_renderer=True))
            else:
                self._scheduler = UNetScheduler(self._renderer, policy)
        except BaseException:
            self._renderer.close()
            raise
        self._compositor = Compositor(self.character, options.blend)
        self._cond = threading.Condition()
        self._utterances: list[Utterance] = []
        self._out: deque[LiveFrame] = deque()
        self._slots: deque[Slot] = deque()  # the worker's: decided, not yet made
        self._generation = 0
        self._decided = 0  # frames before this are decided
        self._floor = 0  # new audio starts no earlier (after an interrupt: the next frame is idle)
        self._next_out = 0
        self._last_end: int | None = None  # the frame after the last utterance that ended by itself
        self._failure: BaseException | None = None
        self._closed = False
        self._counts = dict.fromkeys(("frames", "speech_frames", "idle_frames", "underrun_frames", "underruns",
                                      "late_frames"), 0)
        self._silence: np.ndarray | None = None
        self._underran_last = False
        self._t0: float | None = clock() if options.start == "now" else None
        self._worker = threading.Thread(target=self._run, name="lipsync-live", daemon=True)
        self._worker.start()

    # -- the timeline --------------------------------------------------------------------------------
    @property
    def t0(self) -> float:
        """When stream time 0 was on the clock (a timeline that starts with its first audio: now, until then)."""
        return self._t0 if self._t0 is not None else self.clock()

    def due(self, k: int) -> float:
        return self.t0 + self.latency + float(k / self.fps)

    def _frame_at(self, now: float) -> int:
        """The first frame that has not begun at `now`: where new audio starts."""
        if self._t0 is None:
            return 0
        return math.ceil(Fraction(now - self._t0) * self.fps)

    def _open(self) -> Utterance | None:
        last = self._utterances[-1] if self._utterances else None
        return last if last is not None and not last.flushed else None

    def _covering(self, k: int) -> Utterance | None:
        return next((u for u in self._utterances if u.covers(k)), None)

    # -- what callers do -----------------------------------------------------------------------------
    @property
    def return_rate(self) -> int:
        """The rate of every frame's audio."""
        return self.options.return_rate

    def push(self, samples: np.ndarray, rate: int | None = None) -> None:
        """Append mono audio (float in [-1, 1], or int16) to the timeline, at the session's rate or at `rate`
        (an utterance keeps the rate it started with: a different one needs a flush first)."""
        rate = self.options.rate if rate is None else rate
        _check_rate(rate)
        x = np.asarray(samples)
        x = s16_to_float(x.ravel()) if x.dtype == np.int16 else np.asarray(x, np.float32).ravel()
        if not np.isfinite(x.sum(dtype=np.float64)):
            raise InputError("the audio contains NaN or infinite samples", option="audio")
        if not len(x):
            return
        with self._cond:
            self._check()
            now = self.clock()
            if self._t0 is None:
                self._t0 = now
            u = self._open()
            if u is None:
                ends = [e for e in (v.end() for v in self._utterances) if e is not None]
                start = max(self._frame_at(now), self._decided, self._floor, *ends)
                u = Utterance(start, self.character, rate, self._renderer.encode, self.options.return_rate)
                u.fades_in = start > 0 and start not in ends
            elif u.rate != rate:
                raise InputError(f"audio at {rate} Hz pushed into an utterance at {u.rate} Hz: flush it first",
                                 option="rate")
            ahead = u.head_seconds() + len(x) / rate - (now - self.t0)
            if ahead * 1000 > self.options.ahead_ms:
                raise Overrun(f"audio queued {ahead:.1f} s ahead of the stream, past the limit of "
                              f"{self.options.ahead_ms / 1000:g} s", option="audio")
            if u not in self._utterances:
                self._utterances.append(u)
            u.add(x, now)
            self._cond.notify_all()

    def room(self) -> float:
        """Seconds of audio that may be pushed now without an Overrun."""
        with self._cond:
            now = self.clock() - self.t0
            u = self._open()
            head = u.head_seconds() if u is not None else max(now, float(self._decided / self.fps))
            return max(0.0, self.options.ahead_ms / 1000 - (head - now))

    def flush(self) -> int | None:
        """End the utterance: its frames are made up to the end of its audio; silence beyond. Returns the index
        of the frame after its last; when none is open (the session ended it after a long underrun, or it was
        flushed already), that of the last utterance since the last interrupt (None when there was none)."""
        with self._cond:
            self._check()
            u = self._open()
            if u is None:
                return self._utterances[-1].end() if self._utterances else None
            u.flush()
            self._cond.notify_all()
            return u.end()

    def interrupt(self) -> Interruption:
        """Drop the queued audio and every frame not yet given out; the next frame is idle."""
        with self._cond:
            self._check()
            self._generation += 1
            self._out.clear()
            self._utterances.clear()
            self._scheduler.withdraw(id(self))  # the old utterance's frames not yet drawn: not drawn at all
            self._decided = self._next_out
            self._floor = self._next_out + 1
            self._last_end = None
            self._cond.notify_all()
            return Interruption(self._generation, self._next_out)

    def next_frame(self, timeout: float | None = None) -> LiveFrame | None:
        """The next frame, once it is made (None after `timeout` seconds); raises what broke the session."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._out:
                self._check()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left if left is not None else _POLL)
            frame = self._out.popleft()
            self._next_out = frame.index + 1
            self._prune()
            self._count(frame)
            self._cond.notify_all()
            return frame

    def _prune(self) -> None:
        """Drop the utterances whose frames have all gone out, keeping the last (its end is the timeline's)."""
        u = self._utterances
        while len(u) > 1 and (end := u[0].end()) is not None and end <= self._next_out:
            del u[0]

    def frames(self) -> Iterator[LiveFrame]:
        while True:
            frame = self.next_frame()
            if frame is not None:
                yield frame

    def drained(self) -> bool:
        """No utterance open or still to be given out: every frame from now on is idle."""
        with self._cond:
            ends = [u.end() for u in self._utterances]
            if any(e is None for e in ends):
                return False
            last = max((e for e in ends if e is not None), default=0) + (self.options.fade_frames if ends else 0)
            return self._next_out >= last

    @property
    def generation(self) -> int:
        return self._generation

    def stats(self) -> LiveStats:
        with self._cond:
            u = self._open()
            queued = max(0.0, u.head_seconds() - (self.clock() - self.t0)) if u is not None else 0.0
            return LiveStats(generation=self._generation, queued_ms=queued * 1000, **self._counts)

    def _count(self, frame: LiveFrame) -> None:
        c = self._counts
        c["frames"] += 1
        c["speech_frames" if frame.speech else "idle_frames"] += 1
        if self.clock() > frame.due:
            c["late_frames"] += 1

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise RuntimeError("the live session is closed")

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._scheduler.withdraw(id(self))  # the shared UNet computes nothing more for this session
        self._worker.join(timeout=10)
        self._scheduler.withdraw(id(self))  # what the worker submitted before it stopped
        with self._cond:  # its pictures and audio go back now, whoever still holds the session
            self._out.clear()
            self._slots.clear()
            self._utterances.clear()
        if self._shared_key is not None:
            self._runtime.release_shared(self._shared_key)
        else:
            self._scheduler.close()
        self._renderer.close()

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the worker ----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._step():
                pass
        except BaseException as exc:  # the session is broken; callers get the error
            with self._cond:
                self._failure = exc
                self._cond.notify_all()

    def _step(self) -> bool:
        with self._cond:
            if self._closed:
                return False
            now = self.clock()
            work = []
            for u in self._utterances:
                finish = u.flushed and not u.finished
                if u.inbox or finish:
                    work.append((u, u.inbox, u.inbox_time or now, finish))
                    u.inbox = []
            generation = self._generation
        for u, chunks, when, finish in work:
            u.process(chunks, when, finish)
        with self._cond:
            if generation == self._generation:
                self._underrun(self.clock())
                made = self._decide(self.clock())
            else:
                made = []
        for slot in made:
            self._start(slot)
        progressed = self._finish_ready()
        with self._cond:
            if not (progressed or work or made) and not self._closed:
                self._cond.wait(self._idle_wait())
        return True

    def _idle_wait(self) -> float:
        """Until the next frame begins or the next underrun deadline, at most _POLL (under the lock)."""
        k, now = self._decided, self.clock()
        moments = [self.t0 + float(k / self.fps), self.due(k) - self.options.compute_ms / 1000]
        return min(_POLL, max(0.001, min(moments) - now + 0.0005))

    def _underrun(self, now: float) -> None:
        """Silence for an open utterance whose next frame can wait no longer; end it after a long silence."""
        u = self._open()
        if u is None or u.ready or u.inbox or not u.covers(self._decided):
            return
        if now < self.due(self._decided) - self.options.compute_ms / 1000:
            return
        if u.filled_since is not None and now - u.filled_since >= self.options.idle_after_ms / 1000:
            u.flush()
            self._cond.notify_all()
            return
        step = max(1, math.ceil(u.rate / self.fps))
        for _ in range(64):  # the resampler may hold a little back: fill until the frame can be made
            u.add(np.zeros(step, np.float32), now, filled=True)
            chunks, u.inbox = u.inbox, []
            u.process(chunks, now, False)
            if u.ready:
                break

    def _decide(self, now: float) -> list[Slot]:
        """Decide what the next frames are, as far as the clock and the audio allow (under the lock)."""
        made = []
        limit = self._next_out + math.ceil(self.options.frames_ahead_ms / 1000 * self.fps)
        while self._decided < limit:
            k = self._decided
            u = self._covering(k)
            if u is not None:
                if not u.ready or u.ready[0][0] != k - u.start:
                    break
                _, features, need_at = u.ready.popleft()
                own, underrun = u.own_audio_time(k)
                fade_in = self.options.fade_frames if u.fades_in else 0
                fade = 1 - (k - u.start + 1) / (fade_in + 1) if k - u.start < fade_in else 0.0
                slot = Slot(k, self._generation, True, u.audio_of(k), features, drawn=True, fade=fade,
                             own_at=need_at if own is None else own, need_at=need_at, underrun=underrun)
                if underrun:
                    self._counts["underrun_frames"] += 1
                    if not self._underran_last:
                        self._counts["underruns"] += 1
                self._underran_last = underrun
                if u.end() == k + 1:
                    self._last_end = k + 1
            elif self._frame_at(now) > k or any(v.start > k for v in self._utterances):
                rate = self.options.return_rate
                silence = np.zeros(sample_of(k + 1, self.fps, rate) - sample_of(k, self.fps, rate), np.float32)
                since = k - self._last_end if self._last_end is not None else None
                fade = self.options.fade_frames
                if since is not None and since < fade:
                    slot = Slot(k, self._generation, False, silence, drawn=True, fade=(since + 1) / (fade + 1))
                else:
                    slot = Slot(k, self._generation, False, silence)
                self._underran_last = False
            else:
                break
            self._decided += 1
            made.append(slot)
        return made

    def _start(self, slot: Slot) -> None:
        """Fetch the slot's template frame and, for a drawn frame, ask the scheduler for its patch."""
        features = slot.features if slot.features is not None else self._silence_features()
        slot.frame = self._renderer.frame(slot.index)
        self._slots.append(slot)
        if not slot.drawn:
            slot.done.set()
            return
        inputs = self._renderer.prepare([slot.frame], np.empty((1, *self._renderer.input_shape),
                                                               self._renderer.input_dtype))[0]

        def done(outcome: Patch | BaseException, waited: float, inference: float) -> None:
            slot.patch, slot.waited, slot.inference = outcome, waited, inference
            slot.done.set()
            with self._cond:
                self._cond.notify_all()

        slot.submitted = self.clock()
        self._scheduler.submit(slot.frame, inputs, features, slot.index, self.due(slot.index), done, id(self))

    def _silence_features(self) -> np.ndarray:
        """The UNet's audio input for digital silence (fades to idle draw the mouth at rest)."""
        if self._silence is None:
            window = np.full((1, 80, 16), SILENCE_FRAME_VALUE, np.float32)
            row = self._renderer.encode(window)[0]
            if self.character.layout == "synctalk":
                row = np.tile(row, 16).reshape(32, 16, 16)
            self._silence = row
        return self._silence

    def _finish_ready(self) -> bool:
        """Composite the slots at the head whose patches are back, and give them out in order."""
        progressed = False
        while self._slots and self._slots[0].done.is_set():
            slot = self._slots.popleft()
            progressed = True
            if slot.generation != self._generation:
                continue
            if isinstance(slot.patch, Withdrawn):  # the session is closing: nobody takes this frame
                continue
            if isinstance(slot.patch, BaseException):
                raise slot.patch
            image, latency = picture(slot, self._compositor)
            frame = LiveFrame(slot.index, slot.generation, slot.speech, image, slot.audio,
                              float(slot.index / self.fps), self.due(slot.index), self.clock(), latency,
                              slot.underrun)
            with self._cond:
                if slot.generation == self._generation:
                    self._out.append(frame)
                    self._cond.notify_all()
        return progressed
