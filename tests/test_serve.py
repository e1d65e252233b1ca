"""`lipsync serve`'s WebSocket protocol v1 with a real client: frames equal the offline render's (within
codec noise), audio equals what was sent, every refusal has its message and close code, and no other session
misses a frame meanwhile; /metrics, /healthz, /readyz, /v1/characters."""

import json
import time
import urllib.error
import urllib.request

import av
import cv2
import numpy as np
import pytest
from websockets.sync.client import connect

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.serve.protocol import HEADER, parse_frame

from .live_helpers import rendered
from .serve_helpers import TOKEN, Healthy, pcm16, refusal, server, start_message, ws_url


@pytest.fixture(scope="module")
def main_server(shared_runtime):
    with server(shared_runtime, token=TOKEN, max_sessions=3) as running:
        yield running


@pytest.fixture(scope="module")
def speech_file(tmp_path_factory):
    import soundfile as sf

    path = tmp_path_factory.mktemp("ws") / "speech.wav"
    x = speech_like(1.6, seed=21)
    sf.write(path, x, 16000, subtype="PCM_16")
    return path, sf.read(path, dtype="float32")[0]


def stream_file(running, x, codec, chunk=640):
    """Send the audio in 40 ms messages as fast as the socket takes them, flush, and read the frames of the
    utterance and the fade after it."""
    with connect(ws_url(running, token=TOKEN), open_timeout=30) as ws:
        ws.send(start_message(codec=codec))
        ready = json.loads(ws.recv(timeout=30))
        pcm = pcm16(x)
        for a in range(0, len(pcm), 2 * chunk):
            ws.send(pcm[a : a + 2 * chunk])
        ws.send(json.dumps({"type": "flush"}))
        frames, texts = [], []
        while sum(1 for h, _, _ in frames if h.speech) < int(np.ceil(len(x) * 25 / 16000)):
            data = ws.recv(timeout=30)
            if isinstance(data, bytes):
                frames.append(parse_frame(data))
            else:
                texts.append(json.loads(data))
        ws.send(json.dumps({"type": "stop"}))
    return ready, frames, texts


def decode_h264(frames):
    """Each access unit as one packet, as a WebCodecs client gives each to its VideoDecoder."""
    decoder = av.CodecContext.create("h264", "r")
    images = []
    for _, video, _ in frames:
        images += [f.to_ndarray(format="yuv420p") for f in decoder.decode(av.Packet(video))]
    images += [f.to_ndarray(format="yuv420p") for f in decoder.decode(None)]
    return images


