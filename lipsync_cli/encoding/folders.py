"""Output folders: whether one can be used or made (checked before work, creating nothing), and making the
missing ones when the work that writes there starts."""

from __future__ import annotations

import tempfile
from pathlib import Path


def folder_problem(folder: Path) -> str | None:
    """Why files cannot be written in `folder` (made if missing), or None when they can. Creates nothing that
    stays: writability is tried with a temporary file in the nearest folder that exists."""
    existing = folder
    while not existing.exists():
        if existing.is_symlink():
            return f"{existing} is a symbolic link to nothing"
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:  # os.access says yes to root even where the file system refuses
        with tempfile.TemporaryFile(dir=existing, prefix=".lipsync-check-"):  # unnamed: nothing left if killed
            pass
    except OSError as exc:
        return f"{existing} is not writable ({exc.strerror or exc})"
    return None


def make_folders(folder: Path) -> None:
    """Make `folder` and its missing parents (a render that fails later leaves them, empty)."""
    folder.mkdir(parents=True, exist_ok=True)

