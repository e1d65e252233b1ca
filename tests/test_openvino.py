"""OpenVINO, the second backend, behind the registry's one session interface: float32 frames equal onnxruntime's
within 1 level (alice, and the realistic pair's shapes), the precision hint really applied, leases and batching
as for onnxruntime, live sessions on it, `doctor` lists its devices, a device it lacks is refused. Real OpenVINO
(the nox tests session installs the extra)."""

from __future__ import annotations

import json
import threading
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from lipsync_cli.audio.loading import read_audio
from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.bench.realistic import realistic_character
from lipsync_cli.cli.app import app
from lipsync_cli.compositing.blend import to_uint8
from lipsync_cli.live import LiveSession
from lipsync_cli.models.devices import CPU, DeviceRequest, openvino_device, parse_device
from lipsync_cli.models.inference import shrink_next
from lipsync_cli.models.sessions import SessionMaker
from lipsync_cli.runtime import Runtime, RuntimeConfig

from .conftest import ALICE, REPO
from .live_helpers import FakeClock, options, rendered, take
from .models import FITTED_UNET

pytest.importorskip("openvino", reason="needs the openvino extra (nox -s tests installs it)")
OPENVINO = openvino_device("CPU")
runner = CliRunner()


def levels(patches: np.ndarray) -> np.ndarray:
    return np.stack([to_uint8(p) for p in patches]).astype(np.int16)


def test_openvino_float32_frames_equal_onnxruntime_on_alice(runtime, write_audio):
    audio = write_audio(speech_like(1.0, seed=8))
    character = runtime.character(ALICE)
    on_cpu = rendered(character, audio, runtime)
    with Runtime(RuntimeConfig(devices="openvino")) as ov:
        from lipsync_cli.audio.loading import probe_audio
        from lipsync_cli.render.pipeline import PipelineOptions, render_frames

        frames = render_frames(character, probe_audio(audio), PipelineOptions(device=OPENVINO, batch_size=3), ov)
        on_openvino = [f.copy() for f in frames]  # batch 3: the last call is short
        stats = ov.registry.stats()
    assert len(on_cpu) == len(on_openvino) == 25
    diff = np.abs(np.stack(on_cpu).astype(np.int16) - np.stack(on_openvino))
    assert diff.max() <= 1, diff.max()
    assert [(s.device, s.frames, s.loads) for s in stats] == [("openvino", 25, 1)]


def test_openvino_float32_equals_onnxruntime_on_the_realistic_shapes():
    folder = realistic_character()
    rng = np.random.default_rng(1)
    visual = rng.random((2, 6, 320, 320), dtype=np.float32)
    features = rng.standard_normal((2, 32, 16, 16)).astype(np.float32)
    mel = rng.uniform(-4, 4, (3, 1, 80, 16)).astype(np.float32)
    make = SessionMaker(2)
    unet = {"visual": visual, "audio": features}
    outputs = {}
    for device in (CPU, OPENVINO):
        u, e = make(folder / "model_best.onnx", device), make(folder / "audio_encoder.onnx", device)
        outputs[device] = (u.run(None, unet)[0], e.run(None, {e.get_inputs()[0].name: mel})[0])
    (unet_cpu, enc_cpu), (unet_ov, enc_ov) = outputs[CPU], outputs[OPENVINO]
    assert unet_ov.shape == (2, 3, 320, 320) and enc_ov.shape == (3, 512)
    assert np.abs(levels(unet_cpu) - levels(unet_ov)).max() <= 1
    np.testing.assert_allclose(enc_ov, enc_cpu, rtol=1e-3, atol=1e-3 * np.abs(enc_cpu).max())


