"""Where the bundled demo character and samples live: the repository checkout, or inside the wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def bundled_dir(name: str) -> Path | None:
    """`characters` or `samples` of the repository this package runs from, else the copy in the wheel."""
    for candidate in (_PACKAGE.parent / name, _PACKAGE / "bundled" / name):
        if candidate.is_dir():
            return candidate
    return None


def disk_bytes(path: Path) -> int:
    """Bytes a file or folder takes on disk (cache entries are sparse until every frame is written)."""
    try:
        if path.is_dir():
            return sum(disk_bytes(p) for p in path.iterdir())
        return path.stat().st_blocks * 512
    except OSError:
        return 0


def cache_root() -> Path:
    """Where lipsync keeps what it can make again: `$LIPSYNC_CACHE`, else `$XDG_CACHE_HOME/lipsync`, else
    `~/.cache/lipsync`."""
    import os

    base = os.environ.get("LIPSYNC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "lipsync")
    return Path(base)
