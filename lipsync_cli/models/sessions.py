"""The one place where model sessions are made: the session factory. A device names its backend
(models/backends: onnxruntime for `cpu` and `cuda:N`, OpenVINO for `openvino[:TARGET]`); every session,
whichever backend made it, answers `run(outputs, feeds)`, `get_inputs()`, `get_outputs()` and
`get_providers()` as onnxruntime's do, so the registry, its leases and the batching code never ask which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lipsync_cli.errors import DeviceError
from lipsync_cli.models.backends import onnxruntime as ort_backend
from lipsync_cli.models.devices import (  # noqa: F401  (re-exported: the historical home of these)
    Device,
    DeviceRequest,
    cuda_unavailable_reason,
    parse_device,
)
from lipsync_cli.models.precision import Precision


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def precision_refusal(device: Device, precision: Precision) -> str | None:
    """Why `device`'s backend cannot run `precision` there, or None."""
    if device.backend == "openvino":
        from lipsync_cli.models.backends import openvino

        return openvino.precision_refusal(device, precision)
    return ort_backend.precision_refusal(device, precision)


@dataclass(frozen=True)
class SessionMaker:
    """Creates sessions with this process's thread budget. `threads`: the backend's pool of threads per session."""

    threads: int

    def __call__(self, path: Path, device: Device, precision: Precision = "fp32"):
        """A session for `path` on `device`, computing in `precision` (the hint of an OpenVINO session; an
        onnxruntime session runs the file as it is). Raises DeviceError where the device cannot be used."""
        if device.backend == "openvino":
            from lipsync_cli.models.backends import openvino

            return openvino.session(Path(path), device, self.threads, precision)
        refusal = ort_backend.precision_refusal(device, precision)
        if refusal is not None:
            raise DeviceError(refusal, option="precision")
        return ort_backend.session(Path(path), device, self.threads)

    def _load(self, path: Path, providers: list, optimize: bool = True):
        return ort_backend.load(path, self.threads, providers, optimize)


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
