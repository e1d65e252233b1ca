"""The figures of `lipsync agent` (docs/voice-agents.md), measured side by side in one run:

    flock -x /work/locks/cpu python scripts/measure_agent.py [SECONDS] [--json FILE]

1. Through WebRTC in Debian's Chromium (its fake microphone playing tests/test_pipecat_agent.py's script of speech
   and pauses): for each turn, the end of the user's utterance (the microphone's level in the page) -> the first
   frame of the reply shown (the first presented frame whose mouth region moves like speech), split into the VAD's
   wait and the service's time to first frame (both reported by the agent for that turn) and the rest.
2. The offset between picture and sound as the browser plays them: the lag that best lines up the mouth's motion
   in the presented frames with the level of the audio received (cross-correlation on a 10 ms grid), less the same
   lag in the service's own output for the same utterances (a live session, where each frame carries its own
   audio by construction): what is left is what the way to the screen and the speaker adds (> 0: picture late).
3. CPU seconds per second of the agent's process during that session, against a `lipsync serve` process with one
   WebSocket session (H.264) given the same replies at the same times (real-time chunks, flushes, idle between).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.test_pipecat_agent import (  # noqa: E402
    CHROMIUM,
    MOUTH,
    PROBE,
    SCRIPT,
    launch,
    microphone_wav,
    running_agent,
)

GRID = 10.0  # ms


def cpu_seconds(pid: int) -> float:
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mouth_changes(frames) -> np.ndarray:
    """[time, change of the mouth cells since the previous presented frame]."""
    pairs = zip(frames, frames[1:], strict=False)
    return np.array([(b[0], float(np.abs(np.subtract(a[1], b[1])).mean())) for a, b in pairs])


def on_grid(times, values, start, end) -> np.ndarray:
    grid = np.arange(start, end, GRID)
    i = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, len(values) - 1)
    return np.asarray(values)[i]


def best_lag(picture: np.ndarray, sound: np.ndarray, most: int = 30) -> float:
    """The shift of `picture` (in grid steps) that best matches `sound`, interpolated between steps."""
    p, s = (picture - picture.mean()) / (picture.std() or 1), (sound - sound.mean()) / (sound.std() or 1)
    lags = np.arange(-most, most + 1)
    score = np.array([np.dot(p[max(0, k):len(p) + min(0, k)], s[max(0, -k):len(s) - max(0, k)]) / len(p)
                      for k in lags])
    i = int(np.argmax(score))
    if 0 < i < len(lags) - 1:
        a, b, c = score[i - 1:i + 2]
        return float(lags[i] + 0.5 * (a - c) / (a - 2 * b + c)) if a - 2 * b + c else float(lags[i])
    return float(lags[i])


def browser_run(seconds: float, folder: Path) -> dict:
    from playwright.sync_api import sync_playwright

    microphone = microphone_wav(folder / "microphone.wav")
    with running_agent() as url, sync_playwright() as p:
        pid = running_agent.process.pid
        chromium = launch(p, microphone)
        try:
            page = chromium.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{url}/?autoconnect=1")
            page.wait_for_function("window.lipsync.stats.state === 'connected' && "
                                   "window.lipsync.stats.frames_decoded > 5", timeout=30_000)
            page.evaluate(PROBE, list(MOUTH))
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            start = page.evaluate("window.lipsync.stats.frames_decoded")
            time.sleep(seconds)
            cpu1, t1 = cpu_seconds(pid), time.monotonic()
            end = page.evaluate("window.lipsync.stats.frames_decoded")
            probe = page.evaluate("window.lipsyncProbe")
            log = page.evaluate("window.lipsync.server.log")
        finally:
            chromium.close()
    return {"probe": probe, "log": log, "cpu": (cpu1 - cpu0) / (t1 - t0), "fps": (end - start) / (t1 - t0)}


def turns(result: dict) -> list[dict]:
    probe, log = result["probe"], result["log"]
    audio = np.array(probe["audio"])
    moves = mouth_changes(probe["frames"])
    rest = float(np.median(moves[:, 1]))
    loud = audio[:, 2] > 0.02
    found = []
    for turn in (m for m in log if m["type"] == "lipsync-turn"):
        # the utterance that ended just before the agent said the user stopped: its last loud microphone sample
        before = np.flatnonzero(loud & (audio[:, 0] < turn["t"]))
        if not len(before):
            continue
        ended = audio[before[-1], 0]
        reply = next((m for m in log if m["type"] == "lipsync-reply" and m["t"] > turn["t"]), None)
        shown = moves[(moves[:, 0] > turn["t"]) & (moves[:, 1] > max(2.0, 4 * rest))]
        heard = audio[(audio[:, 0] > turn["t"]) & (audio[:, 1] > 0.02)]
        if reply is None or not len(shown):
            continue
        total = shown[0, 0] - ended
        found.append({"total_ms": round(total), "vad_wait_ms": turn["vad_wait_ms"],
                      "first_frame_ms": reply["first_frame_ms"],
                      "rest_ms": round(total - turn["vad_wait_ms"] - reply["first_frame_ms"]),
                      "sound_heard_ms": round(heard[0, 0] - ended) if len(heard) else None})
    return found


def browser_lag(result: dict) -> float:
    probe = result["probe"]
    audio = np.array(probe["audio"])
    moves = mouth_changes(probe["frames"])
    start, end = max(audio[0, 0], moves[0, 0]), min(audio[-1, 0], moves[-1, 0])
    return best_lag(on_grid(moves[:, 0], moves[:, 1], start, end), on_grid(audio[:, 0], audio[:, 1], start, end))


def reference_lag(runtime) -> tuple[float, float]:
    """The same lag in a live session's own output for the script's utterances, as the echo brain trims them."""
    import cv2
    import soundfile as sf

    from lipsync_cli.integrations.pipecat.echo import voiced_span
    from lipsync_cli.live import LiveOptions, LiveSession
    from lipsync_cli.models.devices import DeviceRequest

    x, rate = sf.read(REPO / "samples" / "pauses.wav", dtype="float32")
    x_, y_, w_, h_ = MOUTH
    picture, sound, starts = [], [], []
    with LiveSession(runtime, "alice", LiveOptions(device=DeviceRequest("cpu"), start="first_audio")) as session:
        fps = float(session.fps)
        for part in SCRIPT:
            if part[0] != "speech":
                continue
            clip = x[round(part[1] * rate):round(part[2] * rate)]
            a, b = voiced_span(clip, rate)
            count = int(np.ceil((b - a) / rate * fps)) + 8
            starts.append(((picture[-1][0] + 1000 / fps) if picture else 0.0, count))
            session.push(clip[a:b])
            session.flush()
            for _ in range(count):
                frame = session.next_frame(timeout=30)
                rgb = cv2.cvtColor(frame.image, cv2.COLOR_YUV2RGB_I420)[y_:y_ + h_, x_:x_ + w_].astype(float)
                cells = [rgb[j * h_ // 6:(j + 1) * h_ // 6, i * w_ // 8:(i + 1) * w_ // 8].mean()
                         for j in range(6) for i in range(8)]
                picture.append((frame.index / fps * 1000, cells))
                for s in range(0, len(frame.audio), 160):  # its audio's level per 10 ms
                    chunk = frame.audio[s:s + 160]
                    sound.append((frame.index / fps * 1000 + s / 16, float(np.sqrt(np.mean(chunk ** 2)))))
    moves = mouth_changes([(t, c) for t, c in picture])
    level = np.array(sound)
    start, end = max(level[0, 0], moves[0, 0]), min(level[-1, 0], moves[-1, 0])
    lag = best_lag(on_grid(moves[:, 0], moves[:, 1], start, end), on_grid(level[:, 0], level[:, 1], start, end))
    # the onsets' way: per reply, how long after the mouth first moves like speech the sound is first loud
    gaps = []
    for first, _count in starts:
        m = moves[(moves[:, 0] >= first) & (moves[:, 1] > 2.0)]
        a = level[(level[:, 0] >= first) & (level[:, 1] > 0.02)]
        if len(m) and len(a):
            gaps.append(a[0, 0] - m[0, 0])
    return lag, float(np.median(gaps))


def serve_run(seconds: float) -> dict:
    """One WebSocket session of `lipsync serve` given the replies of the script at the agent's times."""
    import socket
    import subprocess

    import soundfile as sf
    from websockets.sync.client import connect

    from lipsync_cli.integrations.pipecat.echo import voiced_span

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "lipsync_cli", "serve", "--port", str(port), "--grpc-port", "0",
                                "--devices", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        x, rate = sf.read(REPO / "samples" / "pauses.wav", dtype="float32")
        replies = []
        for part in SCRIPT:
            if part[0] == "speech":
                clip = x[round(part[1] * rate):round(part[2] * rate)]
                a, b = voiced_span(clip, rate)
                replies.append((np.clip(clip[a:b], -1, 1) * 32767).astype("<i2").tobytes())
        loop = sum(p[1] if p[0] == "quiet" else p[2] - p[1] for p in SCRIPT)
        for _ in range(100):
            try:
                ws = connect(f"ws://127.0.0.1:{port}/v1/live", open_timeout=5)
                break
            except OSError:
                time.sleep(0.2)
        with ws:
            ws.send(json.dumps({"type": "start", "character": "alice", "audio": {"format": "s16le", "rate": rate},
                                "video": {"codec": "h264"}}))
            json.loads(ws.recv(timeout=30))
            done = threading.Event()
            frames = [0]

            def drain():
                while not done.is_set():
                    try:
                        if isinstance(ws.recv(timeout=1), bytes):
                            frames[0] += 1
                    except TimeoutError:
                        continue
                    except Exception:
                        return

            threading.Thread(target=drain, daemon=True).start()
            cpu0, t0 = cpu_seconds(process.pid), time.monotonic()
            while time.monotonic() - t0 < seconds:
                for pcm in replies:  # each reply as the agent would say it, then the rest of the loop idle
                    for i in range(0, len(pcm), 2 * rate // 25):
                        ws.send(pcm[i:i + 2 * rate // 25])
                        time.sleep(1 / 25)
                    ws.send(json.dumps({"type": "flush"}))
                time.sleep(max(0.0, loop - sum(len(p) / 2 / rate for p in replies)))
            cpu1, t1 = cpu_seconds(process.pid), time.monotonic()
            done.set()
        return {"cpu": (cpu1 - cpu0) / (t1 - t0), "fps": frames[0] / (t1 - t0)}
    finally:
        process.terminate()
        process.wait(timeout=20)


def main() -> None:
    import tempfile

    from lipsync_cli.runtime import Runtime, RuntimeConfig

    seconds = float(sys.argv[1]) if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else 25.0
    if CHROMIUM is None:
        sys.exit("Chromium is needed: apt-get install chromium")
    with tempfile.TemporaryDirectory() as folder:
        browser = browser_run(seconds, Path(folder))
    serve = serve_run(seconds)
    with Runtime(RuntimeConfig(devices="cpu")) as runtime:
        reference, reference_gap = reference_lag(runtime)
    lag = browser_lag(browser)
    found = turns(browser)
    browser_gap = float(np.median([t["sound_heard_ms"] - t["total_ms"] for t in found if t["sound_heard_ms"]]))
    keys = ("total_ms", "vad_wait_ms", "first_frame_ms", "rest_ms", "sound_heard_ms")
    report = {
        "turns": found,
        "median": {k: float(np.median([t[k] for t in found if t[k] is not None])) for k in keys} if found else {},
        "av_offset_ms": round((lag - reference) * GRID), "lag_browser_ms": round(lag * GRID),
        "lag_service_ms": round(reference * GRID),
        # the onsets' cross-check: the sound's first loud moment after the mouth's first speech-like move
        "onset_gap_browser_ms": round(browser_gap), "onset_gap_service_ms": round(reference_gap),
        "av_offset_onsets_ms": round(reference_gap - browser_gap),
        "agent": {"cpu_per_s": round(browser["cpu"], 3), "fps_received": round(browser["fps"], 1)},
        "serve_websocket": {"cpu_per_s": round(serve["cpu"], 3), "fps_received": round(serve["fps"], 1)},
        "seconds": seconds,
    }
    print(json.dumps(report, indent=2))
    if "--json" in sys.argv:
        Path(sys.argv[sys.argv.index("--json") + 1]).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
