"""Developer sessions: `nox` runs the tests; lint and bench are asked for by name."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests"]


ONE_ONNXRUNTIME = """
from importlib.metadata import distributions
found = sorted({d.metadata["Name"] for d in distributions() if d.metadata["Name"].lower().startswith("onnxruntime")})
assert len(found) == 1, f"exactly one onnxruntime distribution must be installed, found {found}"
print("onnxruntime distribution:", found[0])
"""


# Each environment is installed as a user installs those extras. Pipecat's gets one of its own: it requires the
# CPU onnxruntime distribution and protobuf<7, so its tests, doctor's report of that and the gRPC tests on that
# protobuf run there.
PIPECAT_TESTS = sorted(str(p) for p in Path("tests").glob("test_pipecat*.py"))
ENVIRONMENTS = {
    "main": (".[test,ray,livekit,openvino]", [["-m", "not pipecat"]]),  # LiveKit's classes; OpenVINO
    "pipecat": (".[test,pipecat]", [["-m", "pipecat", *PIPECAT_TESTS],
                                    ["tests/test_grpc.py", "tests/test_grpc_live.py"]]),
}


@nox.session
@nox.parametrize("env", list(ENVIRONMENTS))
def tests(session: nox.Session, env: str) -> None:
    """Run the test suite (real onnxruntime, the bundled ffmpeg, a real browser; Pipecat in its environment)."""
    extras, runs = ENVIRONMENTS[env]
    session.install("-e", extras)
    session.run("pip", "check")
    if env == "main":  # Pipecat's environment holds two by design (its CPU onnxruntime beside onnxruntime-gpu)
        session.run("python", "-c", ONE_ONNXRUNTIME)
    for args in runs:
        session.run("pytest", *args, *session.posargs)


@nox.session(default=False)
def lint(session: nox.Session) -> None:
    """Check the code with ruff, and its types with mypy (with the real dependencies installed)."""
    session.install("-e", ".[test,ray,livekit,openvino]", "ruff>=0.5", "mypy>=1.8", "types-tqdm")
    session.run("ruff", "check", "lipsync_cli", "tests", "noxfile.py", "scripts")
    session.run("mypy", "lipsync_cli")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmark alice and the realistic-cost models on the CPU; JSON goes to bench-results/."""
    session.install("-e", ".[bench,openvino]")
    session.run("python", "-c", "import pathlib; pathlib.Path('bench-results').mkdir(exist_ok=True)")
    seconds = session.posargs[0] if session.posargs else "8"
    session.run("lipsync", "bench", "--character", "alice", "--device", "cpu", "--seconds", seconds,
                "--json", "bench-results/alice-cpu.json")
    session.run("lipsync", "bench", "--model", "realistic", "--device", "cpu", "--seconds", seconds,
                "--in-flight", "1,2", "--json", "bench-results/realistic-cpu.json")
    session.run("lipsync", "bench", "--batch", "8", "--device", "cpu", "--json", "bench-results/batch-cpu.json")


@nox.session(default=False)
def loadtest(session: nox.Session) -> None:
    """The standard live scenario on this machine: capacity, 2 sessions for 60 s, idle cost; JSON in loadtest/."""
    session.install("-e", ".[test]")
    session.run("python", "-c", "import pathlib; pathlib.Path('loadtest-results').mkdir(exist_ok=True)")
    session.run("lipsync", "loadtest", "--find-capacity", "--seconds", "10", "--devices", "cpu",
                "--json", "loadtest-results/capacity.json")
    session.run("lipsync", "loadtest", "--sessions", "2", "--seconds", "60", "--gap-every", "5",
                "--interrupt-every", "17", "--devices", "cpu", "--json", "loadtest-results/two.json")
    session.run("lipsync", "loadtest", "--sessions", "4", "--idle", "--seconds", "20", "--devices", "cpu",
                "--json", "loadtest-results/idle.json")


@nox.session(default=False)
def livekit(session: nox.Session) -> None:
    """The LiveKit figures: alice through AvatarRunner into a stand-in room, 1 then 2 avatars at once (fps,
    audio continuity, time to the first frame); JSON in bench-results/livekit-alice-cpu.json."""
    session.install("-e", ".[livekit]")
    session.run("python", "-c", "import pathlib; pathlib.Path('bench-results').mkdir(exist_ok=True)")
    session.run("python", "scripts/livekit_figures.py", "--json", "bench-results/livekit-alice-cpu.json",
                *session.posargs)