def test_the_precision_hint_is_applied_and_part_of_the_registry_key():
    from lipsync_cli.models.backends.openvino import devices

    if "BF16" not in devices()[0].capabilities:
        pytest.skip("this CPU has no bfloat16 arithmetic")
    files = (ALICE / "audio_encoder.onnx", FITTED_UNET)  # a trained-looking model: stable under bfloat16
    rng = np.random.default_rng(2)
    feeds = {"visual": rng.random((1, 6, 320, 320), dtype=np.float32),
             "audio": rng.random((1, 512), dtype=np.float32)}
    with Runtime(RuntimeConfig(devices="openvino")) as runtime:
        with runtime.registry.lease(files, OPENVINO) as f32, runtime.registry.lease(files, OPENVINO,
                                                                                      precision="bf16") as bf16:
            assert f32.sessions[1] is not bf16.sessions[1]
            assert bf16.sessions[1].get_providers() == ["OpenVINO CPU (bf16)"]
            a, b = f32.sessions[1].run(None, feeds)[0], bf16.sessions[1].run(None, feeds)[0]
        assert len(runtime.registry.loaded()) == 2
    assert 0 < np.abs(a - b).max() < 0.05  # computed in bfloat16: close, not equal


def test_concurrent_calls_share_one_compiled_model_and_get_their_own_results():
    session = SessionMaker(1)(ALICE / "model_best.onnx", OPENVINO)
    rng = np.random.default_rng(3)
    inputs = [{"visual": rng.random((2, 6, 320, 320), dtype=np.float32),
               "audio": rng.standard_normal((2, 512)).astype(np.float32)} for _ in range(4)]
    alone = [session.run(["mouth"], feeds)[0] for feeds in inputs]
    together: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        for _ in range(3):
            together[i] = session.run(["mouth"], inputs[i])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(alone[i], together[i]) for i in range(4))


def test_a_live_session_on_openvino_makes_the_frames_of_a_render(runtime, write_audio):
    audio = write_audio(speech_like(0.8, seed=9))
    character = runtime.character(ALICE)
    reference = rendered(character, audio, runtime)
    with Runtime(RuntimeConfig(devices="openvino")) as ov:
        live = replace(options(start="first_audio"), device=parse_device("openvino"))
        with LiveSession(ov, character, live, clock=FakeClock()) as session:
            assert str(session.device) == "openvino"
            session.push(read_audio(audio))
            session.flush()
            frames = take(session, len(reference))
    diff = max(int(np.abs(f.image.astype(np.int16) - r).max()) for f, r in zip(frames, reference, strict=True))
    assert diff <= 1


def test_models_on_openvino_run_after_lipsync_serve_asks_the_arenas_to_shrink():
    # when a session ends, lipsync serve asks every model's arena to shrink at its next call (onnxruntime's
    # run options); a model on OpenVINO has no such arena and must run on as before
    rng = np.random.default_rng(4)
    visual, audio = rng.random((1, 6, 320, 320), dtype=np.float32), rng.standard_normal((1, 512)).astype(np.float32)
    with Runtime(RuntimeConfig(devices="openvino")) as ov:
        live = replace(options(), device=parse_device("openvino"))
        with LiveSession(ov, ov.character(ALICE), live, clock=FakeClock()):
            (scheduler,) = ov.shared_objects()
            unet = scheduler.renderer.unet
            before = unet.generate(visual, audio)
            shrink_next(ov.registry.sessions())
            assert np.array_equal(unet.generate(visual, audio), before)


def test_doctor_lists_openvino_devices_and_a_missing_device_is_refused(tmp_path):
    result = runner.invoke(app, ["doctor", "--json"])
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["OpenVINO"]["status"] == "ok" and "devices CPU" in checks["OpenVINO"]["found"]
    assert "FP32" in checks["device openvino"]["found"]
    result = runner.invoke(app, ["render", str(REPO / "samples" / "hello.wav"), "-c", "alice", "-o",
                                 str(tmp_path / "x.mp4"), "--device", "openvino:NPU9"])
    assert result.exit_code == 2 and not (tmp_path / "x.mp4").exists()
    assert result.stderr.startswith("lipsync: error: openvino:NPU9 cannot be used: OpenVINO finds no NPU9 device "
                                    "here (its devices: CPU") and len(result.stderr.strip().splitlines()) == 1
    assert parse_device("openvino:gpu") == DeviceRequest("openvino", 0, "GPU")
