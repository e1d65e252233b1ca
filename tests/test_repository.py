"""The README's set-up commands are what CI runs, and the top level is the one design.md fixes."""

from .conftest import REPO


def readme_command(marker):
    lines = [line for line in (REPO / "README.md").read_text().splitlines() if marker in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_ci_runs_the_readme_test_command_verbatim():
    assert readme_command("nox -s tests") in (REPO / ".ci" / "run").read_text().splitlines()


def test_readme_renders_a_bundled_sample():
    command = readme_command("pip install . && lipsync render samples/")
    sample = command.split("lipsync render ")[1].split()[0]
    assert (REPO / sample).is_file() and "--character alice" in command


def test_top_level():
    for name in ("lipsync_cli", "characters", "samples", "tests", "pyproject.toml", "noxfile.py", "README.md"):
        assert (REPO / name).exists(), name
