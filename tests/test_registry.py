"""The model registry with a fake session creator and memory probe: no GPU and no real model needed."""

import random
import threading
import time
from pathlib import Path

import pytest

from lipsync_cli.errors import Busy, InputError
from lipsync_cli.models.devices import CPU, Device
from lipsync_cli.models.registry import Budget, ModelRegistry

GPU0, GPU1 = Device("cuda", 0), Device("cuda", 1)


class FakeDevices:
    """Sessions are plain objects; each 'uses' `size` bytes of its device's memory while it is alive."""

    def __init__(self, size=100, delay=0.0):
        self.size, self.delay = size, delay
        self.used: dict[Device, int] = {}
        self.created: list[tuple[str, Device]] = []
        self.lock = threading.Lock()

    def create(self, path: Path, device: Device):
        if self.delay:
            time.sleep(self.delay)
        devices = self

        class Session:
            def __del__(self):
                with devices.lock:
                    devices.used[device] -= devices.size

        with self.lock:
            self.used[device] = self.used.get(device, 0) + self.size
            self.created.append((path.name, device))
        return Session()

    def memory(self, device: Device) -> int:
        with self.lock:
            return self.used.get(device, 0)


def models(tmp_path, count):
    """`count` models of one file each (a 10-byte file, so the memory probe decides their size)."""
    out = []
    for i in range(count):
        f = tmp_path / f"m{i}.onnx"
        f.write_bytes(b"0123456789")
        out.append((f,))
    return out


def registry(fake, **kw):
    eviction = kw.pop("eviction", "lfu")
    return ModelRegistry(fake.create, Budget(**kw), eviction, fake.memory)


def loaded_names(reg):
    return sorted(files[0].name for files, _ in reg.loaded())


def use(reg, files, times=1, device=CPU):
    for _ in range(times):
        with reg.lease(files, device):
            pass


def test_lru_evicts_the_least_recently_used(tmp_path):
    a, b, c = models(tmp_path, 3)
    reg = registry(FakeDevices(), max_models=2, eviction="lru")
    use(reg, a, 3)
    use(reg, b)
    use(reg, c)  # a is the least recent although the most used
    assert loaded_names(reg) == ["m1.onnx", "m2.onnx"]


def test_lfu_evicts_the_least_frequently_used(tmp_path):
    a, b, c = models(tmp_path, 3)
    reg = registry(FakeDevices(), max_models=2, eviction="lfu")
    use(reg, a, 3)
    use(reg, b)
    use(reg, c)  # b has one use, a three
    assert loaded_names(reg) == ["m0.onnx", "m2.onnx"]
    stats = {s.files[0].split("/")[-1]: s for s in reg.stats()}
    assert stats["m1.onnx"].evictions == 1 and stats["m0.onnx"].evictions == 0
    assert stats["m0.onnx"].requests == 3 and stats["m0.onnx"].loads == 1


def test_memory_is_measured_and_the_budget_counts_it(tmp_path):
    fake = FakeDevices(size=300)
    reg = registry(fake, max_memory=700)
    a, b, c = models(tmp_path, 3)
    use(reg, a)
    use(reg, b)
    assert reg.usage(CPU) == (2, 600)
    use(reg, c)  # 900 > 700: one goes
    assert reg.usage(CPU) == (2, 600)
    assert {s.bytes for s in reg.stats()} == {300}


def test_a_model_larger_than_the_budget_is_refused(tmp_path):
    reg = registry(FakeDevices(size=300), max_memory=200)
    with pytest.raises(InputError, match="more than the memory budget"):
        use(reg, models(tmp_path, 1)[0])
    assert reg.usage(CPU) == (0, 0)


def test_the_budget_is_never_exceeded_and_leased_sessions_survive(tmp_path):
    fake = FakeDevices(size=100, delay=0.002)
    reg = registry(fake, max_models=3, max_memory=350)
    all_models = models(tmp_path, 8)
    violations, lost = [], []

    def worker(seed):
        rnd = random.Random(seed)
        for _ in range(40):
            files = rnd.choice(all_models)
            with reg.lease(files, CPU) as lease:
                session = lease.sessions[0]
                count, used = reg.usage(CPU)
                if count > 3 or used > 350:
                    violations.append((count, used))
                time.sleep(0.001)
                if (tuple(f.resolve() for f in files), CPU) not in reg.loaded() or lease.sessions[0] is not session:
                    lost.append(files)  # evicted while leased

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not violations and not lost
    assert sum(s.evictions for s in reg.stats()) > 0  # the pressure was real
    assert fake.memory(CPU) <= 350  # what the sessions really hold, once all is settled


def test_a_leased_model_waits_out_pressure_instead_of_being_evicted(tmp_path):
    a, b = models(tmp_path, 2)
    reg = registry(FakeDevices(), max_models=1)
    got_b = threading.Event()
    with reg.lease(a, CPU) as held:
        t = threading.Thread(target=lambda: (use(reg, b), got_b.set()))
        t.start()
        time.sleep(0.2)
        assert not got_b.is_set() and held.sessions  # b waits: a is leased
        assert loaded_names(reg) == ["m0.onnx"]
    t.join(5)
    assert got_b.is_set() and loaded_names(reg) == ["m1.onnx"]


