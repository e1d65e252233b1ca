"""`lipsync.v1.Live/Stream` with a real client: the same frames and audio as the WebSocket for the same audio,
interrupts, stats, the refusals with their codes; the standard health service and server reflection."""

import json
import queue
import socket
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from websockets.sync.client import connect

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.runtime import Runtime, RuntimeConfig
from lipsync_cli.serve.protocol import parse_frame
from lipsync_cli.serve.rpc import live_pb2 as pb
from lipsync_cli.serve.rpc import live_pb2_grpc

from .conftest import REPO
from .grpc_helpers import grpc_server, jpeg_i420
from .serve_helpers import pcm16, start_message, ws_url

CHARACTERS = REPO / "characters"


@pytest.fixture(scope="module")
def live_server():
    with Runtime(RuntimeConfig(devices="cpu")) as runtime:
        with grpc_server(runtime, CHARACTERS, max_sessions=2) as (running, channel):
            yield running, channel


class Stream:
    """A Live/Stream call whose messages the test sends one by one."""

    def __init__(self, channel, timeout=60):
        self.outgoing: queue.Queue = queue.Queue()
        self.call = live_pb2_grpc.LiveStub(channel).Stream(iter(self.outgoing.get, None), timeout=timeout)
        self.replies = iter(self.call)

    def send(self, **message):
        self.outgoing.put(pb.ClientMessage(**message))

    def start(self, character="alice", codec="jpeg", **kw):
        self.send(start=pb.Start(character=character, audio_format="s16le", rate=16000, codec=codec, **kw))

    def next(self):
        return next(self.replies)

    def end(self):
        """Stop, read what is left, and return the call's status."""
        self.send(stop=pb.Stop())
        self.outgoing.put(None)
        rest = list(self.replies)
        return self.call.code(), rest

    def refused(self, close=True):
        """Every message until the call ends with an error: (the Error message, the status). `close`: end
        the client's side first (the server may see that as a stop once nothing else is wrong)."""
        if close:
            self.outgoing.put(None)
        errors = []
        with pytest.raises(grpc.RpcError) as ended:
            for message in self.replies:
                if message.WhichOneof("kind") == "error":
                    errors.append(message.error)
        assert len(errors) == 1
        return errors[0], ended.value.code()


def over_grpc(channel, x, chunk=640):
    stream = Stream(channel)
    stream.start()
    ready = stream.next().ready
    pcm = pcm16(x)
    for a in range(0, len(pcm), 2 * chunk):
        stream.send(audio=pb.Audio(pcm=pcm[a : a + 2 * chunk]))
    stream.send(flush=pb.Flush())
    frames = []
    while sum(1 for f in frames if f.speech) < int(np.ceil(len(x) * 25 / 16000)):
        message = stream.next()
        if message.WhichOneof("kind") == "frame":
            frames.append(message.frame)
    status, _ = stream.end()
    assert status == grpc.StatusCode.OK
    return ready, [(f.index, f.speech, f.video, f.audio) for f in frames]


def over_websocket(running, x, chunk=640):
    with connect(ws_url(running), open_timeout=30) as ws:
        ws.send(start_message(codec="jpeg"))
        ready = json.loads(ws.recv(timeout=30))
        pcm = pcm16(x)
        for a in range(0, len(pcm), 2 * chunk):
            ws.send(pcm[a : a + 2 * chunk])
        ws.send(json.dumps({"type": "flush"}))
        frames = []
        while sum(1 for f in frames if f[1]) < int(np.ceil(len(x) * 25 / 16000)):
            data = ws.recv(timeout=30)
            if isinstance(data, bytes):
                header, video, audio = parse_frame(data)
                frames.append((header.index, header.speech, video, audio))
        ws.send(json.dumps({"type": "stop"}))
    return ready, frames


def speech_part(frames):
    speech = [i for i, f in enumerate(frames) if f[1]]
    assert speech == list(range(speech[0], speech[0] + len(speech)))
    return speech[0], frames[speech[0] :]


