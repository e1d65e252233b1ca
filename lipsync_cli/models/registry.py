"""The model registry (the seed's `registry/model_registry.go`, grown up): sessions kept loaded under a
budget per device, handed out as leases, evicted LFU or LRU, placed over several devices, with statistics.

A registry *model* is the set of ONNX files one character renders with (its audio encoder and its UNet),
on one device, in one precision: they are loaded, counted, leased and evicted together, as the seed counted
one model per character. `max_models` counts such models per device. The precision is part of the key
because a backend may compute the same files differently (OpenVINO's bfloat16 hint); the creator is asked
for it only when it is not fp32, so a creator of `(path, device)` serves every float32 model.

Memory is measured, not guessed: around the creation of a model's sessions the registry reads the memory
in use on the device (the process's resident set on the CPU; the GPU's used memory through NVML on a
GPU) and charges the difference, at least the size of the files. It is exact when nothing else allocates
meanwhile; with concurrent loads or renders each delta can also include their allocations (it errs large,
so budgets err safe). Where no reading is possible the charge is the files' size times
`UNMEASURED_FACTOR`. Before a model is loaded its charge is estimated (its last measured size, or the
files' size times `UNMEASURED_FACTOR`) and room is made for that; if the measured size then does not fit,
other idle models are evicted, and if that is not enough the new one is unloaded again and the lease waits.
Leased models are never evicted.

Locking: one condition variable guards the bookkeeping only; sessions are created outside it, so loading
a model never blocks the use of the loaded ones, nor loading on another device, and two threads asking for
the same model share one load. Loads on one device take turns, so that each measurement sees its own model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lipsync_cli.errors import Busy, InputError
from lipsync_cli.models.devices import Device, MemoryProbe
from lipsync_cli.models.precision import Precision

Eviction = Literal["lfu", "lru"]
UNMEASURED_FACTOR = 2
_WAIT = 0.05

SessionCreator = Callable[..., Any]  # (path, device) or (path, device, precision)
MemoryReader = Callable[[Device], "int | None"]


@dataclass(frozen=True)
class Budget:
    """Per-device limits; None is unlimited."""

    max_models: int | None = None
    max_memory: int | None = None  # bytes

    def __post_init__(self) -> None:
        if self.max_models is not None and self.max_models < 1:
            raise InputError(f"the model budget must allow at least 1 model, not {self.max_models}",
                             option="max_models")
        if self.max_memory is not None and self.max_memory <= 0:
            raise InputError(f"the memory budget must be positive, not {self.max_memory}", option="max_memory")


@dataclass
class ModelStats:
    """What the seed's ModelStats held, per model and device."""

    name: str
    files: tuple[str, ...]
    device: str
    bytes: int = 0
    loads: int = 0
    evictions: int = 0
    requests: int = 0
    frames: int = 0
    inference_seconds: float = 0.0
    last_use: float | None = None  # wall-clock time (seconds since the epoch)
    precision: str = "fp32"

    @property
    def mean_inference_ms(self) -> float | None:
        """Inference time per frame."""
        return 1000 * self.inference_seconds / self.frames if self.frames else None

    def to_json(self) -> dict:
        return {"name": self.name, "files": list(self.files), "device": self.device, "bytes": self.bytes,
                "loads": self.loads, "evictions": self.evictions, "requests": self.requests, "frames": self.frames,
                "mean_inference_ms": self.mean_inference_ms, "last_use": self.last_use, "precision": self.precision}


@dataclass(eq=False)
class _Entry:
    files: tuple[Path, ...]
    device: Device
    precision: Precision
    charge: int  # bytes counted against the budget: the estimate while loading, then the measurement
    loading: bool = True
    sessions: tuple = ()
    leases: int = 0
    uses: int = 0  # leases since it was loaded (LFU)
    touched: int = 0  # registry clock at the last lease or release (LRU)
    failure: BaseException | None = field(default=None, repr=False)


@dataclass
class Lease:
    """Sessions of one model, in the order their files were given, held until the lease ends."""

    sessions: tuple
    device: Device
    _stats: ModelStats
    _lock: threading.Condition

    def record(self, frames: int, seconds: float) -> None:
        """Count `frames` rendered in `seconds` of inference."""
        with self._lock:
            self._stats.frames += frames
            self._stats.inference_seconds += seconds


