"""The runtime: everything expensive that one process holds, owned by one object instead of module globals.

It owns the model registry (sessions under a budget per device), the template store (prepared template
frames under a byte budget, backed by the on-disk cache), the thread budget, the characters already
checked, and the notices to show the user once. Renders share it: `plan(job, runtime)` and
`execute(plan, runtime, on_event)` in `lipsync_cli.render`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lipsync_cli.characters.manifest import Character, find_character, load_character
from lipsync_cli.errors import DeviceError
from lipsync_cli.frames.store import DEFAULT_MEMORY, TemplateStore
from lipsync_cli.models.devices import (
    CPU,
    Device,
    DeviceRequest,
    cuda_device_count,
    cuda_install_hint,
    cuda_unavailable_reason,
    openvino_device,
    parse_devices,
)
from lipsync_cli.models.precision import Precision
from lipsync_cli.models.processing import COMPOSITE, PREPARE
from lipsync_cli.models.registry import Budget, Eviction, MemoryReader, ModelRegistry, SessionCreator
from lipsync_cli.models.sessions import SessionMaker, default_threads, precision_refusal
from lipsync_cli.resources import cache_root


@dataclass(frozen=True)
class RuntimeConfig:
    devices: str = "auto"  # "auto" (every GPU when CUDA works, else the CPU) or a list: cpu, cuda:0,cuda:1, cuda:all
    max_models: int | None = None  # per device
    max_memory: int | None = None  # bytes per device
    eviction: Eviction = "lfu"
    template_memory: int = DEFAULT_MEMORY  # bytes of prepared template frames kept resident
    cache: bool = True  # the on-disk template cache
    cache_dir: Path | None = None  # default: <cache root>/templates
    threads: int | None = None  # onnxruntime threads per session (default: the cores this process may use)
    io_binding: bool | None = None  # model inputs and outputs in buffers allocated once (default: on GPUs)
    device_processing: bool | None = None  # pre- and post-processing graphs beside the UNet (default: on GPUs)


def short_reason(reason: str) -> str:
    """Why CUDA cannot be used, in a few words: the missing library when that is the reason."""
    missing = re.search(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file", reason)
    return f"{missing.group(1)} is missing" if missing else reason


def gpu_unusable(reason: str) -> str:
    """The note for a machine with an NVIDIA GPU that CUDA cannot reach: why, and the command that fixes it."""
    return f"running on the CPU: the GPU cannot be used ({short_reason(reason)}; to use it: {cuda_install_hint()})"


class Runtime:
    def __init__(self, config: RuntimeConfig = RuntimeConfig(), *, notify: Callable[[str], None] | None = None,
                 session_creator: SessionCreator | None = None, memory: MemoryReader | None = None,
                 gpu_count: Callable[[], int] = cuda_device_count) -> None:
        self.config = config
        self.threads = config.threads or default_threads()
        self.notices: list[str] = []
        self._notify_user = notify
        self._lock = threading.Lock()
        self._create = session_creator or SessionMaker(self.threads)
        self.registry = ModelRegistry(self._create, Budget(config.max_models, config.max_memory), config.eviction,
                                      memory)
        self._processing: dict[Device, tuple] = {}
        directory = (config.cache_dir or cache_root() / "templates") if config.cache else None
        self.templates = TemplateStore(config.template_memory, directory, self.notify)
        self._gpu_count = gpu_count
        self._gpus: int | None = None
        self._devices: tuple[Device, ...] | None = None
        self._devices_notice: str | None = None
        self._characters: dict[tuple, Character] = {}
        self._shared: dict[object, list] = {}  # key -> [object, users, lock]
        self._shared_lock = threading.Lock()
        self._hashes: dict[tuple, str] = {}

    def notify(self, message: str) -> None:
        with self._lock:
            if message in self.notices:
                return
            self.notices.append(message)
        if self._notify_user is not None:
            self._notify_user(message)

    # -- devices -----------------------------------------------------------------------------------
    def devices(self) -> tuple[tuple[Device, ...], str | None]:
        """The devices `auto` jobs are placed on, and a notice when that is the CPU although an NVIDIA GPU is
        there (CUDA cannot reach it)."""
        count = self.gpu_count()
        with self._lock:
            if self._devices is None:
                if self.config.devices.strip().lower() == "auto":
                    reason = cuda_unavailable_reason() if count else None  # without a GPU the CPU is no fallback
                    usable = count if reason is None else 0
                    self._devices = tuple(Device("cuda", i) for i in range(usable)) if usable else (CPU,)
                    self._devices_notice = gpu_unusable(reason) if reason else None
                else:
                    self._devices = parse_devices(self.config.devices, count)
            return self._devices, self._devices_notice

    def resolve(self, request: DeviceRequest, files: Sequence[Path], name: str, precision: Precision = "fp32"
                ) -> tuple[Device, str | None]:
        """Where a job's models run, and a notice when `auto` fell back to the CPU. An explicit GPU or OpenVINO
        device that cannot be used raises DeviceError; a GPU is accepted only once a session really runs on it."""
        if request.kind == "cpu":
            return CPU, None
        if request.kind == "openvino":
            device = openvino_device(request.target)
            refusal = precision_refusal(device, precision)
            if refusal is not None:
                raise DeviceError(f"{device} cannot be used: {refusal}", option="device")
            return device, None
        if request.kind == "cuda":
            device = Device("cuda", request.index)
            self._check_gpu(device)
            try:
                # a lease only to test the GPU: not a request
                with self.registry.lease(files, device, name, precision=precision, count=False):
                    return device, None
            except DeviceError as exc:
                if cuda_unavailable_reason() is None:
                    raise
                raise DeviceError(f"{exc}; to use it: {cuda_install_hint()}", option="device") from None
        candidates, notice = self.devices()
        device = self.registry.place(files, candidates)
        if not device.is_cuda:
            return device, notice
        try:
            with self.registry.lease(files, device, name, precision=precision, count=False):  # a test only
                return device, None
        except DeviceError as exc:
            return CPU, gpu_unusable(str(exc).split(": ", 1)[-1])

    def gpu_count(self) -> int:
        """The NVIDIA GPUs this machine has (asked once)."""
        with self._lock:
            if self._gpus is None:
                self._gpus = self._gpu_count()
            return self._gpus

    def _check_gpu(self, device: Device) -> None:
        count = self.gpu_count()
        if count == 0:
            raise DeviceError(f"{device}: no NVIDIA GPU found on this machine", option="device")
        if device.index >= count:
            raise DeviceError(f"{device}: this machine has {count} NVIDIA GPU(s), cuda:0 to cuda:{count - 1}",
                              option="device")

    def bind_on(self, device: Device) -> Device | None:
        """The device to bind a model's buffers on, or None to let onnxruntime allocate per call (always for
        OpenVINO's sessions: IO binding is onnxruntime's)."""
        if device.backend != "onnxruntime":
            return None
        wanted = device.is_cuda if self.config.io_binding is None else self.config.io_binding
        return device if wanted else None

    def processes_on(self, device: Device) -> bool:
        """Whether the crops' preparation and the compositing run as graphs on the UNet's device (onnxruntime's
        devices only: the graphs share buffers with the UNet's IO binding)."""
        if device.backend != "onnxruntime":
            return False
        return device.is_cuda if self.config.device_processing is None else self.config.device_processing

    def file_sha256(self, path: Path) -> str:
        """A file's sha256, computed once per runtime while its size and modification time stay the same."""
        from lipsync_cli.characters.variants import sha256_file

        stat = Path(path).stat()
        key = (Path(path).resolve(), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            known = self._hashes.get(key)
        if known is None:
            known = sha256_file(Path(path))
            with self._lock:
                self._hashes[key] = known
        return known

    def processing_sessions(self, device: Device) -> tuple:
        """The pre- and post-processing graphs' sessions on `device`, made once. They are a few kilobytes, so
        they live beside the registry, outside its model budget."""
        with self._lock:
            sessions = self._processing.get(device)
            if sessions is None:
                sessions = self._processing[device] = (self._create(PREPARE, device), self._create(COMPOSITE, device))
            return sessions

    # -- characters --------------------------------------------------------------------------------
    def character(self, name_or_path: str | Path) -> Character:
        """A checked character, loaded once per runtime while its folder's files are unchanged."""
        folder = find_character(name_or_path).resolve()
        try:
            stamp = tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()))
        except OSError:
            stamp = ()
        key = (folder, stamp)
        with self._lock:
            known = self._characters.get(key)
        if known is not None:
            return known
        character = load_character(folder)
        with self._lock:
            self._characters[key] = character
        return character

    # -- shared objects ----------------------------------------------------------------------------
    def acquire_shared(self, key: object, make: Callable[[], Any]) -> Any:
        """One object per key for as long as anyone holds it: made by the first, closed after the last
        `release_shared`. Making one (loading a model) blocks only those who want the same key."""
        with self._shared_lock:
            entry = self._shared.get(key)
            if entry is None:
                entry = self._shared[key] = [None, 0, threading.Lock()]
            entry[1] += 1
        try:
            with entry[2]:
                if entry[0] is None:
                    entry[0] = make()
                return entry[0]
        except BaseException:
            self.release_shared(key)
            raise

    def shared_objects(self) -> list[Any]:
        with self._shared_lock:
            return [entry[0] for entry in self._shared.values() if entry[0] is not None]

    def release_shared(self, key: object) -> None:
        with self._shared_lock:
            entry = self._shared[key]
            entry[1] -= 1
            if entry[1] > 0:
                return
            del self._shared[key]
        if entry[0] is not None:
            entry[0].close()

    def close(self) -> None:
        for key in list(self._shared):
            obj = self._shared.pop(key)[0]
            if obj is not None:
                obj.close()
        self.templates.close()
        self.registry.close()
        with self._lock:
            self._processing.clear()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