def test_the_stream_gives_the_websockets_frames_and_audio(live_server):
    running, channel = live_server
    x = speech_like(1.2, seed=31)
    ready, frames = over_grpc(channel, x)
    ws_ready, ws_frames = over_websocket(running, x)
    assert (ready.fps, ready.width, ready.height, ready.codec, ready.audio_rate) == \
        (ws_ready["fps"], ws_ready["width"], ws_ready["height"], ws_ready["codec"], ws_ready["audio_rate"])
    assert [f[0] for f in frames] == list(range(len(frames)))
    first, speech = speech_part(frames)
    ws_first, ws_speech = speech_part(ws_frames)
    sent = np.frombuffer(pcm16(x), "<i2")
    for part in (speech, ws_speech):
        audio = np.frombuffer(b"".join(f[3] for f in part), "<i2")
        assert np.array_equal(audio[: len(sent)], sent)
    fade = 3  # both begin after idle frames, so both fade in from the template
    assert first > 0 and ws_first > 0
    for (_, _, video, _), (_, _, ws_video, _) in list(zip(speech, ws_speech, strict=False))[fade:]:
        error = np.abs(jpeg_i420(video).astype(int) - jpeg_i420(ws_video).astype(int)).mean()
        assert error < 0.5, error


def test_a_start_may_ask_for_the_audio_back_at_its_own_rate(live_server):
    _, channel = live_server
    stream = Stream(channel)
    stream.send(start=pb.Start(character="alice", audio_format="s16le", rate=24000, return_rate=24000, codec="jpeg"))
    assert stream.next().ready.audio_rate == 24000
    x = speech_like(0.4, rate=24000, seed=33)
    stream.send(audio=pb.Audio(pcm=pcm16(x)))
    stream.send(flush=pb.Flush())
    frames = []
    while sum(f.speech for f in frames) < 10:
        message = stream.next()
        if message.WhichOneof("kind") == "frame":
            frames.append(message.frame)
    stream.end()
    assert all(len(f.audio) == 960 * 2 for f in frames)
    speech = b"".join(f.audio for f in frames if f.speech)
    assert speech[: len(pcm16(x))] == pcm16(x)


def test_interrupt_and_stats_over_the_stream(live_server):
    _, channel = live_server
    stream = Stream(channel)
    stream.start()
    assert stream.next().WhichOneof("kind") == "ready"
    pcm = pcm16(speech_like(3.0, seed=32))
    stream.send(audio=pb.Audio(pcm=pcm[:32000]))
    stream.send(audio=pb.Audio(pcm=pcm[32000:64000]))
    seen, interrupted, stats, asked = [], None, [], False
    ends = time.monotonic() + 30
    while time.monotonic() < ends and (interrupted is None or not stats or seen[-1].generation == 0):
        message = stream.next()
        kind = message.WhichOneof("kind")
        if kind == "frame":
            seen.append(message.frame)
            if sum(f.speech for f in seen) >= 5 and not asked:
                stream.send(interrupt=pb.Interrupt())
                asked = True
        elif kind == "interrupted":
            interrupted = message.interrupted
        elif kind == "stats":
            stats.append(message.stats)
    assert interrupted is not None and interrupted.generation == 1
    after = [f for f in seen if f.generation == 1]
    assert after and after[0].index == interrupted.first_frame and not after[0].speech
    assert stats and stats[-1].frames_sent > 0 and stats[-1].speech_frames >= 5
    status, _ = stream.end()
    assert status == grpc.StatusCode.OK


