"""The body of a Ray worker actor: one runtime (registry, template store) per actor, characters received once
through the object store and kept, audio in, MP4 bytes out. Plain Python: `driver.py` wraps it with
`ray.remote`, so this module does not import Ray."""

from __future__ import annotations

import io
import os
import shutil
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from lipsync_cli.errors import LipsyncError
from lipsync_cli.models.devices import DeviceRequest
from lipsync_cli.processes import process_exists
from lipsync_cli.render import FramesDone, RenderEvent, RenderJob, execute, plan
from lipsync_cli.runtime import Runtime, RuntimeConfig

PROGRESS_EVERY = 0.5  # seconds between progress messages to the driver
PREFIX = "lipsync-worker-"


@dataclass(frozen=True)
class WorkItem:
    """One job as sent to a worker: the job (paths as the driver knows them), and either the audio's bytes and
    the character's digest (the worker has its files), or nothing more with a shared file system."""

    index: int
    job: RenderJob
    audio_bytes: bytes | None = None
    character_digest: str | None = None


def pack_character(folder: Path) -> bytes:
    """The character folder as a tar archive in memory (what a character uses lies inside its folder)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                tar.add(path, arcname=path.name)
    return buffer.getvalue()


def worker_pid(folder: Path) -> int | None:
    """The process id in a worker folder's name (lipsync-worker-PID-XXXX)."""
    pid = folder.name[len(PREFIX) :].split("-")[0]
    return int(pid) if folder.name.startswith(PREFIX) and pid.isdigit() else None


def remove_dead_workers(directory: Path | None = None) -> list[Path]:
    """Remove the folders of workers that no longer exist (killed, or their node's driver interrupted)."""
    removed = []
    for folder in Path(directory or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        pid = worker_pid(folder)
        if pid is not None and pid != os.getpid() and not process_exists(pid) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class RenderWorker:
    def __init__(self, config: RuntimeConfig, progress=None) -> None:
        remove_dead_workers()
        self.runtime = Runtime(config)
        self.root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        self.characters: dict[str, Path] = {}
        self.progress = progress  # a ray.util.queue.Queue, or None

    def where(self) -> dict:
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        return {"node": socket.gethostname(), "pid": os.getpid(), "gpus": gpus}

    def folder(self) -> tuple[str, int, str]:
        """(node, process id, folder): what the driver removes if it has to kill this worker."""
        return socket.gethostname(), os.getpid(), str(self.root)

    def holds(self, digest: str) -> bool:
        return digest in self.characters

    def receive_character(self, digest: str, archive: bytes) -> None:
        if digest in self.characters:
            return
        folder = self.root / "characters" / digest
        temp = folder.with_name(f".{digest}.part")
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
            tar.extractall(temp, filter="data")
        temp.rename(folder)
        self.characters[digest] = folder

    def render(self, item: WorkItem) -> dict:
        """Render one job; the result says what happened (the MP4's bytes, or the job's own error)."""
        where = self.where()
        try:
            if item.audio_bytes is None:  # shared file system: read and write where the driver said
                job = replace(item.job, options=replace(item.job.options, device=DeviceRequest("auto")))
                result = execute(plan(job, self.runtime), self.runtime, self._reporter(item.index))
                return {"ok": True, "frames": result.frames, "elapsed": result.elapsed, "device": result.device,
                        "where": where, "data": None}
            work = Path(tempfile.mkdtemp(dir=self.root, prefix="job-"))
            try:
                audio = work / f"audio{Path(item.job.audio).suffix}"
                audio.write_bytes(item.audio_bytes)
                assert item.character_digest is not None
                options = replace(item.job.options, device=DeviceRequest("auto"), overwrite=True)
                job = RenderJob(audio, str(self.characters[item.character_digest]), work / "out.mp4", options)
                result = execute(plan(job, self.runtime), self.runtime, self._reporter(item.index))
                return {"ok": True, "frames": result.frames, "elapsed": result.elapsed, "device": result.device,
                        "where": where, "data": (work / "out.mp4").read_bytes()}
            finally:
                shutil.rmtree(work, ignore_errors=True)
        except LipsyncError as exc:
            return {"ok": False, "error": str(exc), "exit_code": exc.exit_code, "where": where}

    def _reporter(self, index: int):
        last = [0.0, 0]

        def on_event(event: RenderEvent) -> None:
            if self.progress is None or not isinstance(event, FramesDone):
                return
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY or event.done == event.total:
                self.progress.put_nowait((index, event.done - last[1], event.done, event.total, os.getpid()))
                last[0], last[1] = now, event.done

        return on_event

    def shutdown(self) -> None:
        self.runtime.close()
        shutil.rmtree(self.root, ignore_errors=True)
