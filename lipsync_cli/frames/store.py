"""The template store (the seed's `cache/background_cache.go`, grown up): prepared template frames in an LRU
under a byte budget, backed by an on-disk cache of prepared frames (`cache_file.py`).

A template is decoded once per machine, not once per render: the first render decodes and prepares the
frames it reaches, in order, and writes them into a cache entry keyed by the template file's content hash,
its boxes and the crop settings; when it ends (or when every frame is prepared) the entry is published.
Later renders, in this process or another, read the frames from the entry. Memory does not grow with the
template's length: every frame lives in a memory-mapped file, and only the frames in the LRU are kept
resident. With the cache off, or a cache folder that cannot be written, the file is an anonymous temporary
one (one notice says why), so memory stays bounded all the same.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lipsync_cli.encoding.yuv import even
from lipsync_cli.errors import RenderError
from lipsync_cli.frames.cache_file import (
    EntryError,
    EntryWriter,
    Layout,
    MappedEntry,
    open_entry,
    remove_entry,
    remove_stale_entries,
)
from lipsync_cli.frames.decode import YuvDecoder
from lipsync_cli.frames.template import TemplateFrame, prepare_parts, region_of
from lipsync_cli.specs import TemplateSpec
from lipsync_cli.stages import Cancelled

DEFAULT_MEMORY = 256 * 2**20
SUFFIX = ".frames"


def template_layout(spec: TemplateSpec) -> Layout:
    regions = np.array([region_of(b) for b in spec.boxes])
    return Layout(spec.frames, even(spec.height), even(spec.width), spec.crop.inner,
                  int((regions[:, 3] - regions[:, 1]).max()),
                  int((regions[:, 2] - regions[:, 0]).max()))


class _State:
    """One template's frames: its mapped entry, and while frames are being prepared, the writer and decoder."""

    def __init__(self, store: TemplateStore, key: str, spec: TemplateSpec, final: Path | None) -> None:
        self.store, self.key, self.final = store, key, final
        self.path, self.boxes, self.crop = spec.path, spec.boxes, spec.crop
        self.size = (spec.width, spec.height)
        self.name = spec.name
        self.layout = template_layout(spec)
        self.lock = threading.Lock()
        self.users = 0
        self.entry: MappedEntry | None = None
        self.writer: EntryWriter | None = None
        self.capture: YuvDecoder | None = None
        self.memory: dict[int, TemplateFrame] | None = None  # only when no file at all can be written
        if final is not None and final.exists():
            try:
                self.entry = open_entry(final, key, self.layout)
            except EntryError as exc:
                store.notify(f"rebuilding the template cache of {self.path.name} ({exc})")
                remove_entry(final)

    def frame(self, k: int, stop: threading.Event | None) -> TemplateFrame:
        if self.memory is not None and k in self.memory:
            return self.memory[k]
        if self.entry is not None and k < self.entry.valid:
            try:
                return self._view(k)
            except EntryError as exc:
                self.store.notify(f"rebuilding the template cache of {self.path.name} ({exc})")
                self._discard()
        self._decode_to(k, stop)
        if self.memory is not None:
            return self.memory[k]
        return self._view(k)

    def _view(self, k: int) -> TemplateFrame:
        assert self.entry is not None
        record = self.entry.record(k)
        box = self.boxes[k]
        x0, y0, x1, y1 = region_of(box)
        region = record.region[: (y1 - y0) * (x1 - x0) * 3].reshape(y1 - y0, x1 - x0, 3)
        return TemplateFrame(k, record.i420, np.asarray(box), (x0, y0, x1, y1), region, record.crop, record.ring)

    def _discard(self) -> None:
        """Forget a corrupt entry: its file is removed, and the frames are prepared again."""
        self.store.forget(self)
        if self.writer is not None:
            self.writer.discard()
            self.writer = None
        if self.entry is not None:
            self.entry.close()
            self.entry = None
        if self.final is not None:
            remove_entry(self.final)
        self._close_capture()

    def _open_writer(self) -> None:
        """A file to prepare frames into: a private file in the cache folder, else an anonymous one (the frames
        of an existing entry are copied over), else none: frames then stay in memory."""
        directory = self.store.directory()
        for where in [directory, None] if directory is not None else [None]:
            try:
                self.writer = EntryWriter(where, self.key, self.layout, {"template": str(self.path), "name": self.name})
                if self.entry is not None:
                    self._take_prefix(self.writer, self.entry)
                break
            except OSError as exc:
                if self.writer is not None:
                    self.writer.close()
                    self.writer = None
                if where is not None:
                    self.store.disable(f"{where}: {exc.strerror or exc}")
        if self.writer is not None and where is not None and self.entry is None:
            size = self.layout.frames * self.layout.record_bytes / 2**20
            self.store.notify(f"preparing {self.name}'s template for the first time on this machine: this render "
                              f"is slower, and {size:.0f} MB go to the template cache in {directory}")
        if self.entry is not None:
            self.store.forget(self)
            self.entry.close()
        if self.writer is None:
            self.store.notify("no temporary file can be written: template frames stay in memory")
            self.memory = {}
        self.entry = self.writer.entry if self.writer is not None else None

    def _take_prefix(self, writer: EntryWriter, entry: MappedEntry) -> None:
        try:
            writer.copy_from(entry, entry.valid)
        except EntryError as exc:
            self.store.notify(f"rebuilding the template cache of {self.path.name} ({exc})")
            writer.written = writer.entry.valid = 0
            if self.final is not None:
                remove_entry(self.final)

    def _start(self, stop: threading.Event | None) -> None:
        if self.writer is None and self.memory is None:
            self._open_writer()
        capture = YuvDecoder(self.path, *self.size)
        for _ in range(self._prepared()):  # frames that are in the cache already: decoded and dropped
            if stop is not None and stop.is_set():
                capture.close()
                raise Cancelled("template decoding stopped")
            capture.read()
        self.capture = capture

    def _decode_to(self, k: int, stop: threading.Event | None) -> None:
        if self.capture is None:
            self._start(stop)
        assert self.capture is not None
        while self._prepared() <= k:
            if stop is not None and stop.is_set():
                raise Cancelled("template decoding stopped")
            n = self._prepared()
            decoded = self.capture.read() if self.capture.read_count == n else None
            if decoded is None:
                why = self.capture.problem()
                raise RenderError(f"{self.path}: only {n} of {self.layout.frames} frames could be decoded"
                                  + (f" ({why})" if why else ""))
            self.store.count_decode(self.key)
            i420, region, crop, ring = prepare_parts(*decoded, self.boxes[n], self.crop)
            while self.writer is not None:
                try:
                    self.writer.append(i420, crop, region, ring)
                    break
                except OSError as exc:
                    self._spill(exc)
            if self.memory is not None:
                self.memory[n] = TemplateFrame(n, i420, np.asarray(self.boxes[n]), region_of(self.boxes[n]),
                                               region, crop, ring)
            elif self.writer is not None and self.writer.written == self.layout.frames:
                self._publish()
                self._close_capture()

    def _spill(self, exc: OSError) -> None:
        """The file being written failed (its file system is full): go on in an anonymous file if it was the
        cache's, else in memory."""
        assert self.writer is not None and self.entry is not None
        failed, entry = self.writer, self.entry
        spill: EntryWriter | None = None
        if failed.temp is not None:
            self.store.disable(f"{failed.temp.parent}: {exc.strerror or exc}")
            try:
                spill = EntryWriter(None, self.key, self.layout, {})
                spill.copy_from(entry, failed.written)
            except OSError:
                if spill is not None:
                    spill.close()
                spill = None
        if spill is None:
            self.memory = {k: _copied(self._view(k)) for k in range(failed.written)}
        self.store.forget(self)
        failed.discard()
        entry.close()
        self.writer = spill
        self.entry = spill.entry if spill is not None else None

    def _prepared(self) -> int:
        if self.memory is not None:
            return len(self.memory)
        if self.writer is not None:
            return self.writer.written
        return self.entry.valid if self.entry is not None else 0

    def _publish(self) -> None:
        if self.writer is None:
            return
        if self.final is not None and self.store.enabled:
            try:
                self.writer.publish(self.final)
            except OSError as exc:
                self.store.disable(f"{self.final}: {exc.strerror or exc}")
        self.writer.discard()
        self.writer = None

    def _close_capture(self) -> None:
        if self.capture is not None:
            self.capture.close()
            self.capture = None

    def release(self) -> None:
        """The last render using this template ended: publish what was prepared, stop decoding."""
        self._publish()
        self._close_capture()


