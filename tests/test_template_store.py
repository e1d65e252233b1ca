"""The template store: frames from the on-disk cache equal freshly prepared ones, bad entries are rebuilt,
several processes share it, memory stays under the budget, and renders do not depend on it."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.cli.app import app
from lipsync_cli.frames.decode import YuvDecoder
from lipsync_cli.frames.store import SUFFIX, TemplateStore
from lipsync_cli.frames.template import prepare
from lipsync_cli.processes import host_tag
from lipsync_cli.render import RenderJob, RenderOptions, execute, plan
from lipsync_cli.runtime import Runtime, RuntimeConfig
from lipsync_cli.specs import CropSpec, TemplateSpec

from .conftest import ALICE, REPO
from .media import FFMPEG

runner = CliRunner()


def fresh_frames(character, count):
    decoder = YuvDecoder(character.template, character.video.width, character.video.height)
    out = []
    for k in range(count):
        decoded = decoder.read()
        assert decoded is not None
        out.append(prepare(k, *decoded, character.boxes[k], character.crop))
    decoder.close()
    return out


def same(a, b):
    return (np.array_equal(a.i420, b.i420) and np.array_equal(a.region_bgr, b.region_bgr)
            and np.array_equal(a.crop, b.crop) and a.region == b.region)


def read_all(store, character, count):
    with store.open(character.template_spec) as template:
        return [template.frame(k) for k in range(count)]


def entry_file(directory):
    (entry,) = directory.glob(f"*{SUFFIX}")
    return entry


def test_frames_from_the_cache_equal_freshly_prepared_frames(tmp_path, alice):
    expected = fresh_frames(alice, 12)
    first = TemplateStore(cache_dir=tmp_path)
    assert all(same(a, b) for a, b in zip(read_all(first, alice, 12), expected, strict=True))
    first.close()
    second = TemplateStore(cache_dir=tmp_path)
    assert all(same(a, b) for a, b in zip(read_all(second, alice, 12), expected, strict=True))
    assert second.decodes == {}  # nothing decoded: all 12 came from the entry
    assert all(same(a, b) for a, b in zip(read_all(second, alice, 14)[12:], fresh_frames(alice, 14)[12:],
                                          strict=True))
    assert sum(second.decodes.values()) == 2  # only the frames beyond the published prefix
    second.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign"])
def test_a_damaged_entry_is_rebuilt_never_used(tmp_path, alice, damage):
    store = TemplateStore(cache_dir=tmp_path)
    read_all(store, alice, 6)
    store.close()
    entry = entry_file(tmp_path)
    data = bytearray(entry.read_bytes())
    if damage == "flip":
        data[4096 + 1000] ^= 0xFF  # inside record 0
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[20:40] = b"x" * 20  # the header no longer names this template
    entry.write_bytes(bytes(data))
    notices = []
    store = TemplateStore(cache_dir=tmp_path, notify=notices.append)
    frames = read_all(store, alice, 6)
    assert all(same(a, b) for a, b in zip(frames, fresh_frames(alice, 6), strict=True))
    assert sum(store.decodes.values()) >= 1 and any("rebuilding" in n for n in notices)
    store.close()
    again = TemplateStore(cache_dir=tmp_path)  # the rebuilt entry is whole again
    assert all(same(a, b) for a, b in zip(read_all(again, alice, 6), fresh_frames(alice, 6), strict=True))
    assert again.decodes == {}
    again.close()


def test_two_processes_filling_one_entry(tmp_path, alice):
    script = textwrap.dedent(f"""
        from pathlib import Path
        from lipsync_cli.characters.manifest import load_character
        from lipsync_cli.frames.store import TemplateStore
        store = TemplateStore(cache_dir=Path({str(tmp_path)!r}))
        with store.open(load_character({str(ALICE)!r}).template_spec) as t:
            for k in range(30):
                t.frame(k)
        store.close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        assert p.wait(120) == 0, p.stderr.read()
    assert not list(tmp_path.glob(".*.tmp"))  # each published or removed its private file
    store = TemplateStore(cache_dir=tmp_path)
    assert all(same(a, b) for a, b in zip(read_all(store, alice, 30), fresh_frames(alice, 30), strict=True))
    assert store.decodes == {}
    store.close()


def test_the_stale_sweep_spares_other_machines_entries_in_progress(tmp_path, alice):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = host_tag()
    elsewhere = "0000" if here != "0000" else "ffff"
    stale = tmp_path / f".key1.{dead.pid}.{here}abcd.tmp"  # this machine's, of a process that is gone
    kept = [tmp_path / f".key2.{dead.pid}.{elsewhere}abcd.tmp",  # another machine's: its process may be running
            tmp_path / f".key3.{os.getppid()}.{here}abcd.tmp"]  # this machine's, of a process that runs
    for path in (stale, *kept):
        path.write_bytes(b"half an entry")
    store = TemplateStore(cache_dir=tmp_path)
    with store.open(alice.template_spec) as template:
        template.frame(0)
    store.close()
    assert not stale.exists() and all(p.exists() for p in kept)