def test_creating_one_model_blocks_neither_using_another_nor_loading_on_another_device(tmp_path):
    a, b, c = models(tmp_path, 3)
    release = threading.Event()
    fake = FakeDevices()

    def slow_create(path, device):
        if path.name == "m0.onnx":
            release.wait(5)
        return fake.create(path, device)

    reg = ModelRegistry(slow_create, Budget(), "lfu", fake.memory)
    use(reg, b)
    t = threading.Thread(target=use, args=(reg, a))
    t.start()
    time.sleep(0.05)
    started = time.perf_counter()
    with reg.lease(b, CPU) as lease:  # while a is still being created
        assert lease.sessions
    use(reg, c, device=GPU0)
    assert time.perf_counter() - started < 1.0
    assert not release.is_set() and t.is_alive()
    release.set()
    t.join(5)
    assert loaded_names(reg) == ["m0.onnx", "m1.onnx", "m2.onnx"]


def test_two_leases_of_one_model_share_one_load(tmp_path):
    (a,) = models(tmp_path, 1)
    fake = FakeDevices(delay=0.2)
    reg = registry(fake)
    threads = [threading.Thread(target=use, args=(reg, a)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(fake.created) == 1
    (stats,) = reg.stats()
    assert stats.requests == 4 and stats.loads == 1


def test_placement_spreads_new_models_and_keeps_loaded_ones(tmp_path):
    fake = FakeDevices(size=100)
    reg = registry(fake, max_memory=1000)
    a, b, c, d = models(tmp_path, 4)
    placed = {}
    for files in (a, b, c):
        device = reg.place(files, [GPU0, GPU1])
        use(reg, files, device=device)
        placed[files[0].name] = device
    assert placed["m0.onnx"] != placed["m1.onnx"]  # round robin among equals
    assert placed["m2.onnx"] == placed["m0.onnx"]  # equal again: its turn
    assert reg.place(a, [GPU0, GPU1]) == placed["m0.onnx"]  # a loaded model stays where it is
    assert reg.place(d, [GPU0, GPU1]) == placed["m1.onnx"]  # the device with the most free memory
    assert reg.usage(GPU0)[0] + reg.usage(GPU1)[0] == 3


def test_statistics_count_frames_and_time(tmp_path):
    (a,) = models(tmp_path, 1)
    reg = registry(FakeDevices())
    with reg.lease(a, GPU1, name="alice") as lease:
        lease.record(10, 0.05)
        lease.record(6, 0.03)
    (s,) = reg.stats()
    assert (s.name, s.device, s.frames, s.requests, s.loads) == ("alice", "cuda:1", 16, 1, 1)
    assert s.mean_inference_ms == pytest.approx(5.0)
    assert s.last_use is not None and s.to_json()["mean_inference_ms"] == pytest.approx(5.0)


def test_bad_budgets_are_refused():
    with pytest.raises(InputError):
        Budget(max_models=0)
    with pytest.raises(InputError):
        ModelRegistry(lambda p, d: None, Budget(), "fifo")  # type: ignore[arg-type]


def test_a_lease_with_a_timeout_gives_up_when_the_budget_stays_full(tmp_path):
    a, b = models(tmp_path, 2)
    reg = registry(FakeDevices(), max_models=1)
    with reg.lease(a, CPU, "held"):
        with pytest.raises(Busy, match=r"other: the model budget of cpu stayed full for 0.2 s"):
            with reg.lease(b, CPU, "other", timeout=0.2):
                pass
        assert loaded_names(reg) == ["m0.onnx"]
    with reg.lease(b, CPU, "other", timeout=0.2) as lease:  # room again: the same call succeeds
        assert lease.sessions


def test_unload_drops_an_idle_model_and_refuses_a_leased_one(tmp_path):
    fake = FakeDevices()
    reg = registry(fake)
    (a,), (b,) = models(tmp_path, 2)
    with reg.lease([a], CPU, "a"):
        pass
    with reg.lease([b], CPU, "b"):
        with pytest.raises(Busy, match=r"b is in use \(1 lease\(s\) on cpu\)"):
            reg.unload([b])
        assert len(reg.loaded()) == 2
    assert reg.unload([a]) == [CPU]
    assert reg.loaded() == [((b.resolve(),), CPU)] and fake.used[CPU] == 100
    assert reg.unload([a]) == []  # not loaded: nothing to drop
    with reg.lease([a], CPU, "a"):  # loads again
        pass
    assert {s.name: s.loads for s in reg.stats()} == {"a": 2, "b": 1}


def test_a_lease_that_only_loads_counts_no_request(tmp_path):
    reg = registry(FakeDevices())
    (a,), = models(tmp_path, 1)
    with reg.lease([a], CPU, "a", count=False):
        pass
    with reg.lease([a], CPU, "a"):
        pass
    (stats,) = reg.stats()
    assert (stats.loads, stats.requests) == (1, 1)


def test_a_shrink_asked_of_the_loaded_models_is_done_at_their_next_calls(runtime, write_audio):
    # lipsync serve asks it of every loaded model once sessions have ended, also when none is left running
    import numpy as np

    from lipsync_cli.audio.synthetic import speech_like
    from lipsync_cli.models import inference

    from .conftest import ALICE
    from .live_helpers import rendered

    audio = write_audio(speech_like(0.5, seed=3))
    character = runtime.character(ALICE)
    before = rendered(character, audio, runtime)
    sessions = runtime.registry.sessions()
    assert len(sessions) == 2  # the audio encoder's and the UNet's
    inference.shrink_next(sessions)
    assert inference._shrink_due == {id(s) for s in sessions}
    after = rendered(character, audio, runtime)
    assert not inference._shrink_due  # both models shrank at their first call
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
