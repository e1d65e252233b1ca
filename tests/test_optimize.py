"""`lipsync characters optimize` and `--precision`: a variant is checked against the float models before it is
kept, a model that quantises badly is refused with its figure, and renders use only checked, unchanged variants.

The quality gate runs on a model whose activations look trained (tests/data/fitted_unet.onnx: a small UNet fitted
to reproduce alice, scripts/make_fitted_unet.py). Real onnxruntime, onnxruntime.quantization and OpenVINO."""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from lipsync_cli.audio.loading import probe_audio
from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.characters.manifest import load_character
from lipsync_cli.cli.app import app
from lipsync_cli.errors import DeviceError, InputError
from lipsync_cli.models.devices import CPU, DeviceRequest
from lipsync_cli.optimize import OptimizeOptions, optimize
from lipsync_cli.render.pipeline import PipelineOptions, render_frames
from lipsync_cli.render.precision import resolve_models
from lipsync_cli.runtime import Runtime, RuntimeConfig

from .conftest import ALICE, REPO
from .models import fitted_character

runner = CliRunner()
SMALL = {"calibration_frames": 24, "check_frames": 12}
CPU_REQUEST = DeviceRequest("cpu")
# sha256 of every I420 frame of alice speaking samples/hello.wav (CPU, batch 4, blend match), computed with the code
# before variants existed (commit d058b2b); a character without variants must still render exactly these bytes
ALICE_HELLO_SHA256 = "6e1866679e0e05db36195e56c0a63eb2b041e10fd3e5b1d0500a53b3acb93f34"


