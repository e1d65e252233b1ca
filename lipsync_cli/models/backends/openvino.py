"""OpenVINO sessions (the extra `lipsync-cli[openvino]`): an ONNX file compiled for an OpenVINO device (CPU;
Intel GPUs and NPUs where present), behind the interface the registry's onnxruntime sessions have: `run`,
`get_inputs`, `get_outputs`, `get_providers`.

The inference precision is always set, never left to the device: OpenVINO's CPU plugin computes float models
in bfloat16 by default where the processor has BF16 instructions, which would make float32 renders differ
from onnxruntime's. `fp32` and `int8` (a QDQ file) run with the float32 hint; `bf16` and `fp16` are the
hint itself, applied to the float model (no new file), where the device lists the capability.

A compiled model is shared by every thread that leases it; each call takes an infer request of its own from
a small pool, so concurrent calls never share buffers.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lipsync_cli.errors import DeviceError, ModelError
from lipsync_cli.models.devices import Device

INSTALL = "pip install 'lipsync-cli[openvino]'"
HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}
CAPABILITY = {"bf16": "BF16", "fp16": "FP16", "int8": "INT8"}
_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)"}
_core: list[Any] = []
_core_lock = threading.Lock()


@functools.cache
def unavailable_reason() -> str | None:
    """Why OpenVINO cannot be used here, or None."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return f"OpenVINO is not installed ({INSTALL})"
    return None


def core() -> Any:
    """The process's one OpenVINO Core (it loads the device plugins once)."""
    reason = unavailable_reason()
    if reason is not None:
        raise DeviceError(reason, option="device")
    with _core_lock:
        if not _core:
            import openvino as ov

            _core.append(ov.Core())
        return _core[0]


@dataclass(frozen=True)
class OpenVinoDevice:
    name: str  # CPU, GPU.0, NPU, ...
    full_name: str
    capabilities: tuple[str, ...]  # OPTIMIZATION_CAPABILITIES: FP32, BF16, FP16, INT8, ...


def devices() -> list[OpenVinoDevice]:
    """OpenVINO's devices on this machine, with what each can compute in (asked once: every job and session
    start checks its device and precision against them)."""
    return list(_devices())


@functools.cache
def _devices() -> tuple[OpenVinoDevice, ...]:
    found = []
    c = core()
    for name in c.available_devices:
        try:
            full = str(c.get_property(name, "FULL_DEVICE_NAME"))
            capabilities = tuple(str(v) for v in c.get_property(name, "OPTIMIZATION_CAPABILITIES"))
        except Exception:  # a plugin that cannot answer: list it without details
            full, capabilities = name, ()
        found.append(OpenVinoDevice(name, full, capabilities))
    return tuple(found)


def _find(target: str) -> OpenVinoDevice | None:
    """The device OpenVINO calls `target` (GPU also names GPU.0, the first one)."""
    for found in devices():
        if found.name == target or (found.name.split(".")[0] == target and found.name.endswith(".0")):
            return found
    return None


def device_refusal(device: Device) -> str | None:
    """Why OpenVINO cannot use `device`, or None."""
    reason = unavailable_reason()
    if reason is not None:
        return reason
    if _find(device.target) is None:
        names = ", ".join(d.name for d in devices()) or "none"
        return f"OpenVINO finds no {device.target} device here (its devices: {names})"
    return None


def precision_refusal(device: Device, precision: str) -> str | None:
    """Why OpenVINO cannot run `precision` on `device`, or None."""
    reason = device_refusal(device)
    if reason is not None or precision == "fp32":
        return reason
    found = _find(device.target)
    assert found is not None
    need = CAPABILITY.get(precision)
    if need is not None and need not in found.capabilities:
        return (f"{device} ({found.full_name}) cannot compute in {precision}: its capabilities are "
                f"{', '.join(found.capabilities) or 'not reported'}")
    return None


@dataclass(frozen=True)
class PortInfo:
    """What onnxruntime's NodeArg tells of an input or output: name, shape (ints, or "N"), element type."""

    name: str
    shape: tuple
    type: str


def _port(port: Any) -> PortInfo:
    shape = tuple(int(d.get_length()) if d.is_static else "N" for d in port.get_partial_shape())
    kind = str(port.get_element_type().get_type_name())
    return PortInfo(port.get_any_name(), shape, _TYPES.get(kind, f"tensor({kind})"))


class OpenVinoSession:
    def __init__(self, compiled: Any, path: Path, device: Device, precision: str) -> None:
        self.compiled, self.path, self.device, self.precision = compiled, path, device, precision
        self._inputs = tuple(_port(p) for p in compiled.inputs)
        self._outputs = tuple(_port(p) for p in compiled.outputs)
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def get_inputs(self) -> list[PortInfo]:
        return list(self._inputs)

    def get_outputs(self) -> list[PortInfo]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [f"OpenVINO {self.device.target} ({HINTS[self.precision]})"]

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Like onnxruntime's InferenceSession.run: the named outputs (all when None), as arrays of their own."""
        with self._lock:
            request = self._idle.pop() if self._idle else self.compiled.create_infer_request()
        try:
            request.infer({name: np.ascontiguousarray(value) for name, value in feeds.items()})
            names = output_names or [o.name for o in self._outputs]
            return [np.array(request.get_tensor(name).data, copy=True) for name in names]
        finally:
            with self._lock:
                self._idle.append(request)


def session(path: Path, device: Device, threads: int, precision: str = "fp32") -> OpenVinoSession:
    """`path` compiled for OpenVINO's `device.target` with the hint of `precision`."""
    reason = precision_refusal(device, precision)
    if reason is not None:
        raise DeviceError(f"{device} cannot be used: {reason}", option="device")
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    c = core()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
    if device.on_cpu:
        # threads as onnxruntime's pool; no pinning: ffmpeg and the other stages share these cores
        config.update({"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False})
    try:
        model = c.read_model(str(path))
        compiled = c.compile_model(model, device.target, config)
    except Exception as exc:  # OpenVINO raises RuntimeError with long multi-line texts
        detail = " ".join(str(exc).split())[:200]
        raise ModelError(f"{path}: OpenVINO cannot compile it for {device.target} ({detail})") from None
    return OpenVinoSession(compiled, path, device, precision)
