"""What this machine can do for lipsync: each check says what it found and, when something is wrong, what
to do. `lipsync doctor` shows them."""

from __future__ import annotations

import platform
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Status = Literal["ok", "warning", "problem"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    found: str
    fix: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def _python() -> Check:
    from lipsync_cli import __version__

    return Check("python and lipsync", "ok", f"Python {platform.python_version()}, lipsync {__version__}")


def _onnxruntime() -> list[Check]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return [Check("onnxruntime", "problem", f"cannot be imported ({exc})", "pip install onnxruntime-gpu")]
    providers = ort.get_available_providers()
    checks = [Check("onnxruntime", "ok" if "CPUExecutionProvider" in providers else "problem",
                    f"{ort.__version__}, providers {', '.join(providers)}")]
    from lipsync_cli.models.devices import (
        cuda_device_count,
        cuda_install_hint,
        cuda_unavailable_reason,
        onnxruntime_clash,
    )

    clash = onnxruntime_clash()
    if clash is not None:
        checks.append(Check("onnxruntime packages", "warning", clash,
                            f"renders run on the CPU either way; for CUDA: {cuda_install_hint()}"))
    gpus = cuda_device_count()
    reason = cuda_unavailable_reason() if gpus else None
    if gpus == 0:
        checks.append(Check("CUDA", "ok", "no NVIDIA GPU found: renders run on the CPU"))
    elif reason is None:
        checks.append(Check("CUDA", "ok", f"usable: {gpus} NVIDIA GPU(s) found"))
    else:
        checks.append(Check("CUDA", "warning", f"{gpus} NVIDIA GPU(s) found, not usable: {reason}",
                            f"{cuda_install_hint()}; renders run on the CPU meanwhile"))
    return checks


def _openvino() -> list[Check]:
    """OpenVINO's devices (the second backend, an extra): what each is and what it can compute in."""
    from lipsync_cli.models.backends import openvino

    reason = openvino.unavailable_reason()
    if reason is not None:
        return [Check("OpenVINO", "ok", "not installed: the openvino devices are not available (optional)",
                      openvino.INSTALL)]
    import openvino as ov

    try:
        found = openvino.devices()
    except Exception as exc:  # a broken install: OpenVINO's own exception types
        return [Check("OpenVINO", "warning", f"{ov.__version__} cannot list its devices ({exc})",
                      "pip install --force-reinstall openvino")]
    checks = [Check("OpenVINO", "ok", f"{ov.__version__}, devices {', '.join(d.name for d in found) or 'none'}")]
    for device in found:
        name = "openvino" if device.name == "CPU" else f"openvino:{device.name}"
        checks.append(Check(f"device {name}", "ok", f"{device.full_name}; computes in "
                            f"{', '.join(c for c in device.capabilities if c in ('FP32', 'BF16', 'FP16', 'INT8'))}"))
    return checks


def _ffmpeg() -> list[Check]:
    from lipsync_cli.encoding.ffmpeg import ffmpeg_exe

    try:
        exe = ffmpeg_exe()
        version = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, text=True, timeout=30)
        first = (version.stdout.splitlines() or ["?"])[0]
    except Exception as exc:  # imageio-ffmpeg raises its own types when no binary is found
        return [Check("ffmpeg", "problem", f"not found ({exc})", "pip install --force-reinstall imageio-ffmpeg")]
    checks = [Check("ffmpeg", "ok", f"{first} ({exe})")]
    try:  # check_encoder trusts libx264; try it for real here
        test = subprocess.run([exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                               "color=size=64x64:rate=25:duration=0.1", "-c:v", "libx264", "-f", "null", "-"],
                              capture_output=True, text=True, timeout=60)
        lines = test.stderr.strip().splitlines()
        checks.append(Check("libx264", "ok", "encodes here") if test.returncode == 0 else
                      Check("libx264", "problem", f"cannot encode here: {lines[-1] if lines else 'failed'}",
                            "reinstall imageio-ffmpeg"))
    except (OSError, subprocess.TimeoutExpired) as exc:
        checks.append(Check("libx264", "problem", f"cannot be tried ({exc})", "reinstall imageio-ffmpeg"))
    return [*checks, _nvenc()]


def _nvenc() -> Check:
    from lipsync_cli.encoding.ffmpeg import EncodeSettings, check_encoder
    from lipsync_cli.errors import InputError
    from lipsync_cli.models.devices import cuda_device_count

    if cuda_device_count() == 0:
        return Check("h264_nvenc", "ok", "not used: no NVIDIA GPU found (libx264 encodes)")
    try:
        check_encoder(EncodeSettings(codec="h264_nvenc"))
    except InputError as exc:
        why = str(exc).split(" here: ", 1)[-1].split(" | ")[0]
        return Check("h264_nvenc", "warning", f"cannot encode on this GPU: {why}", "use --codec libx264")
    return Check("h264_nvenc", "ok", "encodes here")


def _cache_problem(root: Path) -> str | None:
    """Why renders would turn the template cache off: a file where a folder must be, or no right to write."""
    for folder in (root, root / "templates"):
        if folder.exists() and not folder.is_dir():
            return f"{folder} is not a folder"
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".lipsync-check-"):
            pass
    except OSError as exc:
        return f"{existing} cannot be written ({exc.strerror or exc})"
    return None


def _cache() -> Check:
    from lipsync_cli.resources import cache_root, disk_bytes

    root = cache_root()
    problem = _cache_problem(root)
    if problem is not None:
        return Check("cache", "warning", f"{problem}: renders run without the template cache",
                     "set LIPSYNC_CACHE to a folder that can be written")
    size = disk_bytes(root) if root.is_dir() else 0
    return Check("cache", "ok", f"{root}: {size / 2**20:.1f} MB (lipsync cache clear empties it)")


def _characters() -> list[Check]:
    from lipsync_cli.characters.manifest import check_character, list_characters

    checks = []
    for folder in list_characters():
        character, status = check_character(folder)
        checks.append(Check(f"character {folder.name}", "ok" if character is not None else "warning",
                            str(folder) if character is not None else status))
    return checks or [Check("characters", "warning", "none found", "see README: Bring your own character")]


def run_checks() -> list[Check]:
    return [_python(), *_onnxruntime(), *_openvino(), *_ffmpeg(), _cache(), *_characters()]


def can_render(checks: list[Check]) -> bool:
    return not any(c.status == "problem" for c in checks)