@pytest.mark.parametrize("codec", ["h264", "jpeg"])
def test_frames_over_the_websocket_equal_the_offline_render(main_server, shared_runtime, alice, speech_file, codec):
    path, x = speech_file
    ready, frames, _ = stream_file(main_server, x, codec)
    assert ready["type"] == "ready" and ready["fps"] == 25 and (ready["width"], ready["height"]) == (1280, 720)
    assert ready["codec"] == ("avc1.42E01F" if codec == "h264" else "jpeg") and ready["audio_rate"] == 16000
    headers = [h for h, _, _ in frames]
    assert [h.index for h in headers] == list(range(len(headers)))
    assert all(h.pts_us == h.index * 40_000 and h.generation == 0 and h.jpeg == (codec == "jpeg") for h in headers)
    assert headers[0].keyframe
    speech = [i for i, h in enumerate(headers) if h.speech]
    first = speech[0]  # frames before it are idle ones, shown while the first audio was on its way
    assert speech == list(range(first, first + len(speech)))
    audio = np.frombuffer(b"".join(a for _, _, a in frames[first:]), "<i2")
    sent = np.frombuffer(pcm16(x), "<i2")
    assert np.array_equal(audio[: len(sent)], sent) and not audio[len(sent) :].any()
    if codec == "h264":
        images = decode_h264(frames)
    else:
        images = [cv2.cvtColor(cv2.imdecode(np.frombuffer(v, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2YUV_I420)
                  for _, v, _ in frames]
    assert len(images) == len(frames)
    reference = rendered(alice, path, shared_runtime)
    fade = 3 if first > 0 else 0  # after idle frames, speech fades in from the template
    for j in range(fade, len(speech)):
        error = np.abs(images[first + j].astype(int) - reference[j].astype(int)).mean()
        assert error < (1.5 if codec == "h264" else 2.5), (j, error)


def test_a_start_may_ask_for_the_audio_back_at_its_own_rate(main_server):
    """audio.return_rate (optional, protocol v1): the frames' audio at the voice's 24 kHz, as sent."""
    x = speech_like(0.8, rate=24000, seed=5)
    with connect(ws_url(main_server, token=TOKEN), open_timeout=30) as ws:
        ws.send(json.dumps({"type": "start", "character": "alice",
                            "audio": {"format": "s16le", "rate": 24000, "return_rate": 24000}}))
        ready = json.loads(ws.recv(timeout=30))
        assert ready["audio_rate"] == 24000
        ws.send(pcm16(x))
        ws.send(json.dumps({"type": "flush"}))
        frames = []
        while sum(h.speech for h, _, _ in frames) < 20:
            data = ws.recv(timeout=30)
            if isinstance(data, bytes):
                frames.append(parse_frame(data))
        ws.send(json.dumps({"type": "stop"}))
    assert all(h.audio_bytes == 960 * 2 for h, _, _ in frames)
    first = next(i for i, (h, _, _) in enumerate(frames) if h.speech)
    audio = np.frombuffer(b"".join(a for _, _, a in frames[first:]), "<i2")
    sent = np.frombuffer(pcm16(x), "<i2")
    assert np.array_equal(audio[: len(sent)], sent)


def full_scale(seconds: float, rate: int, seed: int) -> np.ndarray:
    """s16 speech that reaches both ends of the range, -32768 and 32767 (and every |s| > 16384 on the way)."""
    x = speech_like(seconds, rate=rate, seed=seed)
    s = np.rint(x / np.abs(x).max() * 32767).astype(np.int16)
    s[np.argmin(s)], s[np.argmax(s)] = -32768, 32767
    return s


def test_a_full_scale_voice_comes_back_bit_exact_at_its_own_rate(main_server):
    """return_rate equal to the voice's rate gives the very samples sent, peaks at -32768 and 32767 included."""
    sent = full_scale(0.8, 24000, seed=7)
    assert sent.min() == -32768 and sent.max() == 32767
    with connect(ws_url(main_server, token=TOKEN), open_timeout=30) as ws:
        ws.send(json.dumps({"type": "start", "character": "alice",
                            "audio": {"format": "s16le", "rate": 24000, "return_rate": 24000}}))
        assert json.loads(ws.recv(timeout=30))["audio_rate"] == 24000
        pcm = sent.astype("<i2").tobytes()
        for a in range(0, len(pcm), 960 * 2):
            ws.send(pcm[a : a + 960 * 2])
        ws.send(json.dumps({"type": "flush"}))
        frames = []
        while sum(h.speech for h, _, _ in frames) < 20:
            data = ws.recv(timeout=30)
            if isinstance(data, bytes):
                frames.append(parse_frame(data))
        ws.send(json.dumps({"type": "stop"}))
    first = next(i for i, (h, _, _) in enumerate(frames) if h.speech)
    audio = np.frombuffer(b"".join(a for _, _, a in frames[first:]), "<i2")
    assert np.array_equal(audio[: len(sent)], sent)


def connect_main(running, **kw):
    return connect(ws_url(running, **({"token": TOKEN} | kw)), open_timeout=30)


REFUSALS = {
    "bad token": (dict(token="wrong-token"), [start_message()], 1008, "a valid token is needed"),
    "unknown character": ({}, [start_message("nobody")], 1008, "unknown character 'nobody': this server offers"),
    "character as a path ..": ({}, [start_message("../alice")], 1008, "character must be a name"),
    "character as a path /": ({}, [start_message("/etc")], 1008, "character must be a name"),
    "character as a path a/b": ({}, [start_message("a/b")], 1008, "character must be a name"),
    "binary before start": ({}, [b"\x00\x01"], 1008, "the first message must be the text"),
    "invalid JSON": ({}, ["{not json"], 1008, "a text message must be a JSON object"),
    "wrong format": ({}, [start_message(fmt="mp3")], 1008, "audio format must be s16le or f32le, not 'mp3'"),
    "wrong rate": ({}, [start_message(rate=96000)], 1008, "audio rate must be a whole number of Hz from 8000 to 48000"),
    "wrong return rate": ({}, [json.dumps({"type": "start", "character": "alice", "audio": {"return_rate": 7000}})],
                          1008, "audio return_rate must be a whole number of Hz from 8000 to 48000"),
    "unknown audio field": ({}, [json.dumps({"type": "start", "character": "alice", "audio": {"rates": 1}})],
                            1008, "unknown field(s) in start's audio: rates"),
    "message over its limit": ({}, [start_message(), b"\x00" * 32002], 1009, "an audio message is limited to 1 s"),
    "half a sample": ({}, [start_message(), b"\x00" * 3], 1008, "must hold whole s16le samples"),
    "audio queued past its limit": ({}, [start_message()] + [b"\x00" * 32000] * 30, 1008,
                                    "ahead of the stream, past the limit of 20 s"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_every_refusal_has_its_message_and_code_and_harms_no_other_session(main_server, case):
    query, messages, code, text = REFUSALS[case]
    healthy = Healthy(main_server, token=TOKEN)
    try:
        with connect_main(main_server, **query) as ws:
            for message in messages:
                try:
                    ws.send(message)
                except Exception:
                    break
            got, closed = refusal(ws)
        assert closed == code and got is not None and text in got, (closed, got)
        time.sleep(1.0)
    finally:
        assert healthy.finish() >= 10
    metrics = urllib.request.urlopen(main_server.url + f"/metrics?token={TOKEN}").read().decode()
    assert "lipsync_sessions_refused_total{reason=" in metrics


def test_a_bad_origin_is_refused(main_server):
    healthy = Healthy(main_server, token=TOKEN)
    try:
        with connect(ws_url(main_server, token=TOKEN), origin="http://evil.example", open_timeout=30) as ws:
            got, code = refusal(ws)
        assert code == 1008 and "origin http://evil.example is not allowed" in got
        time.sleep(1.0)
    finally:
        assert healthy.finish() >= 10


def test_a_session_past_its_length_is_ended(shared_runtime):
    with server(shared_runtime, session_max_seconds=1.0) as running, connect(ws_url(running)) as ws:
        ws.send(start_message())
        got, code = refusal(ws)
    assert code == 1008 and "reached its length limit of 1 s" in got


def test_over_capacity_a_session_gets_1013_and_readyz_turns_unready(shared_runtime):
    with server(shared_runtime, max_sessions=1) as running:
        assert json.loads(urllib.request.urlopen(running.url + "/readyz").read())["ready"] is True
        healthy = Healthy(running)
        try:
            with pytest.raises(urllib.error.HTTPError) as unready:
                urllib.request.urlopen(running.url + "/readyz")
            assert unready.value.code == 503 and "at capacity" in json.loads(unready.value.read())["reason"]
            with connect(ws_url(running)) as ws:
                ws.send(start_message())
                got, code = refusal(ws)
            assert code == 1013 and "at capacity: 1 of 1 sessions" in got
            time.sleep(1.0)
        finally:
            assert healthy.finish() >= 10
        for _ in range(50):
            try:
                if json.loads(urllib.request.urlopen(running.url + "/readyz").read())["ready"]:
                    break
            except urllib.error.HTTPError:
                time.sleep(0.05)
        else:
            pytest.fail("/readyz did not turn ready again")


def test_interrupt_over_the_websocket(main_server):
    with connect_main(main_server) as ws:
        ws.send(start_message())
        json.loads(ws.recv(timeout=30))
        ws.send(pcm16(speech_like(0.9, seed=3)))
        headers = []
        while len(headers) < 8:
            data = ws.recv(timeout=30)
            if isinstance(data, bytes):
                headers.append(parse_frame(data)[0])
        ws.send(json.dumps({"type": "interrupt"}))
        interrupted = None
        after = []
        while len(after) < 10:
            data = ws.recv(timeout=30)
            if isinstance(data, str):
                message = json.loads(data)
                if message["type"] == "interrupted":
                    interrupted = message
            elif interrupted is not None:
                after.append(parse_frame(data)[0])
        ws.send(json.dumps({"type": "stop"}))
    assert interrupted["generation"] == 1
    assert all(h.generation == 1 for h in after) and after[0].index == interrupted["first_frame"]
    assert after[0].keyframe and not after[0].speech  # a keyframe first after an interrupt, and an idle frame


def test_metrics_health_and_characters(main_server):
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(main_server.url + "/metrics")
    assert denied.value.code == 401
    text = urllib.request.urlopen(main_server.url + f"/metrics?token={TOKEN}").read().decode()
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("lipsync_sessions_active", "lipsync_sessions_admitted", "lipsync_sessions_refused", "lipsync_frames",
                 "lipsync_frame_lateness_seconds", "lipsync_processing_latency_seconds", "lipsync_underrun_frames",
                 "lipsync_unet_calls", "lipsync_model_requests"):
        assert name in families, name
    before = sum(s.value for s in families["lipsync_frames"].samples if s.name == "lipsync_frames_total")
    stream_file(main_server, speech_like(0.4, seed=2), "jpeg")
    text = urllib.request.urlopen(main_server.url + f"/metrics?token={TOKEN}").read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    after = sum(s.value for s in families["lipsync_frames"].samples if s.name == "lipsync_frames_total")
    assert after >= before + 10
    assert json.loads(urllib.request.urlopen(main_server.url + "/healthz").read()) == {"status": "ok"}
    listing = json.loads(urllib.request.urlopen(main_server.url + f"/v1/characters?token={TOKEN}").read())
    alice = next(c for c in listing["characters"] if c["name"] == "alice")
    assert alice["status"] == "ok" and alice["fps"] == 25 and alice["width"] == 1280 and alice["layout"] == "per_frame"


def test_the_header_is_32_bytes_little_endian():
    assert HEADER.size == 32
    message = HEADER.pack(1, 3, 0, 2, 7, 280_000, 2, 4) + b"vv" + b"aaaa"
    header, video, audio = parse_frame(message)
    assert (header.keyframe, header.speech, header.jpeg, header.generation, header.index) == (True, True, False, 2, 7)
    assert message[:4] == b"\x01\x03\x00\x00" and message[8:16] == (7).to_bytes(8, "little")
    assert (video, audio) == (b"vv", b"aaaa")


def test_a_vanished_client_leaves_the_others_alone(main_server):
    healthy = Healthy(main_server, token=TOKEN)
    try:
        with connect_main(main_server) as ws:
            ws.send(start_message())
            ws.recv(timeout=30)
            ws.send(pcm16(speech_like(0.5, seed=1)))
            ws.socket.close()  # gone without a close frame
        time.sleep(1.0)
    finally:
        assert healthy.finish() >= 10
    deadline = time.monotonic() + 5
    while main_server.server.manager.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert main_server.server.manager.active == 0

