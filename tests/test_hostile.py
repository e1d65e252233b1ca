"""Hostile batches and job lists (issue 26): nothing lost, nothing crashes, one line and exit 2 where an input
is bad. Reports that would replace a file, signals while planning and while rendering, standard input, job
files and names, failing jobs, --skip-existing. Files and folders: test_hostile_files.py."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
from typer.testing import CliRunner

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.batch.sources import output_name, read_job_file
from lipsync_cli.cli.app import app
from lipsync_cli.errors import InputError
from lipsync_cli.render import RenderOptions

from .conftest import REPO
from .models import character_with, load, nan_output

runner = CliRunner()
ROOT = os.geteuid() == 0


def invoke(*args, **kw):
    return runner.invoke(app, [*map(str, args)], **kw)


def one_line(result, code=2):
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code and len(lines) == 1, (result.exit_code, result.stderr)
    assert lines[0].startswith("lipsync: error: ") and len(lines[0]) < 1000, lines[0]
    return lines[0]


def refused_job(result):
    """A batch refused for one bad job: its line, then the line saying that nothing was rendered."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 2, (result.exit_code, result.stderr)
    assert lines[0].startswith("lipsync: error: ") and len(lines[0]) < 1000, lines[0]
    assert lines[1].startswith("lipsync: nothing rendered")
    return lines[0]


def lipsync(*args):
    return [sys.executable, "-m", "lipsync_cli", *map(str, args)]


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "a1.wav"
    sf.write(path, speech_like(0.3), 16000)
    return path


# -- 1. the report ---------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["job file", "audio", "output", "character file", "directory", "read-only"])
def test_a_report_that_would_replace_a_file_is_refused_before_work(tmp_path, clip, alice_copy, target):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"audio,character\n{clip.name},{alice_copy}\n")
    out, folder = tmp_path / "out", tmp_path / "folder"
    out.mkdir()
    folder.mkdir()
    if target == "read-only" and not ROOT:
        folder.chmod(0o555)
    report = {"job file": jobs, "audio": clip, "output": out / "alice_a1.mp4",
              "character file": alice_copy / "boxes.npy", "directory": folder,
              "read-only": (Path("/sys") if ROOT else folder) / "report.json"}[target]
    before = {p: p.read_bytes() for p in (jobs, clip, alice_copy / "boxes.npy")}
    result = invoke("batch", jobs, "--output-dir", out, "--name", "{character}_{stem}.mp4", "--device", "cpu",
                    "--report", report)
    line = one_line(result)
    assert str(report) in line and "--report" in line
    assert not list(out.iterdir())
    assert all(p.read_bytes() == data for p, data in before.items())
    assert not list(tmp_path.rglob(".*.tmp"))


