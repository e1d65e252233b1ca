"""Many renders in one process: every job planned before any work, then rendered with `jobs_per_device`
in flight per device, all sharing one runtime (its model registry and template store)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from lipsync_cli.batch.report import JobRecord
from lipsync_cli.batch.sources import DEFAULT_NAME, Entry, output_name
from lipsync_cli.characters.manifest import find_character
from lipsync_cli.encoding.ffmpeg import InputIndex
from lipsync_cli.errors import InputError, Interrupted, LipsyncError, OutputExists
from lipsync_cli.models.devices import Device
from lipsync_cli.render import RenderEvent, RenderPlan, Started, execute, plan
from lipsync_cli.render.planning import job_inputs
from lipsync_cli.runtime import Runtime

DEFAULT_JOBS = 2  # per device: one job encodes while the next one's models run


@dataclass(frozen=True)
class BatchSettings:
    output_dir: Path | None = None  # where jobs without an output go (default: the current directory)
    name: str = DEFAULT_NAME
    keep_going: bool = False
    skip_existing: bool = False
    jobs_per_device: int = DEFAULT_JOBS

    def __post_init__(self) -> None:
        if not 1 <= self.jobs_per_device <= 64:
            raise InputError(f"jobs per device must be 1 to 64, not {self.jobs_per_device}", option="jobs")
        output_name(self.name, Path("a"), "a", 1)  # a bad pattern is refused once, not once per job


Update = Callable[[JobRecord, "RenderEvent | None"], None]


class Batch:
    def __init__(self, entries: list[Entry], runtime: Runtime, settings: BatchSettings = BatchSettings(),
                 on_update: Update | None = None) -> None:
        self.entries, self.runtime, self.settings = entries, runtime, settings
        self.records = [JobRecord(e.index, e.source, e.audio_name or (str(e.job.audio) if e.job else ""),
                                  e.job.character if e.job else "", None) for e in entries]
        self.plans: dict[int, RenderPlan] = {}
        self.errors: dict[int, LipsyncError] = {}  # what refused or failed each job, for the CLI's wording
        self.cancel = threading.Event()
        self.interrupted = False
        self._stopped_by: str | None = None
        self.on_update: Update = on_update or (lambda record, event: None)
        self._lock = threading.Lock()

    # -- planning ----------------------------------------------------------------------------------
    def plan(self) -> list[JobRecord]:
        """Check every job; refused ones get their reason. Nothing is rendered."""
        outputs: dict[Path, JobRecord] = {}
        for entry, record in zip(self.entries, self.records, strict=True):
            if entry.job is None:
                self._refuse(record, InputError(entry.error or "bad job"))
                continue
            try:
                job = entry.job
                if job.output is None:
                    character = self.runtime.character(job.character)
                    record.character = character.name
                    name = output_name(self.settings.name, Path(job.audio), character.name, entry.index)
                    job = replace(job, output=(self.settings.output_dir or Path.cwd()) / name)
                assert job.output is not None
                record.output = str(job.output)
                key = job.output.resolve()
                if key in outputs:
                    raise InputError(f"{job.output}: is also the output of {outputs[key].source}")
                outputs[key] = record
                if self.settings.skip_existing and _finished(job.output, job.options.overwrite):
                    record.status = "skipped"
                    continue
                planned = plan(job, self.runtime, self.settings.jobs_per_device)
            except LipsyncError as exc:
                self._refuse(record, exc)
                continue
            self.plans[entry.index] = planned
            if planned.notice:
                self.runtime.notify(planned.notice)
            record.character, record.device = planned.character.name, str(planned.device)
            record.precision = planned.precision
            record.frames, record.audio_seconds = planned.frames, planned.audio.duration
        self._refuse_outputs_that_are_inputs()
        return self.records

    def files(self) -> dict[Path, str]:
        """Every file the batch reads or writes, as far as it is known yet, and what it is: the planned jobs'
        inputs, every job's audio and output, and the files of the characters named."""
        files: dict[Path, str] = {}
        folders: dict[str, Path | None] = {}
        for entry, record in zip(self.entries, self.records, strict=True):
            planned = self.plans.get(entry.index)
            if planned is not None:
                for path, what in job_inputs(planned.job.audio, planned.character).items():
                    files.setdefault(path, f"{what} of {record.source}")
            if entry.job is None:
                continue
            files.setdefault(Path(entry.job.audio), f"the audio input of {record.source}")
            output = record.output or entry.job.output
            if output is not None:
                files.setdefault(Path(output), f"the output of {record.source}")
            if entry.job.character not in folders:
                folders[entry.job.character] = _folder(entry.job.character)
        for name, folder in folders.items():
            for path in _files_in(folder):
                files.setdefault(path, f"a file of the character {name}")
        return files

    def _refuse_outputs_that_are_inputs(self) -> None:
        """A job must not write over what another job reads (its audio, its character's files)."""
        inputs: dict[Path, str] = {}
        for record in self.records:
            planned = self.plans.get(record.index)
            if planned is not None:
                for path, what in job_inputs(planned.job.audio, planned.character).items():
                    inputs.setdefault(path, f"{what} of {record.source}")
        index = InputIndex(inputs)
        for record in self.records:
            planned = self.plans.get(record.index)
            if planned is None:
                continue
            try:
                index.check(planned.output)
            except LipsyncError as exc:
                del self.plans[record.index]
                record.frames = record.audio_seconds = record.device = record.precision = None
                self._refuse(record, exc)

    def _refuse(self, record: JobRecord, exc: LipsyncError) -> None:
        record.status, record.error = "refused", str(exc)
        self.errors[record.index] = exc

    # -- rendering ---------------------------------------------------------------------------------
    def run(self) -> None:
        """Render every planned job; raises Interrupted on Ctrl-C (after stopping the jobs in flight)."""
        queues: dict[Device, deque[tuple[RenderPlan, JobRecord]]] = {}
        for record in self.records:
            planned = self.plans.get(record.index)
            if planned is not None and record.status == "not started":
                queues.setdefault(planned.device, deque()).append((planned, record))
        # Waiting on an event, not on Thread.join: a join that Ctrl-C interrupts can report a live thread as
        # finished (CPython before 3.13), and the process would then exit while a job is inside onnxruntime.
        live = [0]
        all_done = threading.Event()

        def work(queue: deque[tuple[RenderPlan, JobRecord]]) -> None:
            try:
                self._work(queue)
            finally:
                with self._lock:
                    live[0] -= 1
                    if live[0] == 0:
                        all_done.set()

        workers = [threading.Thread(target=work, args=(queue,), name=f"lipsync-job-{device}-{n}", daemon=True)
                   for device, queue in queues.items() for n in range(self.settings.jobs_per_device)]
        live[0] = len(workers)
        if not workers:
            return
        for worker in workers:
            worker.start()
        try:
            while not all_done.wait(0.1):
                pass
        except BaseException as exc:
            self.interrupted = True
            self.cancel.set()
            while not all_done.wait(0.1):
                pass
            if isinstance(exc, Interrupted):
                raise
            raise Interrupted("interrupted") from None

    def _next(self, queue: deque[tuple[RenderPlan, JobRecord]]) -> tuple[RenderPlan, JobRecord] | None:
        with self._lock:
            if self.cancel.is_set() or not queue:
                return None
            return queue.popleft()

    def _work(self, queue: deque[tuple[RenderPlan, JobRecord]]) -> None:
        while (item := self._next(queue)) is not None:
            self._render(*item)

    def _render(self, planned: RenderPlan, record: JobRecord) -> None:
        def on_event(event: RenderEvent) -> None:
            if isinstance(event, Started):
                record.device = event.device
            self.on_update(record, event)

        try:
            result = execute(planned, self.runtime, on_event, self.cancel)
        except Interrupted:
            if self.interrupted:
                record.status, record.error = "interrupted", "interrupted"
            else:
                record.status, record.error = "failed", f"stopped: {self._stopped_by} failed"
        except LipsyncError as exc:
            self._fail(record, exc)
        except Exception as exc:  # a bug: reported like a failure, the batch goes on or stops as configured
            self._fail(record, LipsyncError(f"internal error: {type(exc).__name__}: {exc}"))
        else:
            record.status, record.frames, record.wall_seconds = "ok", result.frames, result.elapsed
        self.on_update(record, None)

    def _fail(self, record: JobRecord, exc: LipsyncError) -> None:
        record.status, record.error = "failed", str(exc)
        self.errors[record.index] = exc
        if not self.settings.keep_going:
            with self._lock:
                if self._stopped_by is None:
                    self._stopped_by = record.source
            self.cancel.set()

    @property
    def stopped_by(self) -> str | None:
        return self._stopped_by


def _finished(output: Path, overwrite: bool) -> bool:
    """Whether --skip-existing skips a job: its output is there and not empty."""
    if not output.is_file():
        return False
    if output.stat().st_size == 0 and not overwrite:
        raise OutputExists(f"{output}: exists but is empty, not a finished render")
    return output.stat().st_size > 0


def _folder(character: str) -> Path | None:
    try:
        return find_character(character)
    except LipsyncError:
        return None


def _files_in(folder: Path | None) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_file()] if folder is not None else []
    except OSError:
        return []
