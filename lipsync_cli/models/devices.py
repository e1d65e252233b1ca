"""Execution devices: what a job asks for (`DeviceRequest`), where it runs (`Device`), and what this machine
has (CUDA usable or not, how many GPUs, memory in use on one).

A device names a backend too: `cpu` and `cuda:N` run on onnxruntime, `openvino` (= `openvino:CPU`) and
`openvino:GPU`, `openvino:NPU`, ... on OpenVINO (the extra `lipsync-cli[openvino]`)."""

from __future__ import annotations

import ctypes
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import onnxruntime as ort

from lipsync_cli.errors import DeviceError

_DEVICE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")
_OPENVINO = re.compile(r"^openvino(?::([A-Za-z][A-Za-z0-9_.]*))?$", re.IGNORECASE)
Backend = Literal["onnxruntime", "openvino"]


@dataclass(frozen=True, order=True)
class Device:
    """A resolved device: the CPU or one CUDA GPU (onnxruntime), or an OpenVINO device (`target`: OpenVINO's
    own name of it, CPU, GPU, GPU.1, NPU)."""

    kind: Literal["cpu", "cuda", "openvino"]
    index: int = 0
    target: str = ""

    def __str__(self) -> str:
        if self.kind == "openvino":
            return "openvino" if self.target == "CPU" else f"openvino:{self.target}"
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    @property
    def backend(self) -> Backend:
        return "openvino" if self.kind == "openvino" else "onnxruntime"

    @property
    def on_cpu(self) -> bool:
        """Whether the models run on this machine's CPU cores (onnxruntime's or OpenVINO's CPU)."""
        return self.kind == "cpu" or (self.kind == "openvino" and self.target.split(".")[0] == "CPU")


CPU = Device("cpu")


def openvino_device(target: str = "CPU") -> Device:
    return Device("openvino", 0, target.upper())


@dataclass(frozen=True)
class DeviceRequest:
    """What a job asks for: auto (CUDA when it really works, else the CPU), cpu, one GPU, or an OpenVINO
    device (`target`)."""

    kind: Literal["auto", "cpu", "cuda", "openvino"]
    index: int = 0
    target: str = ""

    def __str__(self) -> str:
        if self.kind == "openvino":
            return str(openvino_device(self.target))
        return self.kind if self.kind != "cuda" else f"cuda:{self.index}"


def request_for(device: Device) -> DeviceRequest:
    """The request that asks for exactly `device`."""
    return DeviceRequest(device.kind, device.index, device.target)


def parse_device(spec: str = "auto", gpu: int | None = None) -> DeviceRequest:
    """`auto`, `cpu`, `cuda`, `cuda:N`, `openvino`, `openvino:TARGET`; `gpu=N` is short for cuda:N."""
    openvino = _OPENVINO.match(spec.strip())
    if openvino and gpu is None:
        return DeviceRequest("openvino", 0, (openvino.group(1) or "CPU").upper())
    if gpu is not None:
        if gpu < 0:
            raise DeviceError(f"GPU index must be 0 or more, not {gpu}", option="gpu")
        if spec not in ("auto", "cuda", f"cuda:{gpu}"):
            raise DeviceError(f"GPU {gpu} contradicts device {spec}", option="gpu")
        return DeviceRequest("cuda", gpu)
    match = _DEVICE.match(spec.strip().lower())
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise DeviceError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N, openvino or openvino:TARGET",
                          option="device")
    kind = cast(Literal["auto", "cpu", "cuda"], match.group(1))
    return DeviceRequest(kind, int(match.group(2) or 0))


def parse_devices(spec: str, gpu_count: int) -> tuple[Device, ...]:
    """A device list: `cpu`, `cuda:0,cuda:1`, `cuda:all` (every GPU found), `cuda` (= cuda:0), `openvino[:TARGET]`."""
    devices: list[Device] = []
    for part in (p.strip().lower() for p in spec.split(",")):
        if part == "cuda:all":
            if gpu_count == 0:
                raise DeviceError("cuda:all: no NVIDIA GPU found on this machine", option="devices")
            devices += [Device("cuda", i) for i in range(gpu_count)]
            continue
        request = parse_device(part)
        if request.kind == "auto":
            raise DeviceError("auto cannot be part of a device list: name the devices", option="devices")
        if request.kind == "cuda" and gpu_count == 0:
            raise DeviceError(f"{part}: no NVIDIA GPU found on this machine", option="devices")
        if request.kind == "openvino":
            devices.append(openvino_device(request.target))
            continue
        devices.append(CPU if request.kind == "cpu" else Device("cuda", request.index))
    if not devices or len(set(devices)) != len(devices):
        raise DeviceError(f"device list {spec!r} is empty or names a device twice", option="devices")
    return tuple(devices)


