"""One on-disk cache entry: every prepared frame of one template, in fixed-size records, memory-mapped.

    [4096-byte header: magic + JSON]  [record 0] ... [record n-1]  [n uint32 CRC-32s]

A record holds a frame's I420 picture, its UNet crop, its box region in BGR and the colour statistics of
the crop's outer ring (6 float64, for the colour match), and is padded to whole pages, so that one
record's pages can be dropped from this process's resident set (`madvise`) when the frame leaves the
in-memory LRU; the page cache keeps them for the next read. The header names the key the
entry was made for and how many leading records are valid (a render that stopped early publishes the
frames it prepared). An entry is written under a private temporary name and renamed into place, so
readers only ever see whole entries; a record's CRC is checked the first time it is read, so a truncated,
corrupt or stale entry is detected and rebuilt, never rendered from.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import shutil
import stat
import uuid
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lipsync_cli.processes import host_tag, process_exists

MAGIC = b"LIPSYNC-TEMPLATE\n"
FORMAT = 3  # 2: the I420 picture as decoded, not a BGR round trip of it; 3: the ring statistics
RING_BYTES = 6 * 8
HEADER = 4096
PAGE = mmap.PAGESIZE


def _pages(n: int) -> int:
    return -(-n // PAGE) * PAGE


@dataclass(frozen=True)
class Layout:
    """Sizes of one template's records."""

    frames: int
    height: int  # even
    width: int  # even
    inner: int
    region_height: int  # the largest box region
    region_width: int

    @property
    def i420_bytes(self) -> int:
        return self.height * 3 // 2 * self.width

    @property
    def crop_bytes(self) -> int:
        return self.inner * self.inner * 3

    @property
    def record_bytes(self) -> int:
        return _pages(self.i420_bytes + self.crop_bytes + self.region_bytes + RING_BYTES)

    @property
    def region_bytes(self) -> int:
        return self.region_height * self.region_width * 3

    @property
    def file_bytes(self) -> int:
        return HEADER + self.frames * self.record_bytes + 4 * self.frames

    def offset(self, k: int) -> int:
        return HEADER + k * self.record_bytes


class EntryError(Exception):
    """An entry that must not be used (missing, truncated, of another key or format, corrupt)."""


def _reserve(fd: int, offset: int, size: int) -> None:
    """Allocate the blocks of [offset, offset + size) before they are written and then read through the map:
    where a file system is full, reading a page it could not allocate kills the process (SIGBUS), while a
    failed reservation is an OSError the template store falls back on."""
    if not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, offset, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise


def _write_all(fd: int, data, offset: int) -> None:
    view = memoryview(data).cast("B")
    while len(view):
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view, offset = view[written:], offset + written


