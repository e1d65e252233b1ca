"""`lipsync cache`: what is cached (prepared template frames, the bench's built models) and `clear`."""

from __future__ import annotations

import shutil

import typer
from rich.table import Table

from lipsync_cli.cli.common import Debug, console, run_reporting
from lipsync_cli.cli.help import PlainHelp, example
from lipsync_cli.frames.cache_file import read_meta
from lipsync_cli.frames.store import SUFFIX
from lipsync_cli.resources import cache_root, disk_bytes

cache_app = typer.Typer(help="Show or clear the cache (prepared template frames; the bench's models).",
                        no_args_is_help=False, add_completion=False, rich_markup_mode=None,
                        epilog=example("lipsync cache", "lipsync cache clear"))


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


@cache_app.callback(invoke_without_command=True)
def show(ctx: typer.Context, debug: Debug = False) -> None:
    """Show the cache folder and what it holds."""
    if ctx.invoked_subcommand is not None:
        return

    def work() -> None:
        root = cache_root()
        console.print(f"cache folder: {root} (set LIPSYNC_CACHE to move it)")
        if not root.is_dir():
            console.print("empty")
            return
        table = Table(title="template cache")
        for column in ("character", "template", "frames prepared", "on disk"):
            table.add_column(column, overflow="fold")
        templates = root / "templates"
        entries = sorted(templates.glob(f"*{SUFFIX}")) if templates.is_dir() else []
        for entry in entries:
            meta = read_meta(entry) or {}
            layout = meta["layout"] if isinstance(meta.get("layout"), dict) else {}
            table.add_row(str(meta.get("name", "?")), str(meta.get("template", entry.name)),
                          f"{meta.get('valid', '?')} of {layout.get('frames', '?')}", _mb(disk_bytes(entry)))
        if entries:
            console.print(table)
        others = [p for p in sorted(root.iterdir()) if p.name != "templates"]
        for other in others:
            console.print(f"{other.name}: {_mb(disk_bytes(other))}")
        console.print(f"total: {_mb(disk_bytes(root))}")

    run_reporting(work, debug)


@cache_app.command("clear", cls=PlainHelp, epilog=example("lipsync cache clear"))
def clear(debug: Debug = False) -> None:
    """Empty the cache (it is rebuilt as needed)."""

    def work() -> None:
        root = cache_root()
        freed = disk_bytes(root) if root.is_dir() else 0
        if root.is_dir():
            for child in root.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        console.print(f"cleared {root}: {_mb(freed)} freed")

    run_reporting(work, debug)
