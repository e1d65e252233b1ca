"""The same job lists on a Ray cluster: a local Ray instance (2 CPUs, no dashboard) started once per test session."""

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.batch.runner import Batch, BatchSettings
from lipsync_cli.batch.sources import Entry
from lipsync_cli.cli.app import app
from lipsync_cli.cluster.driver import ClusterBatch, ClusterSettings, for_cluster, pick_job
from lipsync_cli.errors import Interrupted
from lipsync_cli.render import FramesDone, RenderJob
from lipsync_cli.runtime import Runtime, RuntimeConfig

from .models import character_with, load, nan_output

ray = pytest.importorskip("ray")
runner = CliRunner()


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture
def clips(tmp_path, write_audio):
    return [write_audio(speech_like(0.5 + 0.1 * i, seed=20 + i), 16000, name=f"c{i}.wav") for i in range(4)]


def cluster_run(tmp_path, jobs, on_update=None, retries=1, holder=None):
    """Plan `jobs` ([(audio, character)]) locally, render them on the cluster; return the records. `holder`
    gets the ClusterBatch under "cluster", for callbacks that reach its workers."""
    entries = [Entry(i, f"job{i}", for_cluster(RenderJob(a, str(c), tmp_path / "out" / f"{i}.mp4")))
               for i, (a, c) in enumerate(jobs, 1)]
    (tmp_path / "out").mkdir(exist_ok=True)
    with Runtime(RuntimeConfig(devices="cpu")) as runtime:
        batch = Batch(entries, runtime, BatchSettings(keep_going=True))
        batch.plan()
        cluster = ClusterBatch(batch, ClusterSettings(cpu_workers=2, retries=retries), RuntimeConfig(),
                               on_update or (lambda record, event: None))
        if holder is not None:
            holder["cluster"] = cluster
        cluster.run()
    return batch.records, cluster


def test_a_job_list_renders_like_the_local_batch(tmp_path, clips, local_ray):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("audio,character\n" + "".join(f"{c.name},alice\n" for c in clips))
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["batch", str(jobs), "--output-dir", str(tmp_path / "ray"), "--cluster", "ray",
                                 "--report", str(report)])
    assert result.exit_code == 0, result.stderr
    local = runner.invoke(app, ["batch", str(jobs), "--output-dir", str(tmp_path / "local"), "--device", "cpu"])
    assert local.exit_code == 0
    for clip in clips:
        name = f"{clip.stem}_alice.mp4"
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    data = json.loads(report.read_text())
    assert all(j["status"] == "ok" and len(j["attempts"]) == 1 and j["attempts"][0]["node"] for j in data["jobs"])


def test_an_idle_worker_takes_a_job_of_the_character_it_holds():
    assert pick_job({"alice"}, ["bob", "alice", "bob"]) == 1
    assert pick_job({"carol"}, ["bob", "alice"]) == 0  # none of its own: the next job, not idleness
    assert pick_job(set(), [None, "alice"]) == 0


def test_a_dead_worker_costs_one_retry_and_never_a_partial_file(tmp_path, write_audio, local_ray):
    audio = write_audio(speech_like(3.0), 16000, name="long.wav")
    killed, holder = [], {}

    def on_update(record, event):
        if isinstance(event, FramesDone) and not killed:
            worker = next(w for w in holder["cluster"].workers if w.job is not None)
            ray.kill(worker.actor)
            killed.append(worker.name)

    records, cluster = cluster_run(tmp_path, [(audio, "alice")], on_update, holder=holder)
    (record,) = records
    assert killed and record.status == "ok" and len(record.attempts) == 2
    assert len(cluster.folders) == 3 and not any(Path(f).exists() for _, _, f in cluster.folders)  # with the killed one
    assert "died" in record.attempts[0]["error"] and record.attempts[1]["worker"] != killed[0]
    single = tmp_path / "single.mp4"
    assert runner.invoke(app, ["render", str(audio), "-c", "alice", "-o", str(single), "--device", "cpu"]
                         ).exit_code == 0
    assert (tmp_path / "out" / "1.mp4").read_bytes() == single.read_bytes()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".part")]


def test_a_job_failing_by_itself_is_not_retried(tmp_path, clips, local_ray):
    broken = character_with(tmp_path, "broken", unet=nan_output(load("unet")))
    records, _ = cluster_run(tmp_path, [(clips[0], broken), (clips[1], "alice")])
    bad, good = records
    assert bad.status == "failed" and "produced NaN" in bad.error and len(bad.attempts) == 1
    assert good.status == "ok" and not (tmp_path / "out" / "1.mp4").exists()


def test_interrupting_the_driver_leaves_no_partial_file(tmp_path, write_audio, local_ray):
    audio = write_audio(speech_like(4.0), 16000, name="long.wav")

    def on_update(record, event):
        if isinstance(event, FramesDone):
            raise KeyboardInterrupt

    holder = {}
    with pytest.raises(Interrupted):
        cluster_run(tmp_path, [(audio, "alice"), (audio, "alice")], on_update, holder=holder)
    assert list((tmp_path / "out").iterdir()) == []
    folders = holder["cluster"].folders
    assert folders and not any(Path(f).exists() for _, _, f in folders)  # busy workers are killed: the driver


def test_without_ray_the_error_is_one_line(tmp_path, clips, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    result = runner.invoke(app, ["render", str(clips[0]), str(clips[1]), "-c", "alice", "--cluster", "ray",
                                 "--output-dir", str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "pip install 'lipsync-cli[ray]'" in result.stderr
