"""What happened to each job of a batch, and the JSON report, written atomically."""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from lipsync_cli.encoding.ffmpeg import InputIndex
from lipsync_cli.encoding.folders import folder_problem, make_folders
from lipsync_cli.errors import LipsyncError, OutputError
from lipsync_cli.models.registry import ModelStats

Status = Literal["ok", "failed", "interrupted", "refused", "skipped", "not started"]
REPORT_VERSION = 1


@dataclass
class JobRecord:
    index: int
    source: str
    audio: str
    character: str
    output: str | None
    status: Status = "not started"
    frames: int | None = None
    audio_seconds: float | None = None
    wall_seconds: float | None = None
    device: str | None = None
    error: str | None = None
    precision: str | None = None  # what it renders with: fp32, or the variant's precision
    attempts: list[dict] | None = None  # on a cluster: where each attempt ran, and why one was retried

    @property
    def fps(self) -> float | None:
        if self.frames is None or not self.wall_seconds:
            return None
        return self.frames / self.wall_seconds

    def to_json(self) -> dict:
        return dict(asdict(self), fps=self.fps)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_report(path: Path, records: list[JobRecord], models: list[ModelStats], outcome: str, exit_code: int,
                 started: str) -> None:
    """Write the report under a temporary name and rename it into place."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    data = {
        "version": REPORT_VERSION, "started": started, "finished": _now(), "outcome": outcome,
        "exit_code": exit_code, "counts": counts,
        "frames": sum(r.frames or 0 for r in records if r.status == "ok"),
        "jobs": [r.to_json() for r in records],
        "models": [m.to_json() for m in models],
    }
    make_folders(path.parent)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise LipsyncError(f"{path}: the report cannot be written ({exc.strerror or exc})", option="report") from None


def check_report_target(path: Path) -> None:
    """Refuse, before any work, a report that cannot be written: a folder or a special file under its name,
    a folder that cannot be written or made (a missing one is made when the report is written)."""
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name such as {path / 'report.json'}",
                          option="report")
    if path.exists() and not path.is_file():
        raise OutputError(f"{path}: not a regular file", option="report")
    parent = path.parent if str(path.parent) else Path(".")
    problem = folder_problem(parent)
    if problem is not None:
        raise OutputError(f"{path}: the report's folder cannot be used or made: {problem}", option="report")


def report_clash(path: Path, files: dict[Path, str]) -> OutputError | None:
    """Why the report must not be written at `path`: it is one of the files a batch reads or writes."""
    found = InputIndex(files).find(path)
    if found is None:
        return None
    where, what = found
    return OutputError(f"{path}: is {what} ({where}); the report must not replace it", option="report")


now = _now
