"""The third matrix of hostile inputs (issue 26): nothing lost, nothing crashes, one line and exit 2 where an
input is bad. Reports that would replace an input, a cache on a full file system, signals while planning,
standard input, Ray workers' folders, job files, cache entries, dataset imports, inspect, failing jobs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.batch.sources import output_name, read_job_file
from lipsync_cli.cli.app import app
from lipsync_cli.errors import InputError
from lipsync_cli.frames.cache_file import HEADER, MAGIC
from lipsync_cli.frames.store import SUFFIX, TemplateStore
from lipsync_cli.render import RenderOptions
from lipsync_cli.runtime import RuntimeConfig

from .conftest import ALICE, REPO
from .media import FFMPEG
from .models import character_with, load, nan_output
from .test_import import make_dataset, run_import

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


# -- 2. a template cache on a full file system -----------------------------------------------------

def test_a_cache_on_a_file_system_that_fills_up_is_turned_off_and_the_render_goes_on(tmp_path):
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare command to mount a private tmpfs with")
    audio = tmp_path / "a.wav"
    sf.write(audio, speech_like(0.6), 16000)
    script = f"""
        mkdir -p "$1" && mount -t tmpfs -o size=16m tmpfs "$1" 2>{tmp_path}/mount || exit 99
        cd "$1"
        LIPSYNC_CACHE="$1/cache" TMPDIR="$1" PYTHONPATH={REPO} {sys.executable} -m lipsync_cli render {audio} \\
            -c alice -o "$1/out.mp4" --device cpu 2>"$1/stderr"
        echo $? > {tmp_path}/rc
        cp "$1/stderr" {tmp_path}/stderr; cp "$1/out.mp4" {tmp_path}/out.mp4
        ls -a "$1" "$1/cache/templates" > {tmp_path}/listing
    """
    private = [unshare, "-m", "--propagation", "private"] if ROOT else [unshare, "-Urm"]
    done = subprocess.run([*private, "sh", "-c", script, "sh", str(tmp_path / "small")], timeout=120,
                          capture_output=True, text=True)
    if done.returncode == 99 or not (tmp_path / "rc").exists():
        why = (tmp_path / "mount").read_text() if (tmp_path / "mount").exists() else done.stderr
        pytest.skip(f"cannot mount a private tmpfs here: {why.strip()[:200]}")
    stderr = (tmp_path / "stderr").read_text()
    assert (tmp_path / "rc").read_text().strip() == "0", stderr  # was 135 (SIGBUS) with a .part left behind
    notes = [line for line in stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "template cache off for this run" in notes[0] and "No space left" in notes[0]
    assert not [n for n in (tmp_path / "listing").read_text().split() if n.endswith((".part", ".tmp"))]
    reference = tmp_path / "reference.mp4"
    assert invoke("render", audio, "-c", "alice", "-o", reference, "--device", "cpu", "--no-cache").exit_code == 0
    assert (tmp_path / "out.mp4").read_bytes() == reference.read_bytes()


# -- 3. signals while planning, and twice while rendering ------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_planning_is_no_jobs_refusal(tmp_path, clip, signum):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("audio,character\n" + f"{clip.name},alice\n" * 3000)
    out, report = tmp_path / "out", tmp_path / "report.json"
    proc = subprocess.Popen(lipsync("batch", jobs, "--output-dir", out, "--name", "{index}.mp4", "--keep-going",
                                    "--device", "cpu", "--report", report),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not out.exists() and time.time() < deadline:  # made just before planning starts
        time.sleep(0.01)
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


# -- 5. Ray workers' folders -----------------------------------------------------------------------

def test_a_worker_removes_its_folder_and_those_of_dead_workers(tmp_path, monkeypatch):
    from lipsync_cli.cluster.worker import PREFIX, RenderWorker, remove_dead_workers

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{PREFIX}{dead.pid}-abcd"
    (stale / "characters").mkdir(parents=True)
    alive = tmp_path / f"{PREFIX}{os.getppid()}-efgh"
    alive.mkdir()
    worker = RenderWorker(RuntimeConfig(devices="cpu"))
    assert not stale.exists() and alive.is_dir()  # a dead worker's folder goes when the next one starts
    assert worker.root.parent == tmp_path and worker.root.name.startswith(f"{PREFIX}{os.getpid()}-")
    worker.shutdown()
    assert not worker.root.exists()
    assert remove_dead_workers(tmp_path) == []


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
    result = invoke("render", clip, clip, "-c", "alice", "--output-dir", tmp_path / "out", "--name", pattern)
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


# -- 9. cache entries ------------------------------------------------------------------------------

def _damage(path, how):
    if how == "header a list":
        path.write_bytes((MAGIC + b"[1, 2, 3]").ljust(HEADER, b"\0"))
    elif how == "layout a list":
        path.write_bytes((MAGIC + json.dumps({"format": 3, "layout": [1, 2], "valid": 1}).encode()).ljust(HEADER,
                                                                                                          b"\0"))
    elif how == "a directory":
        (path / "inside").mkdir(parents=True)
    else:
        os.mkfifo(path)


@pytest.mark.parametrize("how", ["header a list", "layout a list", "a directory", "a FIFO"])
def test_an_unusable_cache_entry_is_rebuilt_and_never_waited_on(tmp_path, clip, alice, monkeypatch, how):
    monkeypatch.setenv("LIPSYNC_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "templates"
    folder.mkdir(parents=True)
    entry = folder / f"{TemplateStore(cache_dir=folder).key(alice.template_spec)}{SUFFIX}"
    _damage(entry, how)
    waited, done = [], threading.Event()

    def unblock():  # a reader stuck opening the FIFO is let go, so that a regression fails instead of hanging
        while not done.wait(5):
            try:
                os.close(os.open(entry, os.O_WRONLY | os.O_NONBLOCK))
                waited.append(True)
            except OSError:
                pass

    threading.Thread(target=unblock, daemon=True).start()
    try:
        listed = invoke("cache")
        rendered = invoke("render", clip, "-c", "alice", "-o", tmp_path / "x.mp4", "--device", "cpu")
    finally:
        done.set()
    assert not waited
    assert listed.exit_code == 0, listed.stderr
    assert rendered.exit_code == 0, rendered.stderr
    assert entry.is_file() and not entry.is_fifo()  # rebuilt in its place
    assert invoke("cache").exit_code == 0


# -- 10. SyncTalk_2D imports -----------------------------------------------------------------------

def _break_dataset(dataset, tmp_path, how):
    if how == "NaN landmark":
        path = dataset / "landmarks" / "2.lms"
        lines = path.read_text().splitlines()
        lines[31] = "nan 10.0"
        path.write_text("\n".join(lines) + "\n")
    elif how == "inf landmark":
        path = dataset / "landmarks" / "0.lms"
        lines = path.read_text().splitlines()
        lines[52] = "5.0 inf"
        path.write_text("\n".join(lines) + "\n")
    elif how == "truncated JPEG":
        path = dataset / "full_body_img" / "3.jpg"
        path.write_bytes(path.read_bytes()[:-4000])
    elif how == "mask not an image":
        (dataset / "parsing" / "1.png").write_text("not an image")
    elif how == "mask of another size":
        cv2.imwrite(str(dataset / "parsing" / "4.png"), np.zeros((100, 100, 3), np.uint8))
    else:
        (tmp_path / "junk.onnx").write_bytes(b"not a model")
        return tmp_path / "junk.onnx"
    return ALICE / "model_best.onnx"


@pytest.mark.parametrize("how, expected", [
    ("NaN landmark", "landmarks/2.lms: point 31 is not a finite number"),
    ("inf landmark", "landmarks/0.lms: point 52 is not a finite number"),
    ("truncated JPEG", "full_body_img/3.jpg: not a readable JPEG image (cut short)"),
    ("mask not an image", "parsing/1.png: not a readable image"),
    ("mask of another size", "parsing/4.png: 100x100, the frames are 640x480"),
    ("junk UNet", "junk.onnx"),
])
def test_bad_datasets_and_models_are_refused_at_import(tmp_path, how, expected):
    dataset = make_dataset(tmp_path / "data")
    unet = _break_dataset(dataset, tmp_path, how)
    result = invoke("characters", "import", "synctalk2d", dataset, "--unet", unet, "--audio-encoder",
                    ALICE / "audio_encoder.onnx", "--name", "bad", "--out", tmp_path / "bad")
    line = one_line(result)
    assert expected in line and ".importing" not in line and "Premature end" not in result.stderr
    assert not (tmp_path / "bad").exists() and not (tmp_path / ".bad.importing").exists()
    if how == "junk UNet":
        assert line.startswith(f"lipsync: error: {unet}: ")
        assert run_import(tmp_path, dataset, "good").exit_code == 0  # the same dataset with a real model


# -- 11. inspect on what is not a whole render -----------------------------------------------------

def test_inspect_refuses_what_is_not_a_whole_render(tmp_path, clip):
    good = tmp_path / "good.mp4"
    assert invoke("render", clip, "-c", "alice", "-o", good, "--device", "cpu").exit_code == 0
    files = {"text": ("t.mp4", b"plain text\n" * 10, "not a readable video"),
             "empty": ("e.mp4", b"", "the file is empty"),
             "truncated": ("cut.mp4", good.read_bytes()[: good.stat().st_size // 2], "truncated"),
             "nearly whole": ("most.mp4", good.read_bytes()[: good.stat().st_size * 9 // 10], "truncated")}
    audio_only = tmp_path / "sound.mp4"
    subprocess.run([FFMPEG, "-v", "error", "-i", str(clip), "-c:a", "aac", str(audio_only)], check=True)
    for name, data, _ in files.values():
        (tmp_path / name).write_bytes(data)
    checks = [(tmp_path / name, expected) for name, _, expected in files.values()]
    for path, expected in checks + [(audio_only, "no video stream")]:
        line = one_line(invoke("inspect", path, "-c", "alice"))
        assert f"{path}: " in line and expected in line
    assert invoke("inspect", good, "-c", "alice").exit_code == 0


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


# -- 15. doctor and a cache that is a file ---------------------------------------------------------

def test_doctor_warns_when_the_cache_folder_is_a_file(tmp_path, monkeypatch):
    blocker = tmp_path / "cache"
    blocker.write_text("a file, not a folder")
    monkeypatch.setenv("LIPSYNC_CACHE", str(blocker))
    result = invoke("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["cache"]["status"] == "warning" and f"{blocker} is not a folder" in checks["cache"]["found"]
    assert "LIPSYNC_CACHE" in checks["cache"]["fix"]