class ModelRegistry:
    def __init__(self, creator: SessionCreator, budget: Budget = Budget(), eviction: Eviction = "lfu",
                 memory: MemoryReader | None = None) -> None:
        if eviction not in ("lfu", "lru"):
            raise InputError(f"eviction policy must be lfu or lru, not {eviction!r}", option="eviction")
        self.budget, self.eviction = budget, eviction
        self._create = creator
        self._memory = memory if memory is not None else MemoryProbe()
        self._cond = threading.Condition()
        self._entries: dict[tuple, _Entry] = {}
        self._creating: dict[Device, threading.Lock] = {}
        self._stats: dict[tuple, ModelStats] = {}
        self._clock = 0
        self._turn = 0
        self._closed = False

    # -- placement ---------------------------------------------------------------------------------
    def place(self, files: Sequence[Path], candidates: Sequence[Device]) -> Device:
        """Where a model should run: where it is loaded already, else the candidate with the most free budget
        (free bytes under a memory budget, else free model slots, else the fewest models), taking turns among
        equals."""
        if not candidates:
            raise ValueError("no candidate device")
        files_key = _files_key(files)
        with self._cond:
            for device in candidates:
                if any(k[:2] == (files_key, device) for k in self._entries):
                    return device
            free = [self._free(device) for device in candidates]
            best = [d for d, f in zip(candidates, free, strict=True) if f == max(free)]
            self._turn += 1
            return best[(self._turn - 1) % len(best)]

    def _free(self, device: Device) -> float:
        count, used = self.usage(device)
        if self.budget.max_memory is not None:
            return self.budget.max_memory - used
        if self.budget.max_models is not None:
            return self.budget.max_models - count
        return -count

    def usage(self, device: Device) -> tuple[int, int]:
        """(models, bytes) loaded or being loaded on `device`."""
        with self._cond:
            mine = [e for e in self._entries.values() if e.device == device]
            return len(mine), sum(e.charge for e in mine)

    # -- leases ------------------------------------------------------------------------------------
    @contextmanager
    def lease(self, files: Sequence[Path], device: Device, name: str | None = None,
              timeout: float | None = None, count: bool = True, precision: Precision = "fp32") -> Iterator[Lease]:
        """The sessions of `files` on `device` in `precision`, loaded if needed; never evicted while the lease is
        held. While the device's budget is held by other leases this waits for room: for ever, or `timeout`
        seconds, then raises Busy. `count=False` leaves the request count alone (a lease that only loads the
        model)."""
        key = (_files_key(files), device, precision)
        entry, mine = self._acquire(key, name, timeout, count)
        if mine:
            self._load(key, entry)
        try:
            yield Lease(entry.sessions, device, self._stats[key], self._cond)
        finally:
            with self._cond:
                entry.leases -= 1
                entry.touched = self._tick()
                self._stats[key].last_use = time.time()
                self._cond.notify_all()

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _acquire(self, key: tuple, name: str | None, timeout: float | None = None, count: bool = True
                 ) -> tuple[_Entry, bool]:
        files, device, precision = key
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if key not in self._stats:
                self._stats[key] = ModelStats(name or files[-1].parent.name, tuple(str(f) for f in files),
                                              str(device), precision=precision)
            while True:
                if self._closed:
                    raise RuntimeError("the model registry is closed")
                entry = self._entries.get(key)
                if entry is not None and entry.failure is not None:
                    raise entry.failure
                if entry is not None and not entry.loading:
                    entry.leases += 1
                    entry.uses += 1
                    entry.touched = self._tick()
                    self._stats[key].requests += count
                    return entry, False
                if entry is None:
                    estimate = self._estimate(key)
                    if self._make_room(device, estimate, exclude=None):
                        entry = _Entry(files, device, precision, estimate, leases=1, uses=1, touched=self._tick())
                        self._entries[key] = entry
                        self._stats[key].requests += count
                        return entry, True
                if deadline is not None and time.monotonic() >= deadline:
                    what = name or files[-1].parent.name
                    raise Busy(f"{what}: the model budget of {device} stayed full for {timeout:g} s (every "
                               f"loaded model is in use)")
                self._cond.wait(_WAIT)

    def _estimate(self, key: tuple) -> int:
        files, device, _ = key
        known = self._stats[key].bytes
        estimate = known or _file_bytes(files) * UNMEASURED_FACTOR
        limit = self.budget.max_memory
        if limit is not None and estimate > limit:
            raise InputError(f"{files[-1]}: needs about {estimate / 2**20:.0f} MB on {device}, more than the "
                             f"memory budget of {limit / 2**20:.0f} MB", option="max_memory")
        return estimate

    def _fits(self, device: Device, extra: int, exclude: _Entry | None) -> bool:
        mine = [e for e in self._entries.values() if e.device == device and e is not exclude]
        if self.budget.max_models is not None and len(mine) + 1 > self.budget.max_models:
            return False
        return self.budget.max_memory is None or sum(e.charge for e in mine) + extra <= self.budget.max_memory

    def _make_room(self, device: Device, extra: int, exclude: _Entry | None) -> bool:
        """Evict idle models on `device` until one more of `extra` bytes fits; False if leases prevent it."""
        while not self._fits(device, extra, exclude):
            idle = [e for e in self._entries.values()
                    if e.device == device and e.leases == 0 and not e.loading and e is not exclude]
            if not idle:
                return False
            if self.eviction == "lfu":
                victim = min(idle, key=lambda e: (e.uses, e.touched))
            else:
                victim = min(idle, key=lambda e: e.touched)
            self._evict(victim)
        return True

    def _evict(self, entry: _Entry) -> None:
        key = (entry.files, entry.device, entry.precision)
        del self._entries[key]
        entry.sessions = ()
        self._stats[key].evictions += 1
        self._cond.notify_all()

    def _creation_lock(self, device: Device) -> threading.Lock:
        with self._cond:
            return self._creating.setdefault(device, threading.Lock())

    def _load(self, key: tuple, entry: _Entry) -> None:
        files, device, precision = key
        extra = (precision,) if precision != "fp32" else ()
        try:
            while True:
                with self._creation_lock(device):  # one measurement at a time per device
                    before = self._memory(device)
                    sessions = tuple(self._create(f, device, *extra) for f in files)
                    after = self._memory(device)
                floor = _file_bytes(files)
                measured = max(after - before, floor) if before is not None and after is not None \
                    else floor * UNMEASURED_FACTOR
                with self._cond:
                    if self._make_room(device, measured, exclude=entry):
                        entry.charge, entry.sessions, entry.loading = measured, sessions, False
                        stats = self._stats[key]
                        stats.bytes, stats.loads = measured, stats.loads + 1
                        self._cond.notify_all()
                        return
                    if not any(e.device == device and e is not entry for e in self._entries.values()):
                        raise InputError(f"{files[-1]}: needs {measured / 2**20:.0f} MB on {device}, more than "
                                         f"the memory budget", option="max_memory")
                    entry.charge = 0  # others are leased: unload, wait for room, load again
                del sessions
                with self._cond:
                    while not self._make_room(device, measured, exclude=entry):
                        self._cond.wait(_WAIT)
                    entry.charge = measured
        except BaseException as exc:
            with self._cond:
                entry.failure = exc
                self._entries.pop(key, None)
                self._cond.notify_all()
            raise

    # -- reporting ---------------------------------------------------------------------------------
    def stats(self) -> list[ModelStats]:
        """A snapshot of every model's statistics, loaded or evicted."""
        with self._cond:
            return [ModelStats(**vars(s)) for s in self._stats.values()]

    def memory_used(self, device: Device) -> int | None:
        """Bytes in use on `device` now, as the budget measures them (None where they cannot be read)."""
        return self._memory(device)

    def loaded(self) -> list[tuple[tuple[Path, ...], Device]]:
        """(files, device) of every model loaded (once per precision loaded)."""
        with self._cond:
            return [k[:2] for k, e in self._entries.items() if not e.loading]

    def sessions(self) -> list:
        """Every session of every model loaded."""
        with self._cond:
            return [s for e in self._entries.values() if not e.loading for s in e.sessions]

    def unload(self, files: Sequence[Path]) -> list[Device]:
        """Drop the sessions of `files` on every device they are loaded on, and return those devices; refused
        (Busy, nothing dropped) while any of them is leased or still loading."""
        files_key = _files_key(files)
        with self._cond:
            mine = [e for (f, _, _), e in self._entries.items() if f == files_key]
            busy = [e for e in mine if e.leases or e.loading]
            if busy:
                what = self._stats[(files_key, busy[0].device, busy[0].precision)].name
                users = sum(e.leases for e in busy)
                raise Busy(f"{what} is in use ({users} lease(s) on {', '.join(str(e.device) for e in busy)}): "
                           "it can be unloaded once they end")
            for entry in mine:
                del self._entries[(entry.files, entry.device, entry.precision)]
                entry.sessions = ()
            self._cond.notify_all()
            return list(dict.fromkeys(e.device for e in mine))

    def close(self) -> None:
        """Drop every session (leases still held keep theirs until they end)."""
        with self._cond:
            self._closed = True
            for entry in list(self._entries.values()):
                if entry.leases == 0 and not entry.loading:
                    del self._entries[(entry.files, entry.device, entry.precision)]
                    entry.sessions = ()
            self._cond.notify_all()


def _files_key(files: Sequence[Path]) -> tuple[Path, ...]:
    return tuple(Path(f).resolve() for f in files)


def _file_bytes(files: Sequence[Path]) -> int:
    total = 0
    for f in files:
        try:
            total += Path(f).stat().st_size
        except OSError:
            pass
    return max(1, total)
