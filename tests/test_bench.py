"""`lipsync bench` runs and reports every stage; the realistic models are full size. No speed is asserted."""

import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from lipsync_cli.cli.app import app

onnx = pytest.importorskip("onnx")

runner = CliRunner()
STAGES = {"audio front end", "audio encoder", "template decode + prepare", "UNet", "UNet alone", "composite",
          "encode", "end to end"}


def check_report(path, frames):
    data = json.loads(path.read_text())
    assert set(data["stages"]) == STAGES
    for stage in data["stages"].values():
        assert stage["samples"] >= 1 and stage["median_ms"] > 0 and stage["p10_ms"] <= stage["p90_ms"]
    assert data["frames"] == frames and data["device"] == "cpu" and data["provider"] == "CPUExecutionProvider"
    for key in ("fps", "realtime", "render_seconds", "transcode_seconds", "transcode_ratio", "peak_memory_mb",
                "cold_render_seconds", "warm_render_seconds", "warm_speedup"):
        assert data[key] > 0, key
    assert data["stages"]["audio front end"]["samples"] >= 10  # repeated for a stable median
    ratio = data["stages"]["end to end"]["median_ms"] / data["stages"]["UNet alone"]["median_ms"]
    assert data["end_to_end_over_unet"] == pytest.approx(ratio)
    assert data["io_binding"] is False and data["device_processing"] is False  # the CPU's defaults
    return data


def test_bench_alice_tiny_in_80_columns(tmp_path):
    out = tmp_path / "results" / "cpu" / "alice.json"  # folders made as the other outputs' are
    result = subprocess.run([sys.executable, "-m", "lipsync_cli", "bench", "--device", "cpu", "--seconds", "0.4",
                             "--batch-size", "4", "--json", str(out)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stdout + result.stderr
    data = check_report(out, 10)
    assert data["character"] == "alice" and data["layout"] == "per_frame" and data["blend"] == "match"
    assert set(data["in_flight_fps"]) == {"1", "2", "4"} and all(v > 0 for v in data["in_flight_fps"].values())
    text = result.stdout
    table = text[: text.index("└")].splitlines()[1:]  # the stage table, to its bottom edge (the title is centred)
    assert len(table) == 11 and all(len(line) <= 80 for line in table) and "…" not in text, table
    assert "template prepare" in text and "met" in table[1]
    assert "render / transcode" in text and "this project's goal" in text and "second render" in text
    assert "end to end / UNet alone" in text and "not judged" in text and "4 at once" in text


def test_bench_realistic_tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("LIPSYNC_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "realistic.json"
    result = runner.invoke(app, ["bench", "--model", "realistic", "--device", "cpu", "--seconds", "0.2",
                                 "--batch-size", "2", "--in-flight", "none", "--blend", "feather", "--json", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    data = check_report(out, 5)
    assert data["layout"] == "synctalk" and data["in_flight_fps"] == {} and data["blend"] == "feather"
    assert data["parameters"] == {"audio_encoder": 2_812_672, "unet": 12_186_935}
    assert "12,186,935" in result.output


def trainable_parameters(model):
    """Conv weights and biases and batch-norm scale and shift, as PyTorch counts parameters."""
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            total += sum(sizes[name] for name in node.input[1:])
        elif node.op_type == "BatchNormalization":
            total += sizes[node.input[1]] + sizes[node.input[2]]
    return total


def test_realistic_models_are_full_size():
    from lipsync_cli.models.graphs import realistic

    encoder = realistic.wav2lip_audio_encoder().model("encoder")
    unet = realistic.synctalk_unet().model("unet")
    assert trainable_parameters(encoder) == realistic.WAV2LIP_ENCODER_PARAMETERS == 2_812_672
    assert trainable_parameters(unet) == realistic.SYNCTALK_UNET_PARAMETERS == 12_186_935
    enc = ort.InferenceSession(encoder.SerializeToString(), providers=["CPUExecutionProvider"])
    net = ort.InferenceSession(unet.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.shape for i in enc.get_inputs()] == [["N", 1, 80, 16]]
    assert enc.run(None, {"mel": np.zeros((3, 1, 80, 16), np.float32)})[0].shape == (3, 512)
    assert {i.name: i.shape for i in net.get_inputs()} == {"visual": ["N", 6, 320, 320], "audio": ["N", 32, 16, 16]}
    out = net.run(None, {"visual": np.random.rand(1, 6, 320, 320).astype(np.float32),
                         "audio": np.random.rand(1, 32, 16, 16).astype(np.float32)})[0]
    assert out.shape == (1, 3, 320, 320) and 0 <= out.min() and out.max() <= 1


def test_bench_refuses_a_json_file_that_cannot_be_written_before_work(tmp_path):
    (tmp_path / "a-file").write_text("")
    for target, message in ((tmp_path, "is a directory"), (tmp_path / "a-file" / "b.json", "is a file, not a folder")):
        result = runner.invoke(app, ["bench", "--device", "cpu", "--json", str(target)])
        assert result.exit_code == 2 and message in result.stderr and "timing" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--in-flight", "1,x"], "--in-flight must be a list"),
    (["--in-flight", "0,2"], "--in-flight must be a list"),
    (["--io-binding", "yes"], "--io-binding must be auto, on or off"),
    (["--device-graphs", "gpu"], "--device-graphs must be auto, on or off"),
    (["--blend", "soft"], "blend must be match, feather or hard"),
])
def test_bench_refuses_bad_switches_before_work(args, message):
    result = runner.invoke(app, ["bench", "--device", "cpu", *args])
    assert result.exit_code == 2 and message in result.stderr and "timing" not in result.stderr
