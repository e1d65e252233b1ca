"""The one place where onnxruntime sessions are made: explicit providers, thread settings, an honest CUDA check.

onnxruntime-gpu lists CUDAExecutionProvider even where the CUDA libraries are missing and then silently
runs on the CPU, so a session counts as CUDA only when it reports that provider first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from lipsync_cli.errors import DeviceError, ModelError
from lipsync_cli.models.devices import (  # noqa: F401  (re-exported: the historical home of these)
    Device,
    DeviceRequest,
    cuda_unavailable_reason,
    parse_device,
)


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class SessionMaker:
    """Creates sessions with this process's thread budget. `threads` is onnxruntime's intra-op pool."""

    threads: int

    def _options(self, optimize: bool = True) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                            else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        options.log_severity_level = 4
        # idle threads spinning would take the cores that ffmpeg and the other stages need
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return options

    def _load(self, path: Path, providers: list, optimize: bool = True) -> ort.InferenceSession:
        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        try:
            return ort.InferenceSession(str(path), sess_options=self._options(optimize), providers=providers)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            detail = " ".join(str(exc).split())[:200]
            raise ModelError(f"{path}: not a loadable ONNX model ({detail})") from None

    def __call__(self, path: Path, device: Device) -> ort.InferenceSession:
        """A session for `path` on `device`; raises DeviceError if CUDA is not really used."""
        if not device.is_cuda:
            return self._load(path, ["CPUExecutionProvider"])
        reason = cuda_unavailable_reason()
        if reason:
            raise DeviceError(f"{device} cannot be used: {reason}", option="device")
        session = self._load(path, [("CUDAExecutionProvider", {"device_id": device.index}), "CPUExecutionProvider"])
        if session.get_providers()[0] != "CUDAExecutionProvider":
            raise DeviceError(f"{device} cannot be used: onnxruntime fell back to {session.get_providers()}",
                              option="device")
        return session


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple  # ints, or "N" for a symbolic or unknown dimension
    type: str  # onnxruntime's element type, e.g. "tensor(float)"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


def _info(value) -> TensorInfo:
    return TensorInfo(value.name, tuple(d if isinstance(d, int) else "N" for d in value.shape), value.type)


def read_signature(path: Path) -> Signature:
    """The inputs and outputs an ONNX file declares, read by a short-lived unoptimised CPU session that is
    released before returning: checking a character keeps no session open."""
    session = SessionMaker(1)._load(Path(path), ["CPUExecutionProvider"], optimize=False)
    try:
        return Signature(tuple(_info(v) for v in session.get_inputs()), tuple(_info(v) for v in session.get_outputs()))
    finally:
        del session
