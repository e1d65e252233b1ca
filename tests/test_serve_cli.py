"""`lipsync serve` as a user starts it: the start-up line, SIGTERM closing every session with a close frame and
exiting 0, a TOML config, JSON logs, and the binds it refuses."""

import json
import signal
import socket
import subprocess
import sys
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .conftest import REPO
from .serve_helpers import start_message

LIPSYNC = [sys.executable, "-m", "lipsync_cli"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_starts_says_where_and_sigterm_closes_sessions_and_exits_0(tmp_path):
    port, grpc_port = free_port(), free_port()
    config = tmp_path / "serve.toml"
    config.write_text(f'port = {port}\ngrpc-port = {grpc_port}\nmax-sessions = 2\ndevices = "cpu"\n'
                      'log-format = "json"\n')
    proc = subprocess.Popen([*LIPSYNC, "serve", "--config", str(config)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert f"http://127.0.0.1:{port}/" in line and "serving alice" in line and "up to 2 sessions" in line, line
        line = proc.stderr.readline()
        assert f"gRPC on 127.0.0.1:{grpc_port} (monolithic.MonolithicService, lipsync.v1.Live" in line, line
        for _ in range(100):  # uvicorn listens a moment after the line
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        with connect(f"ws://127.0.0.1:{port}/v1/live", open_timeout=30) as ws:
            ws.send(start_message())
            assert json.loads(ws.recv(timeout=30))["type"] == "ready"
            proc.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            closed, error = None, None
            try:
                while True:
                    data = ws.recv(timeout=5)
                    if isinstance(data, str) and json.loads(data)["type"] == "error":
                        error = json.loads(data)["message"]
            except ConnectionClosed as exc:
                closed = exc.rcvd.code if exc.rcvd is not None else None
        rest = proc.communicate(timeout=10)[1]
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            proc.kill()
    assert closed == 1001 and error == "the server is shutting down"
    assert proc.returncode == 0 and took < 2.5, (proc.returncode, took, rest)
    logs = [json.loads(line) for line in rest.splitlines() if line.startswith("{")]
    assert logs and all({"time", "level", "message"} <= set(entry) for entry in logs)


def test_a_bind_beyond_this_machine_needs_a_token_or_no_auth():
    done = subprocess.run([*LIPSYNC, "serve", "--host", "0.0.0.0"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "listening on 0.0.0.0 (beyond this machine) needs a token (--token or LIPSYNC_TOKEN) or an explicit " \
           "--no-auth" in done.stderr
    bad = subprocess.run([*LIPSYNC, "serve", "--config", str(REPO / "README.md")], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "README.md: malformed TOML" in bad.stderr
