"""A planned batch rendered by Ray worker actors (design.md section 10). Ray is the engine: it places the
actors (one per GPU, or CPU actors), moves the bytes through its object store and reports dead workers;
this module only decides which idle actor takes which job, retries a job whose worker died, and publishes
each finished MP4 atomically on the driver, as a local render does."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lipsync_cli import interrupts
from lipsync_cli.batch.report import JobRecord
from lipsync_cli.batch.runner import Batch
from lipsync_cli.cluster.worker import RenderWorker, WorkItem, pack_character
from lipsync_cli.encoding.ffmpeg import temporary_path
from lipsync_cli.encoding.folders import make_folders
from lipsync_cli.errors import InputError, Interrupted, LipsyncError, OutputError, OutputExists
from lipsync_cli.processes import process_exists
from lipsync_cli.render import FramesDone, RenderJob, RenderPlan, Started
from lipsync_cli.runtime import RuntimeConfig

INSTALL = "pip install 'lipsync-cli[ray]'"
SHUTDOWN_WAIT = 10.0  # seconds for idle workers to remove their folders, and for killed ones to be gone


def import_ray():
    try:
        import ray
    except ImportError:
        raise InputError(f"rendering on a Ray cluster needs Ray, which is not installed: {INSTALL}",
                         option="cluster") from None
    return ray


@dataclass(frozen=True)
class ClusterSettings:
    address: str | None = None  # None: RAY_ADDRESS, else a local Ray instance sized to this machine
    cpu_workers: int | None = None  # CPU actors where the cluster has no GPU (default: its CPUs, at most 4)
    retries: int = 1  # extra attempts for a job whose worker died
    shared_fs: bool = False  # paths are visible to every node: send paths, not bytes


@dataclass
class _Worker:
    actor: Any
    name: str
    held: set[str] = field(default_factory=set)
    job: tuple | None = None  # (record, plan, ref) in flight
    done: int = 0
    folder: tuple[str, int, str] | None = None  # (node, pid, folder), as the worker tells


def pick_job(held: set[str], characters: list[str | None]) -> int:
    """Which pending job an idle worker takes: the first whose character it holds already, else the first."""
    return next((i for i, c in enumerate(characters) if c is not None and c in held), 0)


def publish_bytes(target: Path, data: bytes, overwrite: bool) -> None:
    """Write `data` under a temporary name beside `target`, then move it into place: never a partial file
    under the final name, never an existing file replaced without `overwrite`."""
    make_folders(target.parent)
    temp = temporary_path(target)
    try:
        temp.write_bytes(data)
        if overwrite:
            os.replace(temp, target)
            return
        try:
            os.link(temp, target)
        except FileExistsError:
            raise OutputExists(f"{target}: appeared during the render") from None
        except OSError:
            if target.exists():
                raise OutputExists(f"{target}: exists") from None
            os.replace(temp, target)
    finally:
        try:
            temp.unlink()
        except FileNotFoundError:
            pass


class ClusterBatch:
    """Runs a planned `Batch` (its plans and records) on Ray actors; `run` fills in the records."""

    def __init__(self, batch: Batch, settings: ClusterSettings, config: RuntimeConfig,
                 on_update: Callable | None = None) -> None:
        self.batch, self.settings, self.config = batch, settings, config
        self.on_update = on_update or batch.on_update
        self.ray = import_ray()
        self.started_ray = False
        self.attempts: dict[int, list[dict]] = {}
        self.workers: list[_Worker] = []
        self.folders: list[tuple[str, int, str]] = []  # (node, pid, folder) of every worker started

    # -- cluster -----------------------------------------------------------------------------------
    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        address = self.settings.address or os.environ.get("RAY_ADDRESS")
        try:
            quiet = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            if address:
                ray.init(address=address, **quiet)
            else:
                ray.init(**quiet)
        except Exception as exc:  # Ray's own connection errors
            raise InputError(f"cannot start or reach the Ray cluster {address or '(local)'}: "
                             f"{' '.join(str(exc).split())[:200]}", option="cluster") from None
        self.started_ray = True
        interrupts.install()  # Ray replaced the SIGTERM handler with its own

    def _workers(self, queue) -> list[_Worker]:
        ray = self.ray
        gpus = int(ray.cluster_resources().get("GPU", 0))
        actor_class = ray.remote(RenderWorker)
        if gpus:
            options = [dict(num_gpus=1, num_cpus=1)] * gpus
        else:
            count = self.settings.cpu_workers or max(1, min(4, int(ray.cluster_resources().get("CPU", 1))))
            options = [dict(num_cpus=1)] * count
        workers = [_Worker(actor_class.options(**o).remote(self.config, queue), f"worker-{i}")
                   for i, o in enumerate(options)]
        for worker, folder in zip(workers, ray.get([w.actor.folder.remote() for w in workers]), strict=True):
            worker.folder = folder
            self.folders.append(folder)
        return workers

    # -- the run -----------------------------------------------------------------------------------
    def run(self) -> None:
        self._connect()
        from ray.util.queue import Queue

        queue = Queue()
        workers = self.workers = self._workers(queue)
        pending = [(r, self.batch.plans[r.index]) for r in self.batch.records
                   if r.status == "not started" and r.index in self.batch.plans]
        archives: dict[Path, tuple[str, Any]] = {}
        try:
            self._loop(workers, pending, archives, queue)
        except BaseException as exc:
            self.batch.interrupted = True
            for w in workers:
                if w.job is not None:
                    record = w.job[0]
                    record.status, record.error = "interrupted", "interrupted"
            if isinstance(exc, Interrupted):
                raise
            if isinstance(exc, KeyboardInterrupt):
                raise Interrupted("interrupted") from None
            raise
        finally:
            self._stop(self.workers)
            if self.started_ray:
                self.ray.shutdown()

    def _stop(self, workers: list[_Worker]) -> None:
        """Idle workers shut down and remove their folders; busy ones (after an interrupt) are killed, and the
        folders they leave on this machine are removed once they are gone (on other machines, by the next
        worker that starts there)."""
        ray = self.ray
        asked = {w.actor.shutdown.remote(): w for w in workers if w.job is None}
        clean: set[int] = set()
        for ref in ray.wait(list(asked), num_returns=len(asked), timeout=SHUTDOWN_WAIT)[0] if asked else []:
            try:
                ray.get(ref)
                clean.add(id(asked[ref]))
            except Exception:  # the worker died meanwhile: handled as a killed one
                pass
        for w in workers:
            try:
                ray.kill(w.actor)
            except Exception:  # already gone
                pass
        here = socket.gethostname()
        gone = {w.folder for w in workers if id(w) in clean}
        left = [f for f in self.folders if f[0] == here and f not in gone]
        deadline = time.monotonic() + SHUTDOWN_WAIT
        while any(process_exists(pid) for _, pid, _ in left) and time.monotonic() < deadline:
            time.sleep(0.05)
        for _, pid, folder in left:
            if not process_exists(pid):
                shutil.rmtree(folder, ignore_errors=True)

    def _archive(self, plan: RenderPlan, archives: dict) -> tuple[str, Any]:
        folder = plan.character.root
        if folder not in archives:
            data = pack_character(folder)
            archives[folder] = (hashlib.sha256(data).hexdigest()[:24], self.ray.put(data))
        return archives[folder]

    def _item(self, record: JobRecord, plan: RenderPlan, worker: _Worker, archives: dict) -> WorkItem:
        if self.settings.shared_fs:
            job = RenderJob(Path(plan.job.audio).resolve(), str(plan.character.root.resolve()),
                            plan.output.resolve(), plan.job.options)
            return WorkItem(record.index, job)
        digest, ref = self._archive(plan, archives)
        if digest not in worker.held:
            self.ray.get(worker.actor.receive_character.remote(digest, ref))
            worker.held.add(digest)
        return WorkItem(record.index, plan.job, Path(plan.job.audio).read_bytes(), digest)

    def _loop(self, workers: list[_Worker], pending: list, archives: dict, queue) -> None:
        ray = self.ray
        by_ref: dict = {}
        while pending or by_ref:
            for worker in [w for w in workers if w.job is None]:
                if not pending:
                    break
                choice = pending[pick_job(worker.held, [self._digest_of(p[1], archives) for p in pending])]
                pending.remove(choice)
                record, plan = choice
                item = self._item(record, plan, worker, archives)
                ref = worker.actor.render.remote(item)
                worker.job = (record, plan, ref)
                by_ref[ref] = worker
                self.on_update(record, Started(plan.job, plan.frames, worker.name, None))
            ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=0.1)
            self._drain(queue)
            for ref in ready:
                worker = by_ref.pop(ref)
                record, plan, _ = worker.job
                worker.job = None
                retry = self._finish(record, plan, ref, worker)
                if retry:
                    workers[workers.index(worker)] = self._replace(worker, queue)
                    pending.insert(0, (record, plan))

    def _digest_of(self, plan: RenderPlan, archives: dict) -> str | None:
        entry = archives.get(plan.character.root)
        return entry[0] if entry else None

    def _replace(self, dead: _Worker, queue) -> _Worker:
        try:
            self.ray.kill(dead.actor)
        except Exception:  # already gone
            pass
        actor_class = self.ray.remote(RenderWorker)
        gpus = int(self.ray.cluster_resources().get("GPU", 0))
        options = dict(num_gpus=1, num_cpus=1) if gpus else dict(num_cpus=1)
        worker = _Worker(actor_class.options(**options).remote(self.config, queue), dead.name + "'")
        worker.folder = self.ray.get(worker.actor.folder.remote())
        self.folders.append(worker.folder)
        return worker

    def _drain(self, queue) -> None:
        while not queue.empty():
            index, frames, done, total, _pid = queue.get_nowait()
            record = next(r for r in self.batch.records if r.index == index)
            self.on_update(record, FramesDone(self.batch.plans[index].job, frames, done, total))

    def _finish(self, record: JobRecord, plan: RenderPlan, ref, worker: _Worker) -> bool:
        """Record a finished attempt; True when the job should be tried again on another worker."""
        attempts = self.attempts.setdefault(record.index, [])
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:
            attempts.append({"worker": worker.name, "error": f"the worker died ({type(exc).__name__})"})
            record.attempts = attempts
            if len(attempts) <= self.settings.retries:
                return True
            record.status, record.error = "failed", f"its worker died {len(attempts)} times"
            self.batch.errors[record.index] = LipsyncError(record.error)
            self.on_update(record, None)
            return False
        attempts.append({"worker": worker.name, **result["where"]})
        record.attempts = attempts
        record.device = f"{result['where']['node']}:{result.get('device', '?')}"
        if not result["ok"]:
            record.status, record.error = "failed", result["error"]
        else:
            try:
                if result["data"] is not None:
                    publish_bytes(plan.output, result["data"], plan.job.options.overwrite)
                record.status, record.frames, record.wall_seconds = "ok", result["frames"], result["elapsed"]
            except (OutputError, OSError) as exc:
                record.status, record.error = "failed", str(exc)
        if record.status == "failed":
            self.batch.errors[record.index] = LipsyncError(record.error or "failed")
        worker.done += 1
        self.on_update(record, None)
        return False


def for_cluster(job: RenderJob) -> RenderJob:
    """Plan on the driver as on a CPU: the device is the worker's business."""
    from lipsync_cli.models.devices import DeviceRequest

    return replace(job, options=replace(job.options, device=DeviceRequest("cpu")))
