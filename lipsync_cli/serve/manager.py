"""The server's sessions: the characters it offers (by name, only from its own folders), admission under the
session caps (in total and per device), and what `/readyz` says. One per server, never per connection."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from pathlib import Path

from lipsync_cli.characters.manifest import MANIFEST, check_character, search_dirs
from lipsync_cli.models.devices import Device
from lipsync_cli.serve.config import ServeConfig
from lipsync_cli.serve.protocol import POLICY, TRY_AGAIN, ProtocolError


def discover(folders: tuple[str, ...]) -> dict[str, Path]:
    """{name: folder} of every character in the folders (the first of a name wins)."""
    found: dict[str, Path] = {}
    for base in [Path(f) for f in folders] or search_dirs():
        if base.is_dir():
            for sub in sorted(base.iterdir()):
                if (sub / MANIFEST).is_file() and sub.name not in found:
                    found[sub.name] = sub.resolve()
    return found


@dataclass(frozen=True)
class Admission:
    id: int
    device: Device


class SessionManager:
    def __init__(self, config: ServeConfig, devices: int = 1) -> None:
        """`devices`: how many devices sessions are placed on (the per-device cap applies to each)."""
        self.config, self.devices = config, devices
        self.characters = discover(config.characters)
        self._lock = threading.Lock()
        self._active: dict[int, Device] = {}
        self._ids = itertools.count(1)
        self.draining = threading.Event()  # set on shutdown: every session ends

    def folder(self, name: str) -> Path:
        folder = self.characters.get(name)
        if folder is None:
            raise ProtocolError(f"unknown character {name!r}: this server offers {', '.join(sorted(self.characters))}",
                                POLICY, "unknown_character")
        return folder

    def listing(self) -> list[dict]:
        out = []
        for name, folder in sorted(self.characters.items()):
            character, status = check_character(folder)
            entry: dict = {"name": name, "status": status}
            if character is not None:
                v = character.video
                entry.update(fps=float(character.fps), width=v.width, height=v.height, frames=v.frames,
                             layout=character.layout)
            out.append(entry)
        return out

    def admit(self, device: Device) -> Admission:
        with self._lock:
            if self.draining.is_set():
                raise ProtocolError("the server is shutting down", TRY_AGAIN, "shutting_down")
            if len(self._active) >= self.config.max_sessions:
                raise ProtocolError(f"at capacity: {len(self._active)} of {self.config.max_sessions} sessions; try "
                                    "again later", TRY_AGAIN, "capacity")
            here = sum(1 for d in self._active.values() if d == device)
            if here >= self.config.per_device:
                raise ProtocolError(f"at capacity on {device}: {here} of {self.config.per_device} sessions; try "
                                    "again later", TRY_AGAIN, "capacity")
            admission = Admission(next(self._ids), device)
            self._active[admission.id] = device
            return admission

    def release(self, admission: Admission) -> None:
        with self._lock:
            self._active.pop(admission.id, None)

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._active)

    def ready(self) -> tuple[bool, str]:
        if self.draining.is_set():
            return False, "shutting down"
        if not self.characters:
            return False, "no characters to serve"
        active, most = self.active, min(self.config.max_sessions, self.config.per_device * self.devices)
        if active >= most:
            return False, f"at capacity ({active} of {most} sessions)"
        return True, f"{active} of {most} sessions"