# -- 3. signals while planning, and twice while rendering ------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_planning_is_no_jobs_refusal(tmp_path, clip, signum):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("audio,character\n" + f"{clip.name},alice\n" * 3000)
    out, report = tmp_path / "out", tmp_path / "report.json"
    proc = subprocess.Popen(lipsync("batch", jobs, "--output-dir", out, "--name", "{index}.mp4", "--keep-going",
                                    "--device", "cpu", "--report", report),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    while "checking 3000 jobs before rendering" not in (line := proc.stderr.readline()):  # planning starts
        assert line, "the batch ended before it said it was checking its jobs"
    time.sleep(0.3)
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:  # it went on planning, then rendering
        proc.kill()
        pytest.fail("the batch went on after the signal")
    assert proc.returncode == 130 and err.strip().startswith("lipsync: error: interrupted"), err
    data = json.loads(report.read_text())
    assert data["outcome"] == "interrupted" and data["exit_code"] == 130
    assert {j["status"] for j in data["jobs"]} == {"not started"}
    assert not out.exists() or not list(out.iterdir())


def test_ctrl_c_twice_while_rendering_stops_once_cleanly(tmp_path, write_audio):
    clips = [write_audio(speech_like(3.0, seed=i), 16000, name=f"c{i}.wav") for i in range(3)]
    out, report = tmp_path / "out", tmp_path / "report.json"
    proc = subprocess.Popen(lipsync("render", *clips, "-c", "alice", "--output-dir", out, "--device", "cpu",
                                    "--report", report), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (out.is_dir() and any(p.suffix == ".part" for p in out.iterdir())):
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "lipsync: error: interrupted", err
    assert "Traceback" not in err and "terminate called" not in err
    assert json.loads(report.read_text())["outcome"] == "interrupted"
    assert not out.exists() or not [p for p in out.iterdir() if p.suffix == ".part"]


# -- 4. and 12. standard input ---------------------------------------------------------------------

def test_standard_input_takes_the_batch_options(tmp_path, clip, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = clip.read_bytes()
    dry = invoke("render", "-", "-c", "alice", "--dry-run", "--device", "cpu", "--output-dir", tmp_path / "d",
                 input=data)
    assert dry.exit_code == 0 and "would render" in dry.stdout, dry.stderr
    assert not list(tmp_path.rglob("*.mp4"))
    report = tmp_path / "r.json"
    done = invoke("render", "-", "-c", "alice", "--device", "cpu", "--output-dir", tmp_path / "o", "--name",
                  "speech.mp4", "--report", report, input=data)
    assert done.exit_code == 0, done.stderr
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["speech.mp4"]
    (job,) = json.loads(report.read_text())["jobs"]
    assert job["status"] == "ok" and job["source"] == "standard input" and job["audio"] == "-"


def test_empty_or_closed_standard_input_is_named_as_such(tmp_path):
    empty = invoke("render", "-", "-c", "alice", "-o", tmp_path / "x.mp4", input=b"")
    assert one_line(empty) == "lipsync: error: standard input: is empty (nothing was piped in)"
    junk = invoke("render", "-", "-c", "alice", "-o", tmp_path / "x.mp4", input=b"not audio at all" * 100)
    assert one_line(junk).startswith("lipsync: error: standard input: ") and "lipsync-stdin" not in junk.stderr
    closed = subprocess.run(lipsync("render", "-", "-c", "alice", "-o", tmp_path / "x.mp4"), cwd=REPO,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: os.close(0))
    assert closed.returncode == 2 and closed.stderr.startswith("lipsync: error: standard input: is closed")
    assert not (tmp_path / "x.mp4").exists()


# -- 6, 7, 8. job files ----------------------------------------------------------------------------

JOB_FILES = [
    ("csv field too long", "jobs.csv", lambda a: f"audio,character\n{'x' * 140_000}.wav,alice\n", "not valid CSV"),
    ("huge JSON number", "jobs.jsonl", lambda a: '{"audio": "%s", "character": "alice", "crf": %s}\n'
     % (a, "9" * 5000), "jobs.jsonl:1: not a usable JSON object"),
    ("NUL in a path", "jobs.jsonl", lambda a: json.dumps({"audio": f"{a}\0x", "character": "alice"}) + "\n",
     "jobs.jsonl:1: audio: contains a NUL character"),
    ("float crf", "jobs.jsonl", lambda a: json.dumps({"audio": a, "character": "alice", "crf": 20.0}) + "\n",
     "jobs.jsonl:1: crf must be a whole number, not '20.0'"),
    ("two audio columns", "jobs.csv", lambda a: f"audio,character,audio\n{a},alice,other.wav\n",
     "the column 'audio' appears twice"),
    ("a row longer than the header", "jobs.csv", lambda a: f"audio,character\n{a},alice,extra\n",
     "jobs.csv:2: 3 fields, and the header names 2"),
    ("a JSON key twice", "jobs.jsonl", lambda a: '{"audio": "%s", "audio": "b.wav", "character": "alice"}\n' % a,
     "the key 'audio' appears twice"),
]


@pytest.mark.parametrize("case", JOB_FILES, ids=[c[0] for c in JOB_FILES])
def test_bad_job_files_are_one_line(tmp_path, clip, case):
    _, name, text, expected = case
    jobs = tmp_path / name
    jobs.write_text(text(clip.name))
    result = invoke("batch", jobs, "--output-dir", tmp_path / "out", "--device", "cpu")
    line = one_line(result) if len(result.stderr.strip().splitlines()) == 1 else refused_job(result)
    assert expected in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("pattern, expected", [
    ("x" * 300 + ".mp4", "gives a name of 304 bytes"),
    ("{index:>10000}.mp4", "is too large"),
    ("{stem.__class__}{character.__len__}.mp4", "unknown or malformed field {stem.__class__}"),
    ("{character[0]}.mp4", "unknown or malformed field {character[0]}"),
    ("{stem!r}.mp4", "unknown or malformed field {stem!r}"),
])
def test_names_use_only_the_documented_fields_and_fit_a_file_system(tmp_path, clip, pattern, expected):
    other = tmp_path / "a2.wav"
    other.write_bytes(clip.read_bytes())
    result = invoke("render", clip, other, "-c", "alice", "--output-dir", tmp_path / "out", "--name", pattern)
    line = one_line(result)
    assert "--name" in line and expected in line
    assert output_name("{index:03d}-{stem}.mp4", clip, "alice", 7) == "007-a1.mp4"
    long = tmp_path / ("y" * 300 + ".mp4")
    assert one_line(invoke("render", clip, "-c", "alice", "-o", long)) == f"lipsync: error: {long}: File name too long"


def test_job_files_are_split_as_csv_and_jsonl_are(tmp_path):
    (tmp_path / "jobs.csv").write_text('audio,character\n"two\nlines.wav",alice\nnel\u0085inside.wav,alice\n')
    first, second = read_job_file(tmp_path / "jobs.csv", RenderOptions())
    assert first.job.audio == tmp_path / "two\nlines.wav" and first.source == "jobs.csv:2"
    assert second.job.audio == tmp_path / "nel\u0085inside.wav" and second.source == "jobs.csv:4"
    (tmp_path / "jobs.jsonl").write_text('{"audio": "line\u2028sep.wav", "character": "alice"}\n')
    (entry,) = read_job_file(tmp_path / "jobs.jsonl", RenderOptions())
    assert entry.job.audio == tmp_path / "line\u2028sep.wav"
    with pytest.raises(InputError, match="appears twice"):
        (tmp_path / "twice.csv").write_text("audio,character,character\na.wav,alice,bob\n")
        read_job_file(tmp_path / "twice.csv", RenderOptions())


# -- 13. a failed job always says so on stderr -----------------------------------------------------

@pytest.mark.parametrize("keep_going", [False, True], ids=["stop", "keep going"])
def test_a_failed_job_leaves_a_line_on_stderr_even_when_quiet(tmp_path, clip, keep_going):
    broken = character_with(tmp_path, "broken", unet=nan_output(load("unet")))
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"audio,character\n{clip.name},{broken}\n")
    result = invoke("batch", jobs, "-q", "--output-dir", tmp_path / "out", "--device", "cpu",
                    *(["--keep-going"] if keep_going else []))
    line = one_line(result, code=1)
    assert line.startswith("lipsync: error: jobs.csv:2: ") and "NaN" in line


# -- 14. --skip-existing and what is not an output -------------------------------------------------

@pytest.mark.parametrize("what, expected", [("empty file", "exists but is empty, not a finished render"),
                                            ("directory", "is a directory")])
def test_skip_existing_skips_only_a_finished_output(tmp_path, clip, what, expected):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "a1_alice.mp4"
    if what == "empty file":
        target.write_bytes(b"")
    else:
        target.mkdir()
    result = invoke("render", clip, "-c", "alice", "--output-dir", out, "--skip-existing", "--device", "cpu")
    assert expected in refused_job(result)
    assert target.exists() and (target.is_dir() or target.stat().st_size == 0)
