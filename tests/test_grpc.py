"""`monolithic.MonolithicService` with a real client on 127.0.0.1: every call through stubs generated from our
.proto and by hand on the wire; frames equal the offline render's within JPEG noise; the registry's numbers
move; concurrent batches equal serial ones; a slow load stalls no other model; every malformed request is
answered with success=false and a one-line error, and the server goes on."""

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import grpc
import numpy as np
import pytest
import soundfile as sf

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.frames.crops import fill_visual_input
from lipsync_cli.runtime import Runtime, RuntimeConfig
from lipsync_cli.serve.rpc import monolithic_pb2 as pb

from .grpc_helpers import SlowFor, alice_named, field, grpc_server, int32, jpeg_i420, parse, raw_call, stub
from .live_helpers import rendered
from .models import character_with, load, nan_output

SLOW = 2.0  # seconds the slow character's sessions take to create
CLIP = 10240  # 640 ms at 16 kHz: 16 frames at 25 fps


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpc-characters")
    alice_named(root, "alice")
    slow = alice_named(root, "slow")
    character_with(root, "broken", unet=nan_output(load("unet")))
    return root, slow


@pytest.fixture(scope="module")
def served(folders):
    root, slow = folders
    with Runtime(RuntimeConfig(devices="cpu"), session_creator=SlowFor(slow, SLOW)) as runtime:
        with grpc_server(runtime, root) as (running, channel):
            yield runtime, stub(channel), channel, root


def clip(seed, samples=CLIP):
    return speech_like(samples / 16000, seed=seed).astype("<f4")[:samples]


def batch(audio, model="alice", size=16, **kw):
    return pb.CompositeBatchRequest(model_id=model, raw_audio=np.asarray(audio, "<f4").tobytes(), batch_size=size,
                                    **kw)


def facts(client, name="alice"):
    return next(m for m in client.GetModelStats(pb.GetModelStatsRequest()).models if m.model_id == name)


def assert_like_offline(frames, reference, limit=2.5):
    assert len(frames) <= len(reference)
    for j, data in enumerate(frames):
        error = np.abs(jpeg_i420(data).astype(int) - reference[j].astype(int)).mean()
        assert error < limit, (j, error)