def test_a_cache_folder_that_cannot_be_written_degrades_to_no_cache(tmp_path, alice):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    notices = []
    store = TemplateStore(cache_dir=blocker / "templates", notify=notices.append)
    frames = read_all(store, alice, 5) + read_all(store, alice, 5)
    assert all(same(a, b) for a, b in zip(frames[:5], fresh_frames(alice, 5), strict=True))
    assert len(notices) == 1 and "template cache off" in notices[0]
    store.close()


def test_resident_memory_is_bounded_by_the_budget_not_the_template_length(tmp_path):
    n, w, h = 400, 640, 480
    template = tmp_path / "long.mkv"
    subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate=25", "-frames:v",
                    str(n), "-c:v", "libx264", "-preset", "ultrafast", "-qp", "30", str(template)], check=True)
    boxes = np.tile([100, 80, 420, 400], (n, 1))
    character = TemplateSpec("long", template, boxes, w, h, n, CropSpec(64, 4))
    budget = 8 * 2**20

    def rss():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    store = TemplateStore(budget, tmp_path / "cache")
    with store.open(character) as t:
        first = t.frame(0)
        before = rss()
        for k in list(range(n)) + list(range(n - 1, -1, -1)):  # ping-pong: every frame twice
            t.frame(k)
            assert store.resident_bytes <= budget
        grown = rss() - before
    total = n * (h * 3 // 2 * w)
    assert total > 50 * 2**20 and grown < 32 * 2**20, (total, grown)
    assert first.i420.shape == (h * 3 // 2, w)
    store.close()


def render_cli(audio, out, *extra, notes=None):
    result = runner.invoke(app, ["render", str(audio), "-c", "alice", "-o", str(out), "--device", "cpu", *extra])
    assert result.exit_code == 0, result.stderr
    if notes is not None:
        notes.append([line for line in result.stderr.splitlines() if line.startswith("note:")])
    return out.read_bytes()


def test_render_bytes_do_not_depend_on_the_cache_and_the_first_render_says_it_prepares(tmp_path, write_audio,
                                                                                        monkeypatch):
    monkeypatch.setenv("LIPSYNC_CACHE", str(tmp_path / "cache"))
    audio = write_audio(speech_like(0.6, seed=2), 16000)
    notes: list[list[str]] = []
    cold = render_cli(audio, tmp_path / "cold.mp4", notes=notes)
    assert entry_file(tmp_path / "cache" / "templates")
    warm = render_cli(audio, tmp_path / "warm.mp4", notes=notes)
    off = render_cli(audio, tmp_path / "off.mp4", "--no-cache", notes=notes)
    assert cold == warm == off
    assert notes == [[f"note: preparing alice's template for the first time on this machine: this render is "
                      f"slower, and 358 MB go to the template cache in {tmp_path / 'cache' / 'templates'}"], [], []]


def test_alternating_characters_decode_each_template_once(tmp_path, write_audio):
    from .characters import make_character

    bob, _ = make_character(tmp_path / "bob", [3, 7, 11, 15])
    audio = write_audio(speech_like(0.5), 16000)
    with Runtime(RuntimeConfig(devices="cpu", cache_dir=tmp_path / "cache")) as runtime:
        decodes = []
        for round_ in range(2):
            for name in (str(ALICE), str(bob)):
                job = RenderJob(audio, name, tmp_path / f"{round_}_{os.path.basename(name)}.mp4",
                                RenderOptions(overwrite=True))
                execute(plan(job, runtime), runtime)
            decodes.append(dict(runtime.templates.decodes))
    assert sorted(decodes[0].values()) == [4, 13]  # bob's 4 frames; alice's first 13 (0.5 s = 13 frames)
    assert decodes[1] == decodes[0]


def test_cache_command_shows_and_clears(tmp_path, monkeypatch, alice):
    monkeypatch.setenv("LIPSYNC_CACHE", str(tmp_path))
    store = TemplateStore(cache_dir=tmp_path / "templates")
    read_all(store, alice, 3)
    store.close()
    shown = runner.invoke(app, ["cache"])
    assert shown.exit_code == 0 and "alice" in shown.stdout and "3 of 200" in shown.stdout
    cleared = runner.invoke(app, ["cache", "clear"])
    assert cleared.exit_code == 0 and "freed" in cleared.stdout
    assert not list(tmp_path.iterdir())