REFUSED = {
    "unknown character": (lambda s: s.start("nobody"), 1008, grpc.StatusCode.INVALID_ARGUMENT,
                          "unknown character 'nobody': this server offers alice"),
    "a path": (lambda s: s.start("../alice"), 1008, grpc.StatusCode.INVALID_ARGUMENT, "character must be a name"),
    "audio first": (lambda s: s.send(audio=pb.Audio(pcm=b"\x00\x00")), 1008, grpc.StatusCode.INVALID_ARGUMENT,
                    "the first message must be a start, not audio"),
    "bad codec": (lambda s: s.start(codec="vp9"), 1008, grpc.StatusCode.INVALID_ARGUMENT,
                  "video codec must be h264 or jpeg, not 'vp9'"),
    "odd bytes": (lambda s: (s.start(), s.send(audio=pb.Audio(pcm=b"\x00" * 3))), 1008,
                  grpc.StatusCode.INVALID_ARGUMENT, "an audio message must hold whole s16le samples"),
    "over a second": (lambda s: (s.start(), s.send(audio=pb.Audio(pcm=b"\x00" * 32002))), 1009,
                      grpc.StatusCode.INVALID_ARGUMENT, "an audio message is limited to 1 s"),
    "latency too low": (lambda s: s.start(latency_ms=10), 1008, grpc.StatusCode.INVALID_ARGUMENT,
                        "latency 10 ms is below what alice needs"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refusals_carry_the_websockets_code_and_a_grpc_status(live_server, case):
    _, channel = live_server
    act, code, status, message = REFUSED[case]
    stream = Stream(channel)
    act(stream)
    error, ended = stream.refused()
    assert (error.code, ended) == (code, status) and error.message.startswith(message), error.message


def test_admission_is_the_websockets(live_server):
    _, channel = live_server
    streams = [Stream(channel), Stream(channel)]
    for stream in streams:
        stream.start()
        assert stream.next().WhichOneof("kind") == "ready"
    third = Stream(channel)
    third.start()
    error, status = third.refused()
    assert error.code == 1013 and status == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.message == "at capacity: 2 of 2 sessions; try again later"
    for stream in streams:
        assert stream.end()[0] == grpc.StatusCode.OK


def test_health_reports_serving_and_reflection_lists_the_services(live_server):
    _, channel = live_server
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "monolithic.MonolithicService", "lipsync.v1.Live"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
            health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    (listed,) = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for s in listed.list_services_response.service}
    assert {"monolithic.MonolithicService", "lipsync.v1.Live", "grpc.health.v1.Health"} <= names
    asked = reflection_pb2.ServerReflectionRequest(file_containing_symbol="monolithic.MonolithicService")
    (described,) = reflection.ServerReflectionInfo(iter([asked]))
    assert described.file_descriptor_response.file_descriptor_proto


def test_health_needs_no_token_where_everything_else_does():
    with Runtime(RuntimeConfig(devices="cpu")) as runtime:
        with grpc_server(runtime, CHARACTERS, token="grpc-token-123") as (_, channel):
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
            stream = Stream(channel)
            stream.start()
            stream.outgoing.put(None)
            with pytest.raises(grpc.RpcError) as denied:
                list(stream.replies)
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
            good = live_pb2_grpc.LiveStub(channel).Stream(
                iter([pb.ClientMessage(start=pb.Start(character="alice", codec="jpeg"))]),
                metadata=[("authorization", "Bearer grpc-token-123")], timeout=30)
            assert next(iter(good)).WhichOneof("kind") == "ready"
            good.cancel()


def test_a_drain_turns_health_not_serving_and_ends_a_stream_with_going_away():
    with Runtime(RuntimeConfig(devices="cpu")) as runtime:
        with grpc_server(runtime, CHARACTERS) as (running, channel):
            stream = Stream(channel)
            stream.start()
            assert stream.next().WhichOneof("kind") == "ready"
            assert stream.next().WhichOneof("kind") == "frame"
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
            running.server.manager.draining.set()  # what stop() and SIGTERM do first
            statuses = []
            for _ in range(100):  # a load balancer asking meanwhile hears NOT_SERVING, long before the port closes
                statuses.append(health.Check(health_pb2.HealthCheckRequest(service="lipsync.v1.Live")).status)
                if statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                time.sleep(0.02)
            error, status = stream.refused(close=False)
            stream.outgoing.put(None)
    assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
    assert (error.code, status, error.message) == (1001, grpc.StatusCode.UNAVAILABLE, "the server is shutting down")


def test_serve_refuses_a_grpc_port_in_use_in_one_line():
    with socket.socket() as taken, socket.socket() as free:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        free.bind(("127.0.0.1", 0))
        port, http = taken.getsockname()[1], free.getsockname()[1]
        free.close()
        done = subprocess.run([sys.executable, "-m", "lipsync_cli", "serve", "--port", str(http), "--grpc-port",
                               str(port), "--devices", "cpu"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    last = done.stderr.splitlines()[-1]
    assert last == f"lipsync: error: the gRPC port 127.0.0.1:{port} cannot be listened on (in use?)"
    assert "lipsync serve: http://" not in done.stderr  # nothing was announced