def test_every_call_through_the_stubs(served, tmp_path):
    runtime, client, _, root = served
    health = client.Health(pb.HealthRequest())
    assert health.healthy and health.max_models == 0 and list(health.gpu_ids) == [] and \
        list(health.gpu_memory_used_gb) == []
    names = {m.model_id: m for m in client.ListModels(pb.ListModelsRequest()).models}
    assert sorted(names) == ["alice", "broken", "slow"]
    before = facts(client)

    x = clip(1)
    path = tmp_path / "clip.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    reply = client.InferBatchComposite(batch(x), timeout=60)
    assert reply.success and reply.error == "" and reply.gpu_id == -1, reply.error
    assert len(reply.composited_frames) == 16
    assert all(jpeg_i420(f).shape == (720 * 3 // 2, 1280) for f in reply.composited_frames)  # the template's size
    assert reply.total_time_ms >= reply.inference_time_ms > 0 and reply.composite_time_ms > 0
    assert reply.audio_processing_ms > 0
    after = facts(client)
    assert after.loaded and after.request_count == before.request_count + 1 and after.memory_mb > 0
    assert after.total_inference_ms >= before.total_inference_ms and after.avg_inference_ms > 0
    assert abs(after.last_used_timestamp - time.time()) < 30
    listed = {m.model_id: m for m in client.ListModels(pb.ListModelsRequest()).models}["alice"]
    assert listed.loaded and listed.request_count == after.request_count and listed.avg_inference_ms > 0
    assert client.Health(pb.HealthRequest()).loaded_models >= 1
    reference = rendered(runtime.character(root / "alice"), path, runtime)  # a lease too: after the counts
    assert_like_offline(reply.composited_frames, reference)

    gpu = client.LoadModel(pb.LoadModelRequest(model_id="alice", preferred_gpu=0))
    assert gpu.success and gpu.gpu_id == -1
    assert gpu.error == "preferred_gpu 0 cannot be honoured (this server has no usable GPU): loaded on cpu"
    assert client.UnloadModel(pb.UnloadModelRequest(model_id="alice")).success
    assert not {m.model_id: m for m in client.ListModels(pb.ListModelsRequest()).models}["alice"].loaded
    again = client.UnloadModel(pb.UnloadModelRequest(model_id="alice"))
    assert not again.success and again.error == "alice is not loaded"
    loaded = client.LoadModel(pb.LoadModelRequest(model_id="alice", preferred_gpu=-1))
    assert loaded.success and loaded.error == "" and loaded.load_time_ms > 0
    assert facts(client).loaded and facts(client).request_count == after.request_count + 1  # the render, not the load


def test_sample_rate_is_honoured_as_the_file_loader_does(served, tmp_path):
    runtime, client, _, root = served
    x = speech_like(0.7, seed=4, rate=22050).astype("<f4")
    path = tmp_path / "clip22.wav"
    sf.write(path, x, 22050, subtype="FLOAT")
    reply = client.InferBatchComposite(batch(x, size=12, sample_rate=22050), timeout=60)
    assert reply.success, reply.error
    reference = rendered(runtime.character(root / "alice"), path, runtime)
    assert_like_offline(reply.composited_frames, reference)


def test_start_frame_idx_is_the_template_frame_modulo_its_length(served):
    runtime, client, _, root = served
    character = runtime.character(root / "alice")
    reply = client.InferBatchComposite(batch(clip(2), size=4, start_frame_idx=198), timeout=60)
    assert reply.success, reply.error
    with runtime.templates.open(character.template_spec) as template:
        def top(k):  # rows above every box: the template's own pixels
            return template.frame(k).i420[:200].astype(int)

        for j, data in enumerate(reply.composited_frames):
            got = jpeg_i420(data)[:200].astype(int)
            right, ping_pong = (198 + j) % 200, character.template_spec.index(198 + j)
            error = np.abs(got - top(right)).mean()
            assert error < 1.0, (j, error)
            if j >= 2:  # frames 0 and 1, where ping-pong playback would show 198 and 197
                assert np.abs(got - top(ping_pong)).mean() > 3 * error, j


def test_the_clients_visual_input_gives_what_the_own_crops_give(served):
    runtime, client, _, root = served
    character = runtime.character(root / "alice")
    inner = character.crop.inner
    visual = np.empty((4, 6, inner, inner), np.float32)
    with runtime.templates.open(character.template_spec) as template:
        for j in range(4):
            fill_visual_input(visual[j], template.frame(10 + j).crop, character.input)
    x = clip(3)
    own = client.InferBatchComposite(batch(x, size=4, start_frame_idx=10), timeout=60)
    given = client.InferBatchComposite(batch(x, size=4, start_frame_idx=10, visual_frames=visual.astype("<f4")
                                             .tobytes()), timeout=60)
    assert own.success and given.success, (own.error, given.error)
    for a, b in zip(own.composited_frames, given.composited_frames, strict=True):
        assert np.abs(jpeg_i420(a).astype(int) - jpeg_i420(b).astype(int)).max() <= 2


def test_requests_encoded_by_hand_decode_the_same(served):
    _, client, channel, _ = served
    x = clip(5)
    wire = field(1, "alice") + field(3, x.tobytes()) + field(5, 8) + field(6, 3) + field(7, 16000)
    raw = raw_call(channel, "InferBatchComposite", wire)
    fields = parse(raw)
    ours = client.InferBatchComposite(batch(x, size=8, start_frame_idx=3, sample_rate=16000), timeout=60)
    assert fields[8] == [1] and 9 not in fields and int32(fields[10][0]) == -1  # success, no error, the CPU
    assert fields[1] == list(ours.composited_frames)  # byte for byte
    assert fields[2][0] > 0 and fields[4][0] >= fields[2][0]  # float inference and total times
    assert pb.CompositeBatchResponse.FromString(raw).composited_frames == ours.composited_frames

    listed = parse(raw_call(channel, "ListModels", b""))
    models = [parse(m) for m in listed[1]]
    assert sorted(m[1][0].decode() for m in models) == ["alice", "broken", "slow"]
    alice = next(m for m in models if m[1][0] == b"alice")
    assert alice[2] == [1] and int32(alice[3][0]) == -1 and alice[5][0] >= 1  # loaded, cpu, requests
    stats = [parse(m) for m in parse(raw_call(channel, "GetModelStats", b""))[1]]
    alice = next(m for m in stats if m[1][0] == b"alice")
    assert alice[8][0] > 1_700_000_000 and alice[7][0] > 0  # last use in unix seconds, mean ms
    health = parse(raw_call(channel, "Health", b""))
    assert health[1] == [1] and health[2][0] >= 1 and 4 not in health
    load = parse(raw_call(channel, "LoadModel", field(1, "alice") + field(2, -1)))
    assert load[1] == [1] and int32(load[3][0]) == -1
    bad = parse(raw_call(channel, "InferBatchComposite", field(1, "alice") + field(3, x.tobytes()) + field(5, 0)))
    assert 8 not in bad and bad[9] == [b"batch_size must be 1 to 32, not 0"]
    unload = parse(raw_call(channel, "UnloadModel", field(1, "nobody")))
    assert 1 not in unload and unload[2][0].startswith(b"unknown character 'nobody'")


def test_eight_concurrent_batches_equal_eight_serial_ones(served):
    _, client, _, _ = served
    requests = [batch(clip(10 + i), size=8, start_frame_idx=17 * i) for i in range(8)]
    serial = [client.InferBatchComposite(r, timeout=60) for r in requests]
    futures = [client.InferBatchComposite.future(r, timeout=120) for r in requests]
    concurrent = [f.result() for f in futures]
    for one, other in zip(serial, concurrent, strict=True):
        assert one.success and other.success, (one.error, other.error)
        assert list(one.composited_frames) == list(other.composited_frames)
    assert len({r.composited_frames[0] for r in serial}) == 8


def test_a_slow_load_stalls_no_request_for_another_model(served):
    _, client, _, _ = served
    assert client.InferBatchComposite(batch(clip(6), size=4), timeout=60).success  # alice is loaded
    client.UnloadModel(pb.UnloadModelRequest(model_id="slow"))
    loading = client.LoadModel.future(pb.LoadModelRequest(model_id="slow", preferred_gpu=-1), timeout=60)
    waiting = [client.InferBatchComposite.future(batch(clip(20 + i), model="slow", size=2), timeout=60)
               for i in range(2)]  # as many as batches run at once: they wait for the load, not in the batches' way
    time.sleep(0.3)
    took = []
    for i in range(3):
        started = time.monotonic()
        reply = client.InferBatchComposite(batch(clip(7 + i), size=4), timeout=60)
        took.append(time.monotonic() - started)
        assert reply.success, reply.error
        assert client.Health(pb.HealthRequest()).healthy
        assert len(client.ListModels(pb.ListModelsRequest()).models) == 3
    assert not loading.done() and not any(w.done() for w in waiting), "the load ended first: the test proves nothing"
    load = loading.result()
    assert load.success and load.load_time_ms >= SLOW * 1000 * 0.9
    for future in waiting:
        reply = future.result()
        assert reply.success and reply.model_loaded and reply.model_load_time_ms >= SLOW * 1000 * 0.8
    assert max(took) < SLOW / 2, took


MALFORMED = {
    "batch_size 0": (dict(size=0), "batch_size must be 1 to 32, not 0"),
    "batch_size 33": (dict(size=33), "batch_size must be 1 to 32, not 33"),
    "visual size": (dict(size=2, visual_frames=np.zeros((2, 6, 312, 312), "<f4").tobytes()),
                    r"visual_frames must be batch_size x 6x320x320 float32 for alice \(4915200 bytes for 2 frames\), "
                    r"not 4672512 bytes"),
    "audio not float32s": (dict(raw=b"\x00" * 4001), "raw_audio must hold whole float32 values: 4001 bytes is not a "
                           "multiple of 4"),
    "NaN audio": (dict(raw=np.full(CLIP, np.nan, "<f4").tobytes()), "raw_audio contains NaN or infinite values"),
    "no audio": (dict(raw=b""), r"raw_audio is empty \(and no audio_features were sent\)"),
    "audio too short": (dict(raw=clip(0, 3200).tobytes()), "raw_audio holds 200 ms at 16000 Hz: 5 frame"),
    "audio too long": (dict(raw=np.zeros(16000 * 11, "<f4").tobytes()), "raw_audio holds 11.0 s; a request is "
                       "limited to 10 s"),
    "sample rate": (dict(sample_rate=1000), "sample_rate must be 8000 to 48000 Hz"),
    "negative start": (dict(start_frame_idx=-1), "start_frame_idx must be 0 or more, not -1"),
    "audio_features size": (dict(raw=b"", audio_features=np.zeros((16, 511), "<f4").tobytes()),
                            r"audio_features must be batch_size x \[512\] float32 \(32768 bytes for 16 frames\), "
                            "not 32704 bytes"),
    "audio and features": (dict(audio_features=np.zeros((16, 512), "<f4").tobytes()),
                           "send raw_audio or audio_features, not both"),
    "unknown model": (dict(model="nobody"), "unknown character 'nobody': this server offers alice, broken, slow"),
    "a path as model": (dict(model="../alice"), "unknown character '../alice'"),
    "model fails at run time": (dict(model="broken"), r"model_best.onnx: the UNet produced NaN at frame 0"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_every_malformed_request_gets_a_one_line_error_and_the_server_goes_on(served, case):
    _, client, _, _ = served
    kw, message = MALFORMED[case]
    kw = dict(kw)
    raw = kw.pop("raw", None)
    request = batch(clip(8), **kw)
    if raw is not None:
        request.raw_audio = raw
    reply = client.InferBatchComposite(request, timeout=60)  # status OK: a failed call would raise here
    assert not reply.success and not reply.composited_frames
    assert "\n" not in reply.error and re.search(message, reply.error), reply.error
    assert client.Health(pb.HealthRequest()).healthy
    assert client.InferBatchComposite(batch(clip(9), size=2), timeout=60).success


def quantisers(jpeg: bytes) -> bytes:
    """The first quantisation table (the JPEG quality's fingerprint)."""
    at = jpeg.index(b"\xff\xdb")
    return jpeg[at : at + 2 + int.from_bytes(jpeg[at + 2 : at + 4], "big")]


def reference_jpeg(quality):
    return cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def test_audio_features_instead_of_audio_and_the_jpeg_quality(served, folders):
    _, client, _, _ = served
    root, _ = folders
    x = clip(12)
    features = np.zeros((4, 512), "<f4").tobytes()
    with Runtime(RuntimeConfig(devices="cpu")) as runtime:
        with grpc_server(runtime, root, jpeg_quality=40) as (_, channel):
            rough = stub(channel).InferBatchComposite(batch(x, size=4), timeout=60)
            given = stub(channel).InferBatchComposite(pb.CompositeBatchRequest(
                model_id="alice", audio_features=features, batch_size=4), timeout=60)
    fine = client.InferBatchComposite(batch(x, size=4), timeout=60)
    assert rough.success and fine.success and given.success, (rough.error, given.error)
    assert quantisers(rough.composited_frames[0]) == quantisers(reference_jpeg(40))
    assert quantisers(fine.composited_frames[0]) == quantisers(reference_jpeg(75))
    assert len(given.composited_frames) == 4 and given.audio_processing_ms < 50


def test_a_full_queue_says_server_busy(folders):
    root, slow = folders
    with Runtime(RuntimeConfig(devices="cpu"), session_creator=SlowFor(slow, SLOW)) as runtime:
        with grpc_server(runtime, root, grpc_queue=1) as (_, channel):
            client = stub(channel)
            first = client.InferBatchComposite.future(batch(clip(1), model="slow", size=2), timeout=60)
            time.sleep(0.5)  # the first is loading its model
            busy = client.InferBatchComposite(batch(clip(2), size=2), timeout=60)
            assert not busy.success and busy.error == ("server busy: 1 batches in flight or waiting (the limit is "
                                                       "1); try again later")
            assert first.result().success
            assert client.InferBatchComposite(batch(clip(2), size=2), timeout=60).success


def test_unloading_a_model_in_use_is_refused(served):
    runtime, client, _, root = served
    character = runtime.character(root / "alice")
    release = threading.Event()

    def hold():
        with runtime.registry.lease((character.audio_encoder, character.model), runtime.devices()[0][0]):
            release.wait(30)

    with ThreadPoolExecutor(1) as pool:
        holding = pool.submit(hold)
        time.sleep(0.3)
        refused = client.UnloadModel(pb.UnloadModelRequest(model_id="alice"))
        release.set()
        holding.result()
    assert not refused.success and re.fullmatch(r"alice is in use \(1 lease\(s\) on cpu\): it can be unloaded once "
                                                r"they end", refused.error), refused.error
    assert client.UnloadModel(pb.UnloadModelRequest(model_id="alice")).success


def test_errors_never_become_grpc_failures_except_a_missing_token(folders):
    root, _ = folders
    with Runtime(RuntimeConfig(devices="cpu")) as runtime:
        with grpc_server(runtime, root, token="grpc-token-123") as (_, channel):
            client = stub(channel)
            with pytest.raises(grpc.RpcError) as denied:
                client.Health(pb.HealthRequest())
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization: Bearer TOKEN" in denied.value.details()
            with pytest.raises(grpc.RpcError):
                client.Health(pb.HealthRequest(), metadata=[("authorization", "Bearer wrong-token")])
            good = [("authorization", "Bearer grpc-token-123")]
            assert client.Health(pb.HealthRequest(), metadata=good).healthy