class Template:
    """A render's handle on a template: `frame(k)` gives prepared frame k. Close it when the render ends."""

    def __init__(self, store: TemplateStore, state: _State) -> None:
        self._store, self._state = store, state
        self.count = state.layout.frames
        self.path = state.path
        self._closed = False

    def frame(self, k: int, stop: threading.Event | None = None) -> TemplateFrame:
        """Prepared frame k; decoding it (and the frames before it) gives up once `stop` is set."""
        return self._store.frame(self._state, k, stop)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._store.release(self._state)

    def __enter__(self) -> Template:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TemplateStore:
    def __init__(self, memory_budget: int = DEFAULT_MEMORY, cache_dir: Path | None = None,
                 notify: Callable[[str], None] = lambda message: None) -> None:
        self.memory_budget = max(0, int(memory_budget))
        self.cache_dir = cache_dir
        self.enabled = cache_dir is not None
        self._notify = notify
        self._notified: set[str] = set()
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}
        self._lru: OrderedDict[tuple[int, int], tuple[_State, int]] = OrderedDict()
        self._resident = 0
        self._hashes: dict[tuple, str] = {}
        self._swept = False
        self.decodes: dict[str, int] = {}  # frames decoded per template key, for statistics and tests

    # -- configuration and notices -----------------------------------------------------------------
    def notify(self, message: str) -> None:
        if message not in self._notified:
            self._notified.add(message)
            self._notify(message)

    def disable(self, reason: str) -> None:
        if self.enabled:
            self.enabled = False
            self.notify(f"template cache off for this run: {reason}")

    def directory(self) -> Path | None:
        if not self.enabled or self.cache_dir is None:
            return None
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.disable(f"{self.cache_dir}: {exc.strerror or exc}")
            return None
        if not self._swept:
            self._swept = True
            remove_stale_entries(self.cache_dir)
        return self.cache_dir

    def count_decode(self, key: str) -> None:
        with self._lock:
            self.decodes[key] = self.decodes.get(key, 0) + 1

    # -- templates ---------------------------------------------------------------------------------
    def key(self, spec: TemplateSpec) -> str:
        """Names what the prepared frames depend on: the template's bytes, the boxes, the crop settings."""
        path = Path(spec.path)
        st = path.stat()
        stat_key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        digest = self._hashes.get(stat_key)
        if digest is None:
            with open(path, "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
            self._hashes[stat_key] = digest
        boxes = np.ascontiguousarray(spec.boxes, np.int64)
        parts = [digest, hashlib.sha256(boxes.tobytes()).hexdigest(), str(boxes.shape),
                 f"{spec.crop.size}/{spec.crop.border}", str(template_layout(spec))]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]

    def open(self, template: TemplateSpec) -> Template:
        """The prepared frames of a template (a character's `template_spec`)."""
        key = self.key(template)
        with self._lock:
            state = self._states.get(key)
            if state is None:
                directory = self.directory()
                final = directory / f"{key}{SUFFIX}" if directory is not None else None
                state = self._states[key] = _State(self, key, template, final)
            state.users += 1
        return Template(self, state)

    def frame(self, state: _State, k: int, stop: threading.Event | None = None) -> TemplateFrame:
        if not 0 <= k < state.layout.frames:
            raise IndexError(k)
        with state.lock:
            with self._lock:
                hit = (id(state), k) in self._lru
                if hit:
                    self._lru.move_to_end((id(state), k))
            frame = state.frame(k, stop)
            if not hit and state.memory is None:
                self._admit(state, k)
            return frame

    def _admit(self, state: _State, k: int) -> None:
        size = state.layout.record_bytes
        with self._lock:
            self._lru[(id(state), k)] = (state, size)
            self._resident += size
            while self._resident > self.memory_budget and len(self._lru) > 1:
                (_, victim_k), (victim, victim_size) = self._lru.popitem(last=False)
                self._resident -= victim_size
                if victim.entry is not None:
                    try:
                        victim.entry.drop(victim_k)
                    except ValueError:  # its mapping was closed meanwhile
                        pass

    def forget(self, state: _State) -> None:
        """Take a state's frames out of the LRU (its mapping is about to change)."""
        with self._lock:
            for lru_key in [k for k in self._lru if k[0] == id(state)]:
                self._resident -= self._lru.pop(lru_key)[1]

    def release(self, state: _State) -> None:
        with state.lock:
            with self._lock:
                state.users -= 1
                last = state.users == 0
            if last:
                state.release()

    @property
    def resident_bytes(self) -> int:
        return self._resident

    def close(self) -> None:
        with self._lock:
            states = list(self._states.values())
            self._states.clear()
            self._lru.clear()
            self._resident = 0
        for state in states:
            with state.lock:
                state.release()
                if state.entry is not None:
                    state.entry.close()
                    state.entry = None


def _copied(frame: TemplateFrame) -> TemplateFrame:
    return TemplateFrame(frame.index, frame.i420.copy(), frame.box, frame.region, frame.region_bgr.copy(),
                         frame.crop.copy(), frame.ring.copy())
