"""Live sessions through Ray Serve against a direct `lipsync serve`, side by side (issue 32's figures):
glass-to-glass p50/p95 and lateness p99 for 1 and 2 sessions on one replica (and on the one direct server),
and the CPU of Serve's proxy per session. Run it alone on the machine:

    flock -x /work/locks/cpu python scripts/measure_cluster.py OUT.json [SECONDS]

Both servers run for the whole measurement (a direct one on the CPU, and `lipsync serve --cluster ray
--replicas 1` on a local Ray of its own), each warmed by a short load test first; each load test is
`lipsync loadtest --url ... --json`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LIPSYNC = [sys.executable, "-m", "lipsync_cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], env: dict, ready: str) -> subprocess.Popen:
    process = subprocess.Popen(LIPSYNC + ["serve", *args], env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        print(line.rstrip(), file=sys.stderr)
        if ready in line:
            threading.Thread(target=drain, args=(process,), daemon=True).start()
            return process
    raise SystemExit(f"the server did not start: {args}")


def drain(process: subprocess.Popen) -> None:
    """Read the server's log on, so that it never blocks on a full pipe."""
    assert process.stderr is not None
    for _ in process.stderr:
        pass


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proxy_pid(ray_dir: str) -> int:
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"ray::ProxyActor" in (proc / "cmdline").read_bytes() and \
                    f"RAY_TMPDIR={ray_dir}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:
            continue
    raise SystemExit("no Serve proxy found")


def loadtest(port: int, sessions: int, seconds: float, out: Path) -> dict:
    subprocess.run(LIPSYNC + ["loadtest", "--url", f"ws://127.0.0.1:{port}", "--sessions", str(sessions),
                              "--seconds", str(seconds), "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def figures(report: dict) -> dict:
    return {"glass_to_glass_p50_ms": report["glass_to_glass_ms"]["p50"],
            "glass_to_glass_p95_ms": report["glass_to_glass_ms"]["p95"],
            "lateness_p99_ms": report["lateness_ms"]["p99"], "frames": report["frames"],
            "refused": report["refused"], "reconnects": report["reconnects"], "underruns": report["underruns"]}


def main() -> None:
    out = Path(sys.argv[1])
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 12.0
    ray_dir = tempfile.mkdtemp(prefix="lr", dir="/tmp")
    env = dict(os.environ, RAY_TMPDIR=ray_dir)
    env.pop("RAY_ADDRESS", None)
    direct_port, cluster_port = free_port(), free_port()
    direct = start(["--devices", "cpu", "--port", str(direct_port), "--grpc-port", "0", "--max-sessions", "2"], env,
                   "lipsync serve: http")
    cluster = start(["--cluster", "ray", "--replicas", "1", "--max-sessions-per-device", "2", "--cpus-per-replica",
                     "2", "--port", str(cluster_port)], env, "lipsync serve: replica")
    results: dict = {"seconds": seconds, "direct": {}, "serve": {}}
    try:
        proxy = proxy_pid(ray_dir)
        with tempfile.TemporaryDirectory() as tmp:
            for port in (direct_port, cluster_port):  # warm: models loaded, template frames prepared
                loadtest(port, 2, 4.0, Path(tmp) / "warm.json")
            for sessions in (1, 2):
                results["direct"][sessions] = figures(loadtest(direct_port, sessions, seconds, Path(tmp) / "d.json"))
                before, started = cpu_seconds(proxy), time.monotonic()
                row = figures(loadtest(cluster_port, sessions, seconds, Path(tmp) / "c.json"))
                cores = (cpu_seconds(proxy) - before) / (time.monotonic() - started)
                row["proxy_cpu_cores_per_session"] = round(cores / sessions, 3)
                results["serve"][sessions] = row
                print(json.dumps({"sessions": sessions, "direct": results["direct"][sessions], "serve": row}),
                      file=sys.stderr)
    finally:
        for process in (direct, cluster):
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        shutil.rmtree(ray_dir, ignore_errors=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
