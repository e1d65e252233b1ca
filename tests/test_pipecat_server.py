"""`lipsync agent`'s server without a browser: who may load the page and send an offer (trust.py's rules, as
`lipsync serve`'s), every bad offer refused with one clear line and the right status, the session limit; an
offer from a real WebRTC peer (aiortc) answered with host candidates beside loopback; the command's bad options
refused before any work."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest
from typer.testing import CliRunner

from lipsync_cli.cli.app import app

pytestmark = pytest.mark.pipecat
pytest.importorskip("pipecat", reason="the Pipecat extra is not installed: pip install 'lipsync-cli[pipecat]'")

TOKEN = "agent-token-1234"


@contextmanager
def agent_server(runtime, **kw):
    import uvicorn

    from lipsync_cli.integrations.pipecat.agent import AgentOptions
    from lipsync_cli.integrations.pipecat.server import AgentConfig, AgentServer, bind, create_app

    config = AgentConfig(port=0, options=AgentOptions(device="cpu"), **kw).checked()
    server = AgentServer(config, runtime)
    sock = bind(config.host, 0)
    uv = uvicorn.Server(uvicorn.Config(create_app(server), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    ends = time.monotonic() + 20
    while not uv.started and time.monotonic() < ends:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        uv.should_exit = True
        thread.join(timeout=15)


def request(url, data=None, headers=None):
    """(status, body) of a GET, or of a POST when `data` is given."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]


async def client_offer() -> tuple[object, str]:
    """A WebRTC peer as the page makes it: the microphone's audio, video to receive, a data channel."""
    from aiortc import RTCPeerConnection
    from aiortc.mediastreams import AudioStreamTrack

    pc = RTCPeerConnection()
    pc.addTransceiver(AudioStreamTrack(), direction="sendrecv")
    pc.addTransceiver("video", direction="recvonly")
    pc.createDataChannel("lipsync")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def test_the_page_and_the_offer_follow_the_trust_rules(runtime):
    with agent_server(runtime, token=TOKEN) as (url, _):
        assert request(f"{url}/")[0] == 401
        status, page = request(f"{url}/?token={TOKEN}")
        assert status == 200 and b"<video id=\"remote\"" in page and page.index(b"<video") == page.index(b"<video id")
        assert request(f"{url}/static/app.js")[0] == 200  # the page's own files need no token, as serve's
        assert request(f"{url}/static/../server.py")[0] == 404 and request(f"{url}/static/probe.js")[0] == 404
        status, body = request(f"{url}/api/offer", b"{}", {"Content-Type": "application/json"})
        assert status == 401 and "token" in error_of(body)
        status, body = request(f"{url}/api/offer", b"{}", {"Authorization": f"Bearer {TOKEN}",
                                                           "Origin": "http://evil.example"})
        assert status == 403 and "origin" in error_of(body)


def test_bad_offers_get_one_line_each(runtime):
    with agent_server(runtime) as (url, server):
        cases = {b"not json": (400, "an offer is JSON"), b'{"sdp": 5, "type": "offer"}': (400, "an offer is JSON"),
                 b'{"sdp": "v=0", "type": "answer"}': (400, "an offer is JSON"),
                 b'{"sdp": "hello", "type": "offer"}': (400, "not a usable SDP offer"),
                 b'{"sdp": "' + b"x" * 70_000 + b'", "type": "offer"}': (413, "at most 64 KiB")}
        for body, (status, message) in cases.items():
            got, answer = request(f"{url}/api/offer", body, {"Content-Type": "application/json"})
            assert got == status and message in error_of(answer) and "\n" not in error_of(answer), (body[:40], answer)
        assert server.sessions == {}


def test_an_offer_is_answered_with_a_session_and_the_limit_is_kept(runtime):
    with agent_server(runtime, max_sessions=1) as (url, server):
        pc, sdp = asyncio.run(client_offer())
        status, body = request(f"{url}/api/offer", json.dumps({"sdp": sdp, "type": "offer"}).encode())
        assert status == 200, body
        answer = json.loads(body)
        assert answer["type"] == "answer" and answer["pc_id"] in server.sessions
        candidates = [line.split()[4] for line in answer["sdp"].splitlines() if line.startswith("a=candidate:")]
        assert candidates and not [c for c in candidates if c.startswith("127.") or c == "::1"], candidates
        _, sdp2 = asyncio.run(client_offer())
        status, body = request(f"{url}/api/offer", json.dumps({"sdp": sdp2, "type": "offer"}).encode())
        assert status == 503 and "at capacity" in error_of(body)
    assert server.sessions == {}  # stopping the server ended the session


runner = CliRunner()


@pytest.mark.parametrize(("args", "message"), [
    (["--host", "0.0.0.0"], "needs a token (--token or LIPSYNC_TOKEN) or an explicit --no-auth"),
    (["--token", "short"], "a token must be at least 8 characters"),
    (["--port", "70000"], "port must be 0 to 65535"),
    (["--character", "nobody-here"], "nobody-here: no such character"),
    (["--device", "tpu"], "unknown device"),
    (["--latency-ms", "100"], "latency 100 ms is below what alice needs"),
    (["--latency-ms", "-5"], "latency must be a positive number"),
])
def test_bad_options_are_one_line_before_work(args, message, monkeypatch):
    monkeypatch.delenv("LIPSYNC_TOKEN", raising=False)
    result = runner.invoke(app, ["agent", *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
