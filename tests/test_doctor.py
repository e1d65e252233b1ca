"""`lipsync doctor` on this machine, and with ffmpeg made unavailable."""

import json

from typer.testing import CliRunner

from lipsync_cli.cli.app import app
from lipsync_cli.models.devices import (
    CUDA_INSTALL,
    cuda_device_count,
    cuda_install_hint,
    cuda_unavailable_reason,
    onnxruntime_clash,
)

runner = CliRunner()


def test_doctor_reports_this_machine():
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    checks = {c["name"]: c for c in data["checks"]}
    assert data["can_render"] and checks["onnxruntime"]["status"] == "ok"
    assert "CPUExecutionProvider" in checks["onnxruntime"]["found"]
    assert checks["libx264"]["status"] == "ok" and checks["character alice"]["status"] == "ok"
    reason = cuda_unavailable_reason()
    if cuda_device_count() == 0:  # nothing to install: say there is no GPU, and no more
        assert checks["CUDA"] == {"name": "CUDA", "status": "ok", "found": "no NVIDIA GPU found: renders run on "
                                  "the CPU", "fix": ""}
        assert checks["h264_nvenc"]["found"] == "not used: no NVIDIA GPU found (libx264 encodes)"
        assert onnxruntime_clash() is not None or "onnxruntime-gpu" not in result.stdout
    elif reason is not None:
        assert checks["CUDA"]["status"] == "warning" and reason in checks["CUDA"]["found"]
        assert "onnxruntime-gpu[cuda,cudnn]" in checks["CUDA"]["fix"]
    table = runner.invoke(app, ["doctor"])
    assert table.exit_code == 0 and "rendering can work here" in table.stdout


def test_doctor_without_ffmpeg_says_so(monkeypatch):
    import imageio_ffmpeg

    def missing():
        raise RuntimeError("No ffmpeg exe could be found")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", missing)
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["ffmpeg"]["status"] == "problem" and "No ffmpeg exe" in checks["ffmpeg"]["found"]


def test_two_onnxruntime_distributions_are_named_with_the_command_that_mends_them():
    """Pipecat requires `onnxruntime`, lipsync `onnxruntime-gpu`: pip installs both over one module (the
    pipecat nox session's environment is such a one: tests/test_pipecat_packaging.py)."""
    both = (("onnxruntime", "1.32.0"), ("onnxruntime-gpu", "1.31.1"))
    assert onnxruntime_clash(both, cuda=False) == ("onnxruntime 1.32.0 and onnxruntime-gpu 1.31.1 are both installed "
                                                   "over the one onnxruntime module, which now holds a build without "
                                                   "CUDA")
    assert onnxruntime_clash(both, cuda=True).endswith("which now holds the CUDA build")
    assert cuda_install_hint(both) == "pip install --force-reinstall --no-deps onnxruntime-gpu==1.31.1"
    assert onnxruntime_clash((("onnxruntime-gpu", "1.31.1"),)) is None
    assert cuda_install_hint((("onnxruntime-gpu", "1.31.1"),)) == CUDA_INSTALL
    assert cuda_install_hint((("onnxruntime", "1.32.0"),)) == CUDA_INSTALL


def test_the_first_run_on_a_gpu_whose_cuda_build_was_overwritten_says_the_mend(monkeypatch):
    """`--device auto` on a machine with an NVIDIA GPU, where Pipecat's CPU onnxruntime was written over
    onnxruntime-gpu's files: one note, the reason and the command that brings CUDA back."""
    import onnxruntime

    from lipsync_cli.models import devices
    from lipsync_cli.runtime import Runtime, RuntimeConfig

    monkeypatch.setattr(devices, "onnxruntime_distributions",
                        lambda: (("onnxruntime", "1.32.0"), ("onnxruntime-gpu", "1.31.1")))
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with Runtime(RuntimeConfig(devices="auto")) as runtime:
        monkeypatch.setattr(runtime, "_gpu_count", lambda: 1)
        chosen, notice = runtime.devices()
    assert [str(d) for d in chosen] == ["cpu"] and "\n" not in notice
    assert "onnxruntime 1.32.0 and onnxruntime-gpu 1.31.1 are both installed" in notice
    assert notice.endswith("to use it: pip install --force-reinstall --no-deps onnxruntime-gpu==1.31.1)")