def has_openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def frames_of(runtime, character, audio, device):
    out = render_frames(character, probe_audio(audio), PipelineOptions(device=device, batch_size=4), runtime)
    try:
        return [f.copy() for f in out]
    finally:
        out.close()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A fitted character with its int8 variant for onnxruntime, made once for the module."""
    folder = fitted_character(tmp_path_factory.mktemp("fitted") / "fitted")
    outcome = optimize(folder, OptimizeOptions("int8", "onnxruntime", **SMALL))
    return folder, outcome


def test_the_int8_variant_of_a_fitted_model_passes_and_renders_within_its_psnr(fitted, write_audio):
    folder, outcome = fitted
    variant = outcome.variant
    assert variant.passed and not variant.forced and variant.quality is not None
    q = variant.quality
    assert q.psnr_db >= 40 and q.frames == SMALL["check_frames"] and 0.95 <= q.sync <= 1.0, q
    assert q.max_diff > 0  # int8 is not float32: the check compared two different models
    int8 = folder / variant.model
    assert re.fullmatch(r"model_best\.int8\.[0-9a-f]{12}\.onnx", variant.model)
    assert hashlib.sha256(int8.read_bytes()).hexdigest() == variant.model_sha256
    ops = {n.op_type for n in __import__("onnx").load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ
    assert load_character(folder).variants == (variant,)  # named in the manifest, read back the same

    audio = write_audio(speech_like(1.5, seed=4))
    with Runtime(RuntimeConfig(devices="cpu")) as runtime:
        character = runtime.character(folder)
        chosen = resolve_models(runtime, character, CPU_REQUEST, "auto")
        assert chosen.precision == "int8" and chosen.character.model == int8
        assert "int8 on onnxruntime" in chosen.note and f"{q.psnr_db:.1f} dB" in chosen.note
        plain = resolve_models(runtime, character, CPU_REQUEST, "fp32").character
        float_frames = frames_of(runtime, plain, audio, chosen.device)
        int8_frames = frames_of(runtime, chosen.character, audio, chosen.device)
    assert len(float_frames) == len(int8_frames) == 38
    box = character.boxes[0]
    rendered = psnr(np.stack([f[box[1]:box[3], box[0]:box[2]] for f in float_frames]),
                    np.stack([f[box[1]:box[3], box[0]:box[2]] for f in int8_frames]))
    # the stored figure predicts the render's (other frames, composited, colour-matched): within 3 dB, above the bar
    assert q.min_psnr_db <= rendered < math.inf and abs(rendered - q.psnr_db) <= 3, (rendered, q.psnr_db)


def test_a_model_that_quantises_badly_is_refused_with_its_figure_and_nothing_is_written(tmp_path, write_audio):
    folder = fitted_character(tmp_path / "outlier", outlier=True)
    good = fitted_character(tmp_path / "good")
    audio = write_audio(speech_like(1.0, seed=5))
    with Runtime(RuntimeConfig(devices="cpu")) as runtime:  # the outlier changes nothing in float32
        assert np.array_equal(np.stack(frames_of(runtime, runtime.character(folder), audio, CPU)),
                              np.stack(frames_of(runtime, runtime.character(good), audio, CPU)))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    command = ["characters", "optimize", str(folder), "--precision", "int8", "--calibration", str(audio)]
    result = runner.invoke(app, command)
    assert result.exit_code == 1, result.output
    line = result.stderr.strip().splitlines()[-1]
    figure = re.search(r"is ([\d.]+) dB from the float models' mouth, below the bar of 40 dB: nothing written", line)
    assert line.startswith("lipsync: error: outlier:") and figure and float(figure.group(1)) < 30, line
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no file, no manifest change
    assert not list(tmp_path.glob(".*.part")) and not list(folder.glob(".*"))

    result = runner.invoke(app, [*command, "--force"])  # kept, marked, and never chosen by auto
    assert result.exit_code == 0, result.output
    variant = load_character(folder).variants[0]
    assert variant.forced and not variant.passed and abs(variant.quality.psnr_db - float(figure.group(1))) <= 0.05
    with Runtime(RuntimeConfig(devices="cpu")) as runtime:
        character = runtime.character(folder)
        auto = resolve_models(runtime, character, CPU_REQUEST, "auto")
        assert auto.precision == "fp32" and auto.note is None
        asked = resolve_models(runtime, character, CPU_REQUEST, "int8")
        assert asked.precision == "int8" and "below its quality bar" in asked.note


def test_a_changed_or_unchecked_variant_is_refused(fitted, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(fitted[0], folder)
    variant = fitted[1].variant
    with open(folder / variant.model, "ab") as fh:
        fh.write(b"\0")  # tampered
    with Runtime(RuntimeConfig(devices="cpu")) as runtime:
        character = runtime.character(folder)
        with pytest.raises(InputError, match="has changed since the variant was checked"):
            resolve_models(runtime, character, CPU_REQUEST, "int8")
        auto = resolve_models(runtime, character, CPU_REQUEST, "auto")
        assert auto.precision == "fp32" and "int8 on onnxruntime variant is not used" in auto.note
    manifest = folder / "character.toml"
    text = manifest.read_text()
    manifest.write_text(text[: text.index("[variants.quality]")])  # a variant without figures: never checked
    with Runtime(RuntimeConfig(devices="cpu")) as runtime:
        with pytest.raises(InputError, match="never checked against the float models"):
            resolve_models(runtime, runtime.character(folder), CPU_REQUEST, "int8")


def test_an_int8_variant_is_refused_once_the_float_unet_it_was_made_from_is_replaced(fitted, tmp_path):
    import shutil

    from lipsync_cli.characters.variants import sha256_file

    folder = tmp_path / "copy"
    shutil.copytree(fitted[0], folder)
    character = load_character(folder)
    assert fitted[1].variant.source_sha256 == sha256_file(character.model)
    shutil.copyfile(ALICE / "model_best.onnx", character.model)  # new weights, the same contract
    with Runtime(RuntimeConfig(devices="cpu")) as runtime:
        character = runtime.character(folder)
        with pytest.raises(InputError, match="has changed since the variant was made from it"):
            resolve_models(runtime, character, CPU_REQUEST, "int8")
        auto = resolve_models(runtime, character, CPU_REQUEST, "auto")
        assert auto.precision == "fp32" and "made from it" in auto.note


def test_an_explicit_precision_the_character_lacks_or_the_device_cannot_run_is_refused(fitted, tmp_path):
    result = runner.invoke(app, ["render", str(REPO / "samples" / "hello.wav"), "-c", "alice", "-o",
                                 str(tmp_path / "x.mp4"), "--precision", "int8"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "lipsync: error: alice has no int8 variant (lipsync characters optimize makes " \
                                    "one) (--precision)"
    assert not (tmp_path / "x.mp4").exists()
    result = runner.invoke(app, ["render", str(REPO / "samples" / "hello.wav"), "-c", "alice", "--precision", "int4"])
    assert result.exit_code == 2 and "precision must be auto, fp32, int8, bf16 or fp16, not 'int4'" in result.stderr
    result = runner.invoke(app, ["characters", "optimize", str(fitted[0]), "--precision", "bf16"])
    assert result.exit_code == 2
    assert "onnxruntime has no bfloat16 execution for float models" in result.stderr.strip().splitlines()[-1]
    with Runtime(RuntimeConfig(devices="cpu")) as runtime:  # int8 checked on onnxruntime, asked of OpenVINO
        with pytest.raises(DeviceError, match="variant was checked on onnxruntime, not for openvino"):
            resolve_models(runtime, runtime.character(fitted[0]), DeviceRequest("openvino", 0, "CPU"), "int8")


def test_a_character_without_variants_renders_as_before_byte_for_byte():
    with Runtime(RuntimeConfig(devices="cpu", cache=False)) as runtime:
        character = runtime.character(ALICE)
        auto = resolve_models(runtime, character, DeviceRequest("auto"), "auto")
        assert (auto.character, auto.device.kind, auto.note) == (character, "cpu", None)  # OpenVINO or not
        digest = hashlib.sha256()
        for frame in frames_of(runtime, auto.character, REPO / "samples" / "hello.wav", auto.device):
            digest.update(frame.tobytes())
    assert digest.hexdigest() == ALICE_HELLO_SHA256, (
        f"alice's frames changed (onnxruntime {ort.__version__}): a character without variants must render as "
        "before")


@pytest.mark.skipif(not has_openvino(), reason="needs the openvino extra (nox -s tests installs it)")
def test_the_same_int8_file_is_checked_again_on_openvino_and_auto_prefers_it(fitted, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(fitted[0], folder)
    outcome = optimize(folder, OptimizeOptions("int8", "openvino", **SMALL))
    assert outcome.reused and outcome.variant.model == fitted[1].variant.model and outcome.variant.passed
    assert {(v.precision, v.backend) for v in load_character(folder).variants} == {("int8", "onnxruntime"),
                                                                                    ("int8", "openvino")}
    with Runtime(RuntimeConfig(devices="auto")) as runtime:
        chosen = resolve_models(runtime, runtime.character(folder), DeviceRequest("auto"), "auto")
        assert (str(chosen.device), chosen.precision) == ("openvino", "int8")  # the rule: OpenVINO int8 first
        cpu = resolve_models(runtime, runtime.character(folder), CPU_REQUEST, "auto")
        assert (str(cpu.device), cpu.precision) == ("cpu", "int8")  # an onnxruntime device keeps to onnxruntime


def test_the_job_list_takes_a_precision_column_and_a_capacity_holds_for_its_precision(tmp_path):
    import json

    from lipsync_cli.serve.config import ServeConfig

    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"audio,character,output,precision\n{REPO / 'samples' / 'hello.wav'},alice,a.mp4,fp32\n"
                    f"{REPO / 'samples' / 'hello.wav'},alice,b.mp4,int8\n")
    result = runner.invoke(app, ["batch", str(jobs), "--dry-run", "--output-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "alice has no int8 variant" in result.stderr and "would render" in result.stdout
    capacity = tmp_path / "capacity.json"
    capacity.write_text(json.dumps({"capacity": 2, "precision": "int8"}))
    assert ServeConfig(capacity=str(capacity), precision="int8").with_capacity().per_device == 2
    with pytest.raises(InputError, match="measured with precision int8, and this server runs auto"):
        ServeConfig(capacity=str(capacity)).with_capacity()


@pytest.mark.skipif(not has_openvino(), reason="needs the openvino extra (nox -s tests installs it)")
def test_an_optimised_copy_goes_to_its_own_folder_and_the_original_is_untouched(fitted, tmp_path):
    from lipsync_cli.models.backends.openvino import devices

    folder = fitted[0]
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    copy = tmp_path / "copy"
    if "BF16" not in devices()[0].capabilities:
        with pytest.raises(InputError, match="cannot compute in bf16"):
            optimize(folder, OptimizeOptions("bf16", "openvino", output=copy, **SMALL))
        assert not copy.exists()
        return
    outcome = optimize(folder, OptimizeOptions("bf16", "openvino", output=copy, **SMALL))
    assert outcome.folder == copy and outcome.variant.model == "model_best.onnx" and outcome.variant.passed
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    variants = load_character(copy).variants
    assert [(v.precision, v.backend) for v in variants] == [("int8", "onnxruntime"), ("bf16", "openvino")]
    assert (copy / fitted[1].variant.model).is_file()  # the copy has every file its variants name
    with pytest.raises(InputError, match="exists and is not an empty folder"):
        optimize(folder, OptimizeOptions("bf16", "openvino", output=copy, **SMALL))
