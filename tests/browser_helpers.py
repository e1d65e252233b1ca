"""Debian's Chromium for the tests of the pages (the `browser` fixture, in conftest.py, drives it with
Playwright): where it is, and a launch with a WAV as the fake microphone."""

import shutil
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def launch(browser, microphone: Path | None = None):
    """Headless Chromium; with `microphone`, the page's getUserMedia plays that WAV, without asking."""
    args = [] if microphone is None else [
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}", "--autoplay-policy=no-user-gesture-required"]
    return browser.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
