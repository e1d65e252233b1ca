"""Many renders in one run: inputs, job files, planning before work, resume, concurrency and the report."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.batch.sources import expand_audio, output_name, read_job_file
from lipsync_cli.cli.app import app
from lipsync_cli.errors import InputError
from lipsync_cli.render import RenderOptions

from .conftest import ALICE, REPO

runner = CliRunner()


@pytest.fixture
def clips(tmp_path, write_audio):
    """Four short clips in tmp_path/in (0.4 s to 0.7 s)."""
    folder = tmp_path / "in"
    folder.mkdir()
    return [write_audio(speech_like(0.4 + 0.1 * i, seed=i), 16000, name=f"in/clip{i}.wav") for i in range(4)]


def invoke(*args):
    return runner.invoke(app, [*map(str, args)])


def test_inputs_from_files_folders_and_globs(tmp_path, clips):
    (tmp_path / "in" / "notes.txt").write_text("not audio")
    sub = tmp_path / "in" / "sub"
    sub.mkdir()
    (sub / "deep.wav").write_bytes(clips[0].read_bytes())
    assert expand_audio([str(tmp_path / "in")]) == clips
    assert expand_audio([str(tmp_path / "in")], recursive=True) == clips + [sub / "deep.wav"]
    assert expand_audio([str(tmp_path / "in" / "clip[13].wav"), str(clips[0])]) == [clips[1], clips[3], clips[0]]
    with pytest.raises(InputError, match="no file matches"):
        expand_audio([str(tmp_path / "in" / "*.mp3")])
    assert output_name("{index:03d}-{stem}_{character}.mp4", clips[2], "alice", 7) == "007-clip2_alice.mp4"
    with pytest.raises(InputError, match="unknown or malformed field"):
        output_name("{speaker}.mp4", clips[2], "alice", 1)


def test_job_files_csv_and_jsonl_with_relative_paths(tmp_path, clips):
    (tmp_path / "jobs.csv").write_text("audio,character,output,blend,crf\nin/clip0.wav,alice,out/a.mp4,hard,20\n"
                                       "in/clip1.wav,alice,,,\n")
    a, b = read_job_file(tmp_path / "jobs.csv", RenderOptions())
    assert a.job.audio == tmp_path / "in" / "clip0.wav" and a.job.output == tmp_path / "out" / "a.mp4"
    assert a.job.options.blend == "hard" and a.job.options.encode.crf == 20 and a.source == "jobs.csv:2"
    assert b.job.output is None and b.job.options == RenderOptions()
    (tmp_path / "jobs.jsonl").write_text(json.dumps({"audio": "in/clip2.wav", "character": str(ALICE),
                                                     "batch_size": 3, "window_end": "clamp"}) + "\n\n")
    (c,) = read_job_file(tmp_path / "jobs.jsonl", RenderOptions())
    assert c.job.options.batch_size == 3 and c.job.options.window_end == "clamp" and c.source == "jobs.jsonl:1"
    (tmp_path / "bad.csv").write_text("audio,character,speaker\nin/clip0.wav,alice,bob\n")
    with pytest.raises(InputError, match="unknown column.*speaker"):
        read_job_file(tmp_path / "bad.csv", RenderOptions())
    (tmp_path / "badvalue.csv").write_text("audio,character,crf\nin/clip0.wav,alice,high\n")
    (entry,) = read_job_file(tmp_path / "badvalue.csv", RenderOptions())
    assert entry.job is None and "badvalue.csv:2" in entry.error


def test_unknown_column_refuses_the_file_in_one_line(tmp_path, clips):
    (tmp_path / "jobs.csv").write_text("audio,character,voice\nin/clip0.wav,alice,x\n")
    result = invoke("batch", tmp_path / "jobs.csv", "--output-dir", tmp_path / "out")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "jobs.csv: unknown column(s) voice" in result.stderr and not (tmp_path / "out").exists()


def test_one_bad_job_refuses_the_batch_and_keep_going_renders_the_rest(tmp_path, clips):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("audio,character\nin/clip0.wav,alice\nin/missing.wav,alice\nin/clip1.wav,nobody\n"
                    "in/clip2.wav,alice\n")
    out, report = tmp_path / "out", tmp_path / "report.json"
    refused = invoke("batch", jobs, "--output-dir", out, "--device", "cpu", "--report", report)
    assert refused.exit_code == 2
    lines = refused.stderr.strip().splitlines()
    assert lines[0] == f"lipsync: error: jobs.csv:3: {tmp_path / 'in' / 'missing.wav'}: no such file"
    assert lines[1].startswith("lipsync: error: jobs.csv:4: nobody: no such character")
    assert not out.exists()
    data = json.loads(report.read_text())
    assert [j["status"] for j in data["jobs"]] == ["not started", "refused", "refused", "not started"]
    going = invoke("batch", jobs, "--output-dir", out, "--device", "cpu", "--report", report, "--keep-going")
    assert going.exit_code == 1
    assert sorted(os.listdir(out)) == ["clip0_alice.mp4", "clip2_alice.mp4"]
    data = json.loads(report.read_text())
    assert [j["status"] for j in data["jobs"]] == ["ok", "refused", "refused", "ok"]
    assert data["jobs"][0]["frames"] == 10 and data["jobs"][0]["fps"] > 0 and data["jobs"][0]["device"] == "cpu"
    assert data["exit_code"] == 1 and data["models"][0]["name"] == "alice"


def test_two_jobs_writing_one_file_are_refused(tmp_path, clips):
    result = invoke("render", clips[0], tmp_path / "other" / "clip0.wav", "-c", "alice", "--output-dir",
                    tmp_path / "out", "--name", "same.mp4")
    assert result.exit_code == 2 and "is also the output of" in result.stderr
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("audio,character,output\nin/clip0.wav,alice,x.mp4\nin/clip1.wav,alice,x.mp4\n")
    result = invoke("batch", jobs)
    assert result.exit_code == 2 and "jobs.csv:3" in result.stderr and "also the output of jobs.csv:2" in result.stderr


def test_a_file_listed_twice_is_planned_once_with_one_note(tmp_path, clips):
    result = invoke("render", tmp_path / "in" / "clip*.wav", tmp_path / "in", "-r", "-c", "alice", "--output-dir",
                    tmp_path / "out", "--device", "cpu", "--dry-run")
    assert result.exit_code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == [f"note: 4 inputs listed more than once, rendered once: {clips[0]}, {clips[1]}, {clips[2]}, ..."]
    assert result.stdout.count("would render") == 4


def test_output_option_is_for_one_input(tmp_path, clips):
    result = invoke("render", clips[0], clips[1], "-c", "alice", "-o", tmp_path / "x.mp4")
    assert result.exit_code == 2 and "-o) is for one input" in result.stderr


def test_dry_run_plans_and_renders_nothing(tmp_path, clips):
    result = invoke("render", tmp_path / "in", "-c", "alice", "--output-dir", tmp_path / "out", "--dry-run",
                    "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "would render" in result.stdout and "clip3_alice.mp4" in result.stdout
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")
    bad = invoke("render", tmp_path / "in", tmp_path / "nope.wav", "-c", "alice", "--dry-run")
    assert bad.exit_code == 2 and "nope.wav: no such file" in bad.stderr


def test_a_concurrent_batch_equals_single_renders(tmp_path, clips):
    out = tmp_path / "out"
    result = invoke("render", *clips, "-c", "alice", "--output-dir", out, "--device", "cpu", "--jobs", "3")
    assert result.exit_code == 0, result.stderr
    for clip in clips:
        single = tmp_path / f"single_{clip.stem}.mp4"
        assert invoke("render", clip, "-c", "alice", "-o", single, "--device", "cpu").exit_code == 0
        assert (out / f"{clip.stem}_alice.mp4").read_bytes() == single.read_bytes(), clip


def test_two_characters_interleaved_under_one_model_slot(tmp_path, clips):
    from .characters import make_character

    bob, _ = make_character(tmp_path / "bob", [2, 4, 6, 8])
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"audio": str(c), "character": name}) + "\n"
                            for c, name in zip(clips, ["alice", str(bob), "alice", str(bob)], strict=True)))
    report = tmp_path / "report.json"
    result = invoke("batch", jobs, "--output-dir", tmp_path / "out", "--max-models", "1", "--jobs", "1",
                    "--devices", "cpu", "--report", report)
    assert result.exit_code == 0, result.stderr
    data = json.loads(report.read_text())
    models = {m["name"]: m for m in data["models"]}
    assert models["alice"]["evictions"] >= 1 and models["bob"]["evictions"] >= 1
    assert models["alice"]["loads"] == 2 and models["alice"]["requests"] == 2
    for i, clip in enumerate(clips):
        name = "alice" if i % 2 == 0 else "bob"
        single = tmp_path / f"single{i}.mp4"
        assert invoke("render", clip, "-c", str(ALICE) if name == "alice" else bob, "-o", single,
                      "--device", "cpu").exit_code == 0
        assert (tmp_path / "out" / f"{clip.stem}_{name}.mp4").read_bytes() == single.read_bytes()


def test_skip_existing_resumes_an_interrupted_batch(tmp_path, write_audio):
    clips = [write_audio(speech_like(2.5, seed=i), 16000, name=f"long{i}.wav") for i in range(5)]
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "lipsync_cli", "render", *map(str, clips), "-c", "alice", "--output-dir",
               str(out), "--device", "cpu", "--jobs", "1", "--report", str(report)]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not (out.is_dir() and any(p.suffix == ".mp4" for p in out.iterdir())):
        time.sleep(0.05)
    time.sleep(0.3)
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.time() - sent < 1.5 and proc.returncode == 130, err
    done = sorted(p.name for p in out.iterdir())
    assert all(name.endswith("_alice.mp4") for name in done) and 1 <= len(done) < 5, done  # no temporary files
    jobs = json.loads(report.read_text())["jobs"]
    statuses = [j["status"] for j in jobs]
    assert statuses.count("ok") == len(done) and "not started" in statuses
    assert statuses.count("interrupted") == 1 and "failed" not in statuses, statuses  # the job in flight
    assert [j["error"] for j in jobs if j["status"] == "interrupted"] == ["interrupted"]
    before = {name: (out / name).stat().st_mtime_ns for name in done}
    resumed = subprocess.run(command + ["--skip-existing"], cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    statuses = [j["status"] for j in json.loads(report.read_text())["jobs"]]
    assert statuses.count("skipped") == len(done) and statuses.count("ok") == 5 - len(done)
    assert all((out / name).stat().st_mtime_ns == t for name, t in before.items())  # finished ones kept
    for clip in clips[:2]:
        single = tmp_path / f"single_{clip.stem}.mp4"
        assert invoke("render", clip, "-c", "alice", "-o", single, "--device", "cpu").exit_code == 0
        assert (out / f"{clip.stem}_alice.mp4").read_bytes() == single.read_bytes()


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path, clips):
    from lipsync_cli.batch.report import JobRecord
    from lipsync_cli.cli.progress import BatchProgress
    from lipsync_cli.render import FramesDone, RenderJob

    class Sink:
        def __init__(self):
            self.lines = []

        def write(self, text):
            self.lines.append(text)

        def flush(self):
            pass

    sink = Sink()
    progress = BatchProgress(2, 20, interactive=False, stream=sink, every=0.05)
    record = JobRecord(1, "a.wav", "a.wav", "alice", "a.mp4")
    job = RenderJob(clips[0], "alice")
    for i in range(10):
        progress.update(record, FramesDone(job, 1, i + 1, 10))
        time.sleep(0.02)
    progress.update(record, None)
    progress.close()
    assert len(sink.lines) >= 2
    assert sink.lines[-1].startswith("lipsync: 1/2 jobs, 10/20 frames") and "fps" in sink.lines[-1]
    # and through the CLI, whose stderr is captured (not a terminal)
    result = invoke("render", *clips[:2], "-c", "alice", "--output-dir", tmp_path / "o", "--device", "cpu")
    assert result.exit_code == 0 and "batch summary" in result.stdout


def test_progress_counts_an_interrupted_job_as_not_done_and_prints_its_last_line_once(clips):
    from lipsync_cli.batch.report import JobRecord
    from lipsync_cli.cli.progress import BatchProgress
    from lipsync_cli.render import FramesDone, RenderJob

    class Sink(list):
        def write(self, text):
            self.append(text)

        def flush(self):
            pass

    sink = Sink()
    progress = BatchProgress(2, 20, interactive=False, stream=sink, every=0.01)
    done, stopped = (JobRecord(i, f"{i}.wav", f"{i}.wav", "alice", f"{i}.mp4") for i in (1, 2))
    job = RenderJob(clips[0], "alice")
    progress.update(done, FramesDone(job, 10, 10, 10))
    done.status = "ok"
    progress.update(done, None)
    progress.update(stopped, FramesDone(job, 4, 4, 10))
    stopped.status = "interrupted"
    progress.update(stopped, None)
    time.sleep(0.02)
    progress.close()
    progress.close()  # the interrupt path closes it, and so does the `finally` after it
    assert sink[-1].startswith("lipsync: 1/2 jobs, 14/20 frames") and sink.count(sink[-1]) == 1, sink


def test_characters_json_for_scripts(tmp_path, alice_copy):
    listing = invoke("characters", "--json")
    assert listing.exit_code == 0
    names = {c["name"]: c for c in json.loads(listing.stdout)}
    assert names["alice"]["status"] == "ok" and names["alice"]["template"]["frames"] == 200
    (alice_copy / "boxes.npy").write_bytes(b"broken")
    broken = invoke("characters", str(alice_copy), "--json")
    data = json.loads(broken.stdout)
    assert broken.exit_code == 1 and data["status"] != "ok" and "boxes.npy" in data["status"]
