from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]

# Pipecat's tests run in an environment of their own, installed as a user installs the extra (the nox session
# tests(env='pipecat'): Pipecat requires the CPU onnxruntime and protobuf<7); elsewhere they are not collected.
collect_ignore_glob = [] if importlib.util.find_spec("pipecat") else ["test_pipecat*.py"]


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Every test, and every process a test starts, caches templates in one folder of this test session,
    never in the user's ~/.cache."""
    import os

    previous = os.environ.get("LIPSYNC_CACHE")
    os.environ["LIPSYNC_CACHE"] = str(tmp_path_factory.mktemp("lipsync-cache"))
    yield
    if previous is None:
        os.environ.pop("LIPSYNC_CACHE", None)
    else:
        os.environ["LIPSYNC_CACHE"] = previous


@pytest.fixture
def runtime():
    """A CPU runtime with the default budgets, closed after the test."""
    from lipsync_cli.runtime import Runtime, RuntimeConfig

    with Runtime(RuntimeConfig(devices="cpu")) as rt:
        yield rt


@pytest.fixture
def write_audio(tmp_path):
    """Write samples ([n] or [n, channels]) to a file and return its path."""

    def write(x: np.ndarray, rate: int = 16000, name: str = "audio.wav", subtype: str | None = None, **kw) -> Path:
        path = tmp_path / name
        sf.write(path, x, rate, subtype=subtype, **kw)
        return path

    return write


ALICE = REPO / "characters" / "alice"


@pytest.fixture
def alice_copy(tmp_path):
    """A private copy of alice that a test may break."""
    import shutil

    dest = tmp_path / "alice"
    shutil.copytree(ALICE, dest)
    return dest


@pytest.fixture(scope="session")
def alice():
    from lipsync_cli.characters.manifest import load_character

    return load_character(ALICE)


@pytest.fixture(scope="module")
def browser():
    """Playwright, for Debian's Chromium (tests/browser_helpers.py launches it); skipped where Chromium is missing,
    a failure under CI (whose .ci/run installs it)."""
    import os

    from .browser_helpers import CHROMIUM

    if CHROMIUM is None:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail("Chromium is not installed: .ci/run installs Debian's chromium before the tests")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def shared_runtime():
    """A CPU runtime shared by the tests of one module, closed after them."""
    from lipsync_cli.runtime import Runtime, RuntimeConfig

    with Runtime(RuntimeConfig(devices="cpu")) as rt:
        yield rt
