"""Outputs in folders that do not exist yet: made when the work starts (never by a dry run), refused before work
only when they cannot be made, with the reason."""

import json
import os

from typer.testing import CliRunner

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.cli.app import app

from .media import probe

runner = CliRunner()


def test_render_makes_the_folders_of_its_output(tmp_path, write_audio):
    audio = write_audio(speech_like(0.3), 16000)
    out = tmp_path / "new" / "deeper" / "y.mp4"
    result = runner.invoke(app, ["render", str(audio), "-c", "alice", "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    assert probe(out).frames == 8 and os.listdir(out.parent) == ["y.mp4"]


def test_job_outputs_and_the_report_go_into_new_folders_but_a_dry_run_makes_none(tmp_path, write_audio):
    write_audio(speech_like(0.3), 16000, name="01.wav")
    write_audio(speech_like(0.4, seed=2), 16000, name="02.wav")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("audio,character,output\n01.wav,alice,\n02.wav,alice,bob/02.mp4\n")
    common = ["batch", str(jobs), "--output-dir", str(tmp_path / "out" / "a"), "--device", "cpu"]
    dry = runner.invoke(app, [*common, "--dry-run"])
    assert dry.exit_code == 0 and "would render" in dry.stdout, dry.stderr
    assert not (tmp_path / "bob").exists() and not (tmp_path / "out").exists()
    report = tmp_path / "reports" / "today" / "r.json"
    result = runner.invoke(app, [*common, "--report", str(report)])
    assert result.exit_code == 0, result.stderr
    assert probe(tmp_path / "bob" / "02.mp4").frames == 10
    assert probe(tmp_path / "out" / "a" / "01_alice.mp4").frames == 8
    assert json.loads(report.read_text())["counts"] == {"ok": 2}


def test_folders_that_cannot_be_made_are_refused_before_work(tmp_path, write_audio):
    audio = write_audio(speech_like(0.3), 16000)
    blocker = tmp_path / "taken"
    blocker.write_text("a file where a folder would go")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"audio,character,output\n{audio},alice,taken/sub/a.mp4\n")
    cases = [
        (["render", str(audio), "-c", "alice", "-o", str(blocker / "x.mp4")],
         f"{blocker / 'x.mp4'}: the directory {blocker} is a file, not a folder"),
        (["batch", str(jobs)], f"jobs.csv:2: {blocker / 'sub' / 'a.mp4'}: the directory {blocker / 'sub'} cannot be "
                               f"made: {blocker} is a file, not a folder"),
        (["render", str(audio), "-c", "alice", "--output-dir", str(blocker / "o"), "--dry-run"],
         f"{blocker / 'o'}: the output folder cannot be used or made: {blocker} is a file, not a folder"),
        (["batch", str(jobs), "--report", str(blocker / "r.json")],
         f"{blocker / 'r.json'}: the report's folder cannot be used or made: {blocker} is a file, not a folder"),
    ]
    for args, expected in cases:
        result = runner.invoke(app, args)
        errors = [line for line in result.stderr.splitlines() if line.startswith("lipsync: error:")]
        assert result.exit_code == 2 and len(errors) == 1 and expected in errors[0], (args, result.stderr)
    assert sorted(os.listdir(tmp_path)) == ["audio.wav", "jobs.csv", "taken"]


def test_a_cluster_output_received_as_bytes_goes_into_a_new_folder(tmp_path):
    from lipsync_cli.cluster.driver import publish_bytes

    target = tmp_path / "from" / "the cluster" / "a.mp4"
    publish_bytes(target, b"an mp4's bytes", overwrite=False)
    assert target.read_bytes() == b"an mp4's bytes" and os.listdir(target.parent) == ["a.mp4"]


def test_a_live_stream_to_a_file_makes_its_folders(tmp_path, write_audio):
    import subprocess
    import sys

    audio = write_audio(speech_like(0.3), 16000)
    out = tmp_path / "new" / "deeper" / "live.ts"
    done = subprocess.run([sys.executable, "-m", "lipsync_cli", "live", str(audio), "-c", "alice", "--to", str(out),
                           "-d", "cpu", "-q"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert probe(out).frames >= 8 and os.listdir(out.parent) == ["live.ts"]
