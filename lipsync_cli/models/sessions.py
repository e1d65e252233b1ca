"""One onnxruntime session per (model, device), with an explicit provider and an honest CPU fallback.

onnxruntime-gpu lists CUDAExecutionProvider even where the CUDA libraries are missing and then silently
runs on the CPU, so a device counts as CUDA only when a created session reports that provider first.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from lipsync_cli.errors import DeviceError, ModelError

ort.set_default_logger_severity(4)  # fatal only: errors reach the user as our own one-line messages

_DEVICE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


@dataclass(frozen=True)
class DeviceRequest:
    """What the user asked for: auto, cpu, or cuda with an index."""

    kind: str  # "auto" | "cpu" | "cuda"
    index: int = 0

    def __str__(self) -> str:
        return self.kind if self.kind != "cuda" else f"cuda:{self.index}"


def parse_device(spec: str = "auto", gpu: int | None = None) -> DeviceRequest:
    """`auto`, `cpu`, `cuda`, `cuda:N`; `gpu=N` is short for cuda:N."""
    if gpu is not None:
        if gpu < 0:
            raise DeviceError(f"--gpu must be 0 or more, not {gpu}")
        if spec not in ("auto", "cuda", f"cuda:{gpu}"):
            raise DeviceError(f"--gpu {gpu} contradicts --device {spec}")
        return DeviceRequest("cuda", gpu)
    match = _DEVICE.match(spec.strip().lower())
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise DeviceError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")
    return DeviceRequest(match.group(1), int(match.group(2) or 0))


def cuda_unavailable_reason() -> str | None:
    """Why onnxruntime cannot use CUDA here, or None when it looks possible."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"this onnxruntime build ({ort.__version__}, package without CUDA) has no CUDA provider"
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if os.name == "posix" and library.exists():
        try:
            ctypes.CDLL(str(library))
        except OSError as exc:
            return f"the CUDA libraries cannot be loaded ({' '.join(str(exc).split())})"
    return None


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class SessionFactory:
    """Creates and caches sessions; the model registry of the seed, in small."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or default_threads()
        self._sessions: dict[tuple[Path, str], ort.InferenceSession] = {}
        self._lock = threading.Lock()

    def _options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 4
        # idle threads spinning would take the cores that ffmpeg and the other stages need
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return options

    def _create(self, path: Path, providers: list) -> ort.InferenceSession:
        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        try:
            return ort.InferenceSession(str(path), sess_options=self._options(), providers=providers)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            detail = " ".join(str(exc).split())[:200]
            raise ModelError(f"{path}: not a loadable ONNX model ({detail})") from None

    def session(self, path: str | Path, device: str = "cpu") -> ort.InferenceSession:
        """A session for `path` on `cpu` or `cuda:N`; raises DeviceError if CUDA is not really used."""
        path = Path(path).resolve()
        key = (path, device)
        with self._lock:
            if key in self._sessions:
                return self._sessions[key]
            if device == "cpu":
                session = self._create(path, ["CPUExecutionProvider"])
            else:
                index = int(device.split(":")[1])
                reason = cuda_unavailable_reason()
                if reason:
                    raise DeviceError(f"{device} cannot be used: {reason}")
                session = self._create(
                    path, [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
                )
                if session.get_providers()[0] != "CUDAExecutionProvider":
                    raise DeviceError(f"{device} cannot be used: onnxruntime fell back to {session.get_providers()}")
            self._sessions[key] = session
            return session

    def resolve(self, request: DeviceRequest, probe_model: str | Path) -> tuple[str, str | None]:
        """The device to run on ('cpu' or 'cuda:N') and a one-line notice when auto fell back to the CPU."""
        if request.kind == "cpu":
            return "cpu", None
        if request.kind == "cuda":
            self.session(probe_model, str(request))
            return str(request), None
        try:
            self.session(probe_model, "cuda:0")
            return "cuda:0", None
        except DeviceError as exc:
            return "cpu", f"running on the CPU: no usable GPU, {str(exc).split(': ', 1)[-1]}"


_shared: SessionFactory | None = None


def shared_factory() -> SessionFactory:
    """The process-wide factory, so that each model is opened once per device."""
    global _shared
    if _shared is None:
        _shared = SessionFactory()
    return _shared
