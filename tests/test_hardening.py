"""Inputs found by adversarial runs: a character reaching outside its folder, absurd manifests, streams that
are closed or go away, FIFOs, dangling links, and Ctrl-C while starting up. Real processes where the
behaviour is about the process (its streams, signals, what third-party libraries print)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.cli.app import app
from lipsync_cli.encoding.ffmpeg import host_tag

from .conftest import REPO
from .media import FFMPEG

runner = CliRunner()


def lipsync(*args, timeout=60, **kw):
    return subprocess.run([sys.executable, "-m", "lipsync_cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, **kw)


def edit(folder, old, new):
    path = folder / "character.toml"
    path.write_text(path.read_text().replace(old, new))


@pytest.fixture
def fifo_outside(tmp_path):
    path = tmp_path / "secret.fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_a_character_cannot_reach_outside_its_folder(tmp_path, alice_copy, fifo_outside, write_audio, how):
    if how == "absolute":
        edit(alice_copy, '"template.mp4"', f'"{fifo_outside}"')
    elif how == "dotdot":
        edit(alice_copy, '"template.mp4"', '"../secret.fifo"')
    else:
        (alice_copy / "template.mp4").unlink()
        (alice_copy / "template.mp4").symlink_to(fifo_outside)
    audio = write_audio(speech_like(0.3), 16000)
    started = time.time()
    result = runner.invoke(app, ["render", str(audio), "-c", str(alice_copy), "-o", str(tmp_path / "x.mp4")])
    assert time.time() - started < 5  # opening the FIFO would have blocked for ever
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "outside the character's folder" in result.stderr and "'template'" in result.stderr
    shown = runner.invoke(app, ["characters", str(alice_copy)])
    assert shown.exit_code == 1 and "outside the character" in shown.stdout


@pytest.mark.parametrize("fps", ["1e9", "0.001"])
def test_absurd_fps_is_refused_at_once(tmp_path, alice_copy, write_audio, fps):
    edit(alice_copy, "fps = 25", f"fps = {fps}")
    audio = write_audio(speech_like(0.5), 16000)
    started = time.time()
    result = runner.invoke(app, ["render", str(audio), "-c", str(alice_copy), "-o", str(tmp_path / "x.mp4")])
    assert time.time() - started < 1.0
    assert result.exit_code == 2 and "outside 1 to 240 frames per second" in result.stderr


def test_manifest_numbers_that_must_be_whole(tmp_path, alice_copy, write_audio):
    edit(alice_copy, "size = 328", "size = 328.5")
    result = runner.invoke(app, ["render", str(write_audio(speech_like(0.3), 16000)), "-c", str(alice_copy),
                                 "-o", str(tmp_path / "x.mp4")])
    assert result.exit_code == 2 and "crop.size must be a whole number, not 328.5" in result.stderr


def test_absurd_boxes_are_one_short_line(tmp_path, alice_copy, write_audio):
    boxes = np.load(alice_copy / "boxes.npy").astype(np.float64)
    boxes[3] = [-9.2e18, 0, 10, 10]
    np.save(alice_copy / "boxes.npy", boxes)
    result = lipsync("render", write_audio(speech_like(0.3), 16000), "-c", alice_copy, "-o", tmp_path / "x.mp4")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "box 3 [-9.2e+18, 0, 10, 10] is outside" in result.stderr and len(result.stderr) < 300


def test_a_template_that_is_not_a_video_is_one_line(tmp_path, alice_copy, write_audio):
    (alice_copy / "template.mp4").write_bytes(b"\0" * 5000)
    result = lipsync("render", write_audio(speech_like(0.3), 16000), "-c", alice_copy, "-o", tmp_path / "x.mp4")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "template.mp4: not a readable video" in result.stderr


def test_audio_that_is_a_fifo_is_refused_without_blocking(tmp_path, fifo_outside):
    result = lipsync("render", fifo_outside, "-c", "alice", "-o", tmp_path / "x.mp4", timeout=20)
    assert result.returncode == 2 and "secret.fifo: not a regular file" in result.stderr


def test_an_output_that_is_a_dangling_link_is_refused_before_work(tmp_path, write_audio):
    link = tmp_path / "out.mp4"
    link.symlink_to(tmp_path / "nowhere" / "file.mp4")
    result = runner.invoke(app, ["render", str(write_audio(speech_like(0.3), 16000)), "-c", "alice", "-o",
                                 str(link), "--overwrite"])
    assert result.exit_code == 2 and "symbolic link to a missing file" in result.stderr
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()


def test_closed_stdout_and_a_reader_that_goes_away(tmp_path, write_audio):
    audio = write_audio(speech_like(0.5), 16000)
    closed = subprocess.run([sys.executable, "-m", "lipsync_cli", "render", str(audio), "-c", "alice", "-o",
                             str(tmp_path / "a.mp4"), "--device", "cpu"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, timeout=60,
                            preexec_fn=lambda: os.close(1))
    assert closed.returncode == 0, closed.stderr
    assert (tmp_path / "a.mp4").is_file() and "Traceback" not in closed.stderr
    piped = subprocess.run(f"{sys.executable} -m lipsync_cli render {audio} -c alice -o {tmp_path / 'b.mp4'} "
                           "--device cpu 2>&1 | head -c 10 >/dev/null; echo ${PIPESTATUS[0]}", shell=True,
                           executable="/bin/bash", cwd=REPO, capture_output=True, text=True, timeout=60)
    assert piped.stdout.strip() == "0" and (tmp_path / "b.mp4").is_file()


def test_ctrl_c_while_starting_up(tmp_path, write_audio):
    audio = write_audio(speech_like(5.0), 16000)
    # a Ctrl-C while the libraries load is acted on once they are loaded: allow for a slow, loaded machine
    loading = float(subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter(); "
                                    "import lipsync_cli.cli.app; print(time.perf_counter() - t)"],
                                   cwd=REPO, capture_output=True, text=True, check=True).stdout)
    for delay in (0.15, 0.6):
        proc = subprocess.Popen([sys.executable, "-m", "lipsync_cli", "render", str(audio), "-c", "alice", "-o",
                                 str(tmp_path / "x.mp4"), "--device", "cpu"], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        sent = time.time()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert time.time() - sent < max(1.0, loading + 0.5), (delay, loading)
        assert proc.returncode == 130 and err.strip() == "lipsync: error: interrupted", (delay, err)
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".mp4", ".part")]


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link"])
def test_an_output_that_is_the_input_is_refused(tmp_path, write_audio, how):
    audio = write_audio(speech_like(0.4), 16000)
    original = audio.read_bytes()
    target = {"same path": audio, "symlink": tmp_path / "link.wav", "hard link": tmp_path / "hard.wav"}[how]
    if how == "symlink":
        target.symlink_to(audio)
    elif how == "hard link":
        os.link(audio, target)
    result = runner.invoke(app, ["render", str(audio), "-c", "alice", "-o", str(target), "--overwrite"])
    assert result.exit_code == 2 and "is the audio input" in result.stderr and "would destroy it" in result.stderr
    assert audio.read_bytes() == original


def test_an_output_that_is_a_character_file_or_another_jobs_input(tmp_path, alice_copy, write_audio):
    audio = write_audio(speech_like(0.4), 16000)
    template = (alice_copy / "template.mp4").read_bytes()
    result = runner.invoke(app, ["render", str(audio), "-c", str(alice_copy), "-o", str(alice_copy / "template.mp4"),
                                 "--overwrite"])
    assert result.exit_code == 2 and "alice's template" in result.stderr
    assert (alice_copy / "template.mp4").read_bytes() == template
    other = write_audio(speech_like(0.4, seed=9), 16000, name="other.wav")
    subprocess.run([FFMPEG, "-v", "error", "-i", str(other), "-c:a", "aac", str(tmp_path / "other.mkv")], check=True)
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"audio,character,output\n{audio.name},alice,other.mkv\nother.mkv,alice,\n")
    batch = runner.invoke(app, ["batch", str(jobs), "--overwrite", "--output-dir", str(tmp_path)])
    assert batch.exit_code == 2 and "jobs.csv:2" in batch.stderr and "the audio input of jobs.csv:3" in batch.stderr
    assert not list(tmp_path.glob("*.mp4"))


def test_killed_renders_temporary_files_are_removed_by_the_next_render_into_the_folder(tmp_path, write_audio):
    audio = write_audio(speech_like(0.4), 16000)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = host_tag()
    elsewhere = "0000" if here != "0000" else "ffff"
    stale = [tmp_path / f".out.mp4.{dead.pid}.deadbeef.part",  # the output's own, from any machine
             tmp_path / f".killed.mp4.{dead.pid}.{here}abcd.part"]  # this machine's, for another output
    kept = [tmp_path / f".other.mp4.{os.getppid()}.{here}f00d.part",  # a process that exists
            tmp_path / f".remote.mp4.{dead.pid}.{elsewhere}abcd.part",  # another machine's: it may be running
            tmp_path / ".notes.part", tmp_path / f".x.mp4.{dead.pid}.part"]  # not a render's name
    for path in stale + kept:
        path.write_bytes(b"half a video")
    result = runner.invoke(app, ["render", str(audio), "-c", "alice", "-o", str(tmp_path / "out.mp4")])
    assert result.exit_code == 0
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert (tmp_path / "out.mp4").is_file()
