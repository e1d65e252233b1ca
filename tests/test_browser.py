"""The page in a real browser: Debian's Chromium driven by Playwright, its fake microphone playing a speech
WAV with pauses. The page connects, talks, decodes H.264 with WebCodecs, the mouth moves while the WAV speaks
and rests in its pauses, and the overlay shows the latency. A screenshot is kept in test-artifacts/."""

import time

import numpy as np
import soundfile as sf

from .browser_helpers import launch
from .conftest import REPO
from .serve_helpers import server

MOUTH = (570, 395, 130, 95)  # x, y, w, h of the frame: where alice's mouth is drawn


def test_the_page_talks_with_the_fake_microphone(browser, runtime, tmp_path):
    x, rate = sf.read(REPO / "samples" / "pauses.wav", dtype="float32")
    microphone = tmp_path / "microphone.wav"
    sf.write(microphone, x, rate, subtype="PCM_16")
    with server(runtime) as running:
        chromium = launch(browser, microphone)
        try:
            page = chromium.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{running.url}/?character=alice&mic=1")
            page.wait_for_function("window.lipsync && window.lipsync.stats.framesShown > 25", timeout=60_000)
            stats = page.evaluate("window.lipsync.stats")
            assert stats["codec"] == "avc1.42E01F" and stats["framesDecoded"] > 25, stats
            samples, ends = [], time.monotonic() + 9.0  # the WAV is 6.9 s: all of it, speech and pauses
            while time.monotonic() < ends:
                samples.append(page.evaluate("([x, y, w, h]) => window.lipsync.regionSample(x, y, w, h)", MOUTH))
                time.sleep(0.06)
            page.wait_for_function("window.lipsync.stats.latency !== null", timeout=10_000)
            overlay = page.inner_text("#overlay")
            (REPO / "test-artifacts").mkdir(exist_ok=True)
            page.screenshot(path=str(REPO / "test-artifacts" / "browser.png"))
            stats = page.evaluate("window.lipsync.stats")
        finally:
            chromium.close()
    assert not errors, errors
    assert stats["state"].startswith("live") and stats["underruns"] >= 0 and stats["lastError"] is None, stats
    assert "ms latency" in overlay and "look-ahead" in overlay and stats["latency"]["total"] > 0
    moves = {"speaking": [], "pause": []}
    for a, b in zip(samples, samples[1:], strict=False):
        if b["index"] == a["index"]:
            continue
        change = float(np.abs(np.subtract(a["cells"], b["cells"])).mean())
        if a["rms"] > 0.03 and b["rms"] > 0.03:
            moves["speaking"].append(change)
        elif a["rms"] < 0.002 and b["rms"] < 0.002:
            moves["pause"].append(change)
    assert len(moves["speaking"]) > 10 and len(moves["pause"]) > 10, {k: len(v) for k, v in moves.items()}
    speaking, pause = np.median(moves["speaking"]), np.median(moves["pause"])
    print(f"mouth change per frame: speaking {speaking:.2f}, in pauses {pause:.2f}; latency {stats['latency']} ms, "
          f"playout buffer {stats['bufferMs']:.0f} ms, {stats['fps']} fps shown")
    assert speaking > 2 * pause, (speaking, pause)
