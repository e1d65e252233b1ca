"""onnxruntime sessions: explicit providers, thread settings, an honest CUDA check.

onnxruntime-gpu lists CUDAExecutionProvider even where the CUDA libraries are missing and then silently
runs on the CPU, so a session counts as CUDA only when it reports that provider first. onnxruntime has no
execution precision of its own for float models: an int8 variant is a file of its own (QDQ), and bfloat16
or float16 execution is refused (OpenVINO offers them).
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from lipsync_cli.errors import DeviceError, ModelError
from lipsync_cli.models.devices import Device, cuda_unavailable_reason


def options(threads: int, optimize: bool = True) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 4
    # idle threads spinning would take the cores that ffmpeg and the other stages need
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def load(path: Path, threads: int, providers: list, optimize: bool = True) -> ort.InferenceSession:
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        return ort.InferenceSession(str(path), sess_options=options(threads, optimize), providers=providers)
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        detail = " ".join(str(exc).split())[:200]
        raise ModelError(f"{path}: not a loadable ONNX model ({detail})") from None


def session(path: Path, device: Device, threads: int) -> ort.InferenceSession:
    """A session for `path` on `device` (cpu or cuda:N); raises DeviceError if CUDA is not really used."""
    if not device.is_cuda:
        return load(path, threads, ["CPUExecutionProvider"])
    reason = cuda_unavailable_reason()
    if reason:
        raise DeviceError(f"{device} cannot be used: {reason}", option="device")
    made = load(path, threads, [("CUDAExecutionProvider", {"device_id": device.index}), "CPUExecutionProvider"])
    if made.get_providers()[0] != "CUDAExecutionProvider":
        raise DeviceError(f"{device} cannot be used: onnxruntime fell back to {made.get_providers()}",
                          option="device")
    return made


def precision_refusal(device: Device, precision: str) -> str | None:
    """Why onnxruntime cannot run `precision` on `device`, or None."""
    if precision in ("fp32", "int8"):
        return None
    return (f"onnxruntime has no {'bfloat16' if precision == 'bf16' else 'float16'} execution for float models "
            f"on {device}; OpenVINO has (--device openvino, with lipsync-cli[openvino])")