def _parse_header(header: bytes) -> dict:
    if not header.startswith(MAGIC):
        raise EntryError("not a template cache file")
    try:
        meta = json.loads(header[len(MAGIC) :].rstrip(b"\0 \n").decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise EntryError("unreadable header") from None
    if not isinstance(meta, dict):
        raise EntryError("unreadable header")
    return meta


def _open_regular(path: Path) -> int:
    """A read-only descriptor of `path` if it is a regular file; a FIFO is never waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise EntryError(f"cannot open ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise EntryError("not a regular file")
    return fd


@dataclass
class Record:
    """Views of one record's parts."""

    i420: np.ndarray
    crop: np.ndarray
    region: np.ndarray  # the region's full slot, flat; the caller reshapes the part its box uses
    ring: np.ndarray  # float64 [6]: the crop's ring statistics


def _views(buffer, layout: Layout, k: int) -> Record:
    base = layout.offset(k)
    i420 = np.frombuffer(buffer, np.uint8, layout.i420_bytes, base).reshape(layout.height * 3 // 2, layout.width)
    crop = np.frombuffer(buffer, np.uint8, layout.crop_bytes, base + layout.i420_bytes)
    crop = crop.reshape(layout.inner, layout.inner, 3)
    start = base + layout.i420_bytes + layout.crop_bytes
    region = np.frombuffer(buffer, np.uint8, layout.region_bytes, start)
    ring = np.frombuffer(buffer, "<f8", 6, start + layout.region_bytes)
    return Record(i420, crop, region, ring)


class MappedEntry:
    """A memory-mapped entry file, readable up to `valid` records."""

    def __init__(self, fd: int, layout: Layout, valid: int, crcs: np.ndarray, verified: bool) -> None:
        self.fd, self.layout, self.valid, self.crcs = fd, layout, valid, crcs
        self.map = mmap.mmap(fd, layout.file_bytes, access=mmap.ACCESS_READ)
        self._checked = np.full(layout.frames, verified, bool)

    def record(self, k: int) -> Record:
        if k >= self.valid:
            raise IndexError(k)
        if not self._checked[k]:
            start = self.layout.offset(k)
            if zlib.crc32(self.map[start : start + self.layout.record_bytes]) != int(self.crcs[k]):
                raise EntryError(f"record {k} does not match its checksum")
            self._checked[k] = True
        return _views(self.map, self.layout, k)

    def drop(self, k: int) -> None:
        """Let record k's pages leave this process's resident set (they stay in the page cache)."""
        if hasattr(self.map, "madvise"):
            self.map.madvise(mmap.MADV_DONTNEED, self.layout.offset(k), self.layout.record_bytes)

    def close(self) -> None:
        try:
            self.map.close()
        except BufferError:  # views still alive somewhere: the mapping goes when they do
            pass
        os.close(self.fd)


def open_entry(path: Path, key: str, layout: Layout) -> MappedEntry:
    """Open a published entry; EntryError if it cannot be used."""
    fd = _open_regular(path)
    try:
        meta = _parse_header(os.pread(fd, HEADER, 0))
        if meta.get("format") != FORMAT or meta.get("key") != key or meta.get("layout") != asdict(layout):
            raise EntryError("made for another template, crop or format")
        valid = meta.get("valid")
        if isinstance(valid, bool) or not isinstance(valid, int) or not 0 < valid <= layout.frames:
            raise EntryError("bad frame count")
        if os.fstat(fd).st_size != layout.file_bytes:
            raise EntryError(f"truncated ({os.fstat(fd).st_size} of {layout.file_bytes} bytes)")
        crcs = np.frombuffer(os.pread(fd, 4 * layout.frames, HEADER + layout.frames * layout.record_bytes), "<u4")
        if len(crcs) != layout.frames:
            raise EntryError("truncated checksums")
        return MappedEntry(fd, layout, valid, crcs.copy(), verified=False)
    except BaseException:
        os.close(fd)
        raise


class EntryWriter:
    """Writes records in order into a private file sized for all of them; readable (mapped) as it grows,
    published under the final name by `publish`. With `path=None` it is an anonymous spill file that is
    never published (cache off or unusable): the frames still leave memory."""

    def __init__(self, directory: Path | None, key: str, layout: Layout, meta: dict) -> None:
        self.key, self.layout, self.meta = key, layout, meta
        self.written = 0
        self.crcs = np.zeros(layout.frames, "<u4")
        if directory is None:
            import tempfile

            self.temp: Path | None = None
            with tempfile.TemporaryFile(prefix="lipsync-template-") as spill:  # unlinked already
                self.fd = os.dup(spill.fileno())
        else:
            self.temp = directory / f".{key}.{os.getpid()}.{host_tag()}{uuid.uuid4().hex[:4]}.tmp"
            self.fd = os.open(self.temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.ftruncate(self.fd, layout.file_bytes)
            self.entry = MappedEntry(self.fd, layout, 0, self.crcs, verified=True)
        except BaseException:
            os.close(self.fd)
            self.discard()
            raise

    def append(self, i420: np.ndarray, crop: np.ndarray, region: np.ndarray, ring: np.ndarray) -> None:
        record = bytearray(self.layout.record_bytes)
        region_slot = np.zeros(self.layout.region_bytes, np.uint8)
        region_slot[: region.size] = np.ascontiguousarray(region).reshape(-1)
        parts = [np.ascontiguousarray(i420).reshape(-1), np.ascontiguousarray(crop).reshape(-1), region_slot,
                 np.asarray(ring, "<f8")]
        at = 0
        for part in parts:
            record[at : at + part.nbytes] = part.tobytes()
            at += part.nbytes
        offset = self.layout.offset(self.written)
        _reserve(self.fd, offset, len(record))
        _write_all(self.fd, record, offset)
        self.crcs[self.written] = zlib.crc32(record)
        self.written += 1
        self.entry.valid = self.written

    def copy_from(self, other: MappedEntry, count: int) -> None:
        """Take the first `count` records of a published entry (checked) instead of decoding them again."""
        for k in range(count):
            other.record(k)  # checks the CRC
            start = self.layout.offset(k)
            _reserve(self.fd, start, self.layout.record_bytes)
            _write_all(self.fd, other.map[start : start + self.layout.record_bytes], start)
            self.crcs[k] = other.crcs[k]
            other.drop(k)
        self.written = self.entry.valid = count

    def publish(self, final: Path) -> bool:
        """Rename into place unless an entry with as many valid frames is there already (another process)."""
        if self.temp is None or self.written == 0:
            return False
        try:
            existing = open_entry(final, self.key, self.layout)
            existing_valid = existing.valid
            existing.close()
        except EntryError:
            existing_valid = 0
        if existing_valid >= self.written:
            return False
        meta = dict(self.meta, format=FORMAT, key=self.key, layout=asdict(self.layout), valid=self.written)
        header = MAGIC + json.dumps(meta).encode()
        if len(header) > HEADER:
            raise ValueError("cache header too long")
        _write_all(self.fd, header.ljust(HEADER, b"\0"), 0)
        _write_all(self.fd, self.crcs.tobytes(), HEADER + self.layout.frames * self.layout.record_bytes)
        os.replace(self.temp, final)
        self.temp = None
        return True

    def close(self) -> None:
        """Give up: the private file is removed and the mapping closed."""
        self.discard()
        self.entry.close()

    def discard(self) -> None:
        if self.temp is not None:
            try:
                self.temp.unlink()
            except OSError:
                pass
            self.temp = None


def read_meta(path: Path) -> dict | None:
    """The header of an entry file, for listings; None if it is not one."""
    try:
        fd = _open_regular(path)
    except EntryError:
        return None
    try:
        return _parse_header(os.pread(fd, HEADER, 0))
    except (OSError, EntryError):
        return None
    finally:
        os.close(fd)


def remove_entry(path: Path) -> None:
    """Remove what stands under an entry's name in the cache folder, a folder too."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


def remove_stale_entries(directory: Path) -> int:
    """Remove entries being written by this machine's processes that no longer exist (killed mid-render);
    return how many. On a folder shared by several machines, the others' entries in progress stay."""
    removed, here = 0, host_tag()
    for path in directory.glob(".*.tmp"):
        parts = path.name.split(".")  # "", key, pid, host tag + 4 hex, "tmp"
        pid = int(parts[2]) if len(parts) == 5 and parts[2].isdigit() else None
        if pid is None or not parts[3].startswith(here) or pid == os.getpid() or process_exists(pid):
            continue
        remove_entry(path)
        removed += 1
    return removed
