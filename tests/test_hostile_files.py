"""Hostile files and folders (issue 26): a template cache on a full file system and with unusable entries, Ray
workers' folders, SyncTalk_2D datasets, inspect on what is not a render, doctor with a cache that is a file.
Batches and job lists: test_hostile.py."""

import json
import os
import shutil
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
import soundfile as sf

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.frames.cache_file import HEADER, MAGIC
from lipsync_cli.frames.store import SUFFIX, TemplateStore
from lipsync_cli.runtime import RuntimeConfig

from .conftest import ALICE, REPO
from .media import FFMPEG
from .test_hostile import ROOT, invoke, one_line
from .test_import import make_dataset, run_import


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "a1.wav"
    sf.write(path, speech_like(0.3), 16000)
    return path


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
    notes = [line for line in stderr.splitlines() if line.startswith("note:") and "for the first time" not in line]
    assert len(notes) == 1 and "template cache off for this run" in notes[0] and "No space left" in notes[0]
    assert not [n for n in (tmp_path / "listing").read_text().split() if n.endswith((".part", ".tmp"))]
    reference = tmp_path / "reference.mp4"
    assert invoke("render", audio, "-c", "alice", "-o", reference, "--device", "cpu", "--no-cache").exit_code == 0
    assert (tmp_path / "out.mp4").read_bytes() == reference.read_bytes()


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
    files = {"text": ("t.mp4", b"plain text\n" * 10, "is not a video file ffmpeg can read"),
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


# -- 15. doctor and a cache that is a file ---------------------------------------------------------

def test_doctor_warns_when_the_cache_folder_is_a_file(tmp_path, monkeypatch):
    blocker = tmp_path / "cache"
    blocker.write_text("a file, not a folder")
    monkeypatch.setenv("LIPSYNC_CACHE", str(blocker))
    result = invoke("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["cache"]["status"] == "warning" and f"{blocker} is not a folder" in checks["cache"]["found"]
    assert "LIPSYNC_CACHE" in checks["cache"]["fix"]