CUDA_INSTALL = "pip install 'onnxruntime-gpu[cuda,cudnn]'"  # the CUDA and cuDNN libraries as wheels
# distributions that all install the one `onnxruntime` module; two of them overwrite each other's files (pip
# cannot say "one of": Pipecat requires `onnxruntime`, lipsync `onnxruntime-gpu` where it has wheels)
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                     "onnxruntime-qnn")
_preloaded: list[bool] = []


def _preload_cuda_wheels() -> None:
    """Load the CUDA and cuDNN libraries of the nvidia-* wheels (onnxruntime-gpu[cuda,cudnn]), once per process,
    so that a machine with only an NVIDIA driver can use them. Nothing is tried where those wheels are absent:
    onnxruntime would print its failures."""
    if _preloaded:
        return
    _preloaded.append(True)
    import importlib.util

    if importlib.util.find_spec("nvidia") is None or not hasattr(ort, "preload_dlls"):
        return
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            ort.preload_dlls()
        except Exception:  # a partial install: the provider check below says what is missing
            pass


def onnxruntime_distributions() -> tuple[tuple[str, str], ...]:
    """The installed distributions of the `onnxruntime` module, as (name, version)."""
    from importlib import metadata

    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return tuple(found)


def onnxruntime_clash(distributions: tuple[tuple[str, str], ...] | None = None, cuda: bool | None = None
                      ) -> str | None:
    """When several distributions share the one module: which, and which build's files it holds now."""
    found = onnxruntime_distributions() if distributions is None else distributions
    if len(found) < 2:
        return None
    cuda = "CUDAExecutionProvider" in ort.get_available_providers() if cuda is None else cuda
    listed = " and ".join(f"{name} {version}" for name, version in found)
    return (f"{listed} are both installed over the one onnxruntime module, which now holds "
            f"{'the CUDA build' if cuda else 'a build without CUDA'}")


def cuda_install_hint(distributions: tuple[tuple[str, str], ...] | None = None) -> str:
    """The one command that makes CUDA usable here: the CUDA libraries as wheels, or, where another package's
    onnxruntime was written over onnxruntime-gpu's files, those files back (both stay installed, so that
    `pip check` holds for both packages)."""
    found = dict(onnxruntime_distributions() if distributions is None else distributions)
    if "onnxruntime-gpu" in found and len(found) > 1:
        return f"pip install --force-reinstall --no-deps onnxruntime-gpu=={found['onnxruntime-gpu']}"
    return CUDA_INSTALL


def cuda_unavailable_reason() -> str | None:
    """Why onnxruntime cannot use CUDA here, or None when it looks possible."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        clash = onnxruntime_clash(cuda=False)
        if clash is not None:
            return clash
        return f"this onnxruntime build ({ort.__version__}, package without CUDA) has no CUDA provider"
    _preload_cuda_wheels()
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if os.name == "posix" and library.exists():
        try:
            ctypes.CDLL(str(library))
        except OSError as exc:
            return f"the CUDA libraries cannot be loaded ({' '.join(str(exc).split())})"
    return None


def cuda_device_count() -> int:
    """GPUs the NVIDIA driver reports (0 without a driver)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    except (OSError, AttributeError):
        return 0


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _Nvml:
    """Used memory of a GPU through the driver's NVML library (no Python package needed)."""

    class _Memory(ctypes.Structure):
        _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libnvidia-ml.so.1")
        if self.lib.nvmlInit_v2() != 0:
            raise OSError("nvmlInit failed")

    def used(self, index: int) -> int:
        handle = ctypes.c_void_p()
        memory = self._Memory()
        if self.lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0 or \
                self.lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != 0:
            raise OSError(f"NVML cannot read the memory of GPU {index}")
        return int(memory.used)


class MemoryProbe:
    """Bytes in use now: this process's resident set for the CPU, the GPU's used memory (all processes) for a
    GPU; None when it cannot be read. One per registry; NVML is opened on first use."""

    def __init__(self) -> None:
        self._nvml: _Nvml | None = None
        self._nvml_failed = False

    def __call__(self, device: Device) -> int | None:
        if not device.is_cuda:  # the CPU, and OpenVINO's devices (an Intel GPU's memory is the host's)
            return _rss_bytes()
        if self._nvml_failed:
            return None
        try:
            if self._nvml is None:
                self._nvml = _Nvml()
            return self._nvml.used(device.index)
        except (OSError, AttributeError):
            self._nvml_failed = True
            return None
