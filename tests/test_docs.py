"""The README and docs/ stay true: every `lipsync` command they name answers `--help`, every option they give
a command is one of its options, every option they name at all belongs to some command, every link leads to
a file and heading that exist, and the README's code blocks that can run here (fenced `python` or `sh`) do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from lipsync_cli.cli.app import app

from .conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
COMMAND = re.compile(r"(?<![\w./-])lipsync (?=[a-z])")
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
# a snippet that starts with another program names that program's options, not lipsync's
OTHER_PROGRAMS = {"ray", "pip", "python", "python3", "nox", "chromium", "ffmpeg", "tts", "grpcurl", "curl", "apt-get",
                  "docker", "git", "pytest", "uv", "livekit-server", "lk", "ruff", "mypy"}
FOREIGN_OPTIONS = {"--parsing"}  # SyncTalk_2D's, named where its masks are described


def command_tree():
    def walk(command, path):
        options = {o for p in command.params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))
                   if o.startswith("-")}
        yield tuple(path), (command, options | {"--help", "-h"})
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    return dict(walk(typer.main.get_command(app), []))


TREE = command_tree()
ALL_OPTIONS = set().union(*(options for _, options in TREE.values()))


def resolve(words: list[str]) -> tuple[str, ...]:
    """The command a snippet names: subcommands as long as the words are ones (a group given something else
    runs its default, as `lipsync characters NAME` runs `characters show`)."""
    path: tuple[str, ...] = ()
    for word in words:
        if (*path, word) in TREE:
            path = (*path, word)
            continue
        break
    if (*path, "show") in TREE and (*path, words[len(path)] if len(words) > len(path) else "") not in TREE:
        return (*path, "show") if len(words) > len(path) else path
    return path


def snippets(page: Path):
    """(where, text) of every code span, and of every line of every code block."""
    text = page.read_text()
    for info, block in FENCE.findall(text):
        for number, line in enumerate(block.splitlines()):
            yield f"{page.name} ```{info}``` line {number + 1}", line
    for span in SPAN.findall(FENCE.sub("", text)):
        yield page.name, span


def commands_in(text: str):
    """Each `lipsync ...` in a snippet: the command's words and the options given to it (up to && ; or #)."""
    for match in COMMAND.finditer(text):
        rest = re.split(r"&&|;|\s#\s", text[match.end():])[0]
        words = rest.split()
        path = resolve(words)
        yield path, [o.split("=")[0] for o in OPTION.findall(rest)]


def test_the_pages_are_found():
    names = {p.name for p in PAGES}
    assert {"README.md", "cli.md", "live.md", "protocol.md", "grpc.md", "performance.md"} <= names
    assert resolve(["characters", "alice"]) == ("characters", "show")
    assert resolve(["characters", "import", "seed"]) == ("characters", "import")
    assert resolve(["render", "a.wav"]) == ("render",)
    assert list(commands_in("tts --pcm | lipsync live - -c alice --to x.ts && ls -l")) == [
        (("live",), ["-c", "--to"])]


def test_every_command_named_answers_help():
    named = {path for page in PAGES for _, text in snippets(page) for path, _ in commands_in(text)}
    assert ("render",) in named and ("serve",) in named
    runner = CliRunner()
    for path in sorted(named):
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)


def test_every_option_named_is_an_option_of_its_command():
    wrong = []
    for page in PAGES:
        for where, text in snippets(page):
            found = list(commands_in(text))
            for path, options in found:
                own = TREE[path][1]
                wrong += [f"{where}: lipsync {' '.join(path)} has no {o}" for o in options if o not in own]
            first = text.split()[0] if text.split() else ""
            if found or first.split("=")[0].isupper() or first in OTHER_PROGRAMS:
                continue  # the options of a lipsync command are checked above; another program's are its own
            wrong += [f"{where}: no lipsync command has {o} ({text})" for o in OPTION.findall(text)
                      if o.startswith("--") and o.split("=")[0] not in ALL_OPTIONS | FOREIGN_OPTIONS]
    assert wrong == []


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; GitHub numbers a repeated one (figures, figures-1, ...)."""
    found: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#+ (.*)$", FENCE.sub("", page.read_text()), re.M):
        base = slug(heading)
        n = found.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        found[base] = n + 1
    return out


def test_every_link_leads_somewhere():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.exists():
                broken.append(f"{page.name}: {target} (no such file)")
                continue
            if anchor and path.suffix == ".md":
                if anchor not in anchors(path):
                    broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def readme_blocks(kind: str) -> list[str]:
    return [block for info, block in FENCE.findall((REPO / "README.md").read_text()) if info.strip() == kind]


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "samples").symlink_to(REPO / "samples")
    return tmp_path


def test_the_readmes_python_blocks_run(workdir):
    blocks = readme_blocks("python")
    assert blocks
    for block in blocks:
        done = subprocess.run([sys.executable, "-c", block], cwd=workdir, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]


def test_the_readmes_shell_blocks_run(workdir):
    blocks = readme_blocks("sh")
    assert blocks
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for block in blocks:
        done = subprocess.run(["bash", "-e", "-c", block], cwd=workdir, capture_output=True, text=True,
                              timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
    assert (workdir / "hello_alice.mp4").stat().st_size > 0
