"""`lipsync characters`: list, inspect and check characters."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from lipsync_cli.characters.manifest import (
    check_character,
    find_character,
    list_characters,
    search_dirs,
)
from lipsync_cli.cli.common import Debug, console, run_reporting


def characters_command(
    name: Annotated[str | None, typer.Argument(help="A character name or folder to check in full.",
                                               show_default=False)] = None,
    debug: Debug = False,
) -> None:
    """List the characters found, or show one in detail and check it (exit 1 if it is broken)."""

    def work() -> int:
        if name is None:
            return _list()
        return _show(name)

    raise typer.Exit(run_reporting(work, debug))


def _list() -> int:
    table = Table(title="characters")
    for column in ("name", "path", "fps", "template", "audio layout", "status"):
        table.add_column(column, overflow="fold")
    folders = list_characters()
    for folder in folders:
        char, status = check_character(folder)
        if char is None:
            table.add_row(folder.name, str(folder), "", "", "", f"[red]{status}[/]")
        else:
            v = char.video
            table.add_row(char.name, str(folder), str(char.fps), f"{v.width}x{v.height}, {v.frames} frames",
                          char.layout, "[green]ok[/]")
    if not folders:
        console.print("no characters found in: " + ", ".join(str(d) for d in search_dirs()))
        return 0
    console.print(table)
    return 0


def _show(name: str) -> int:
    folder = find_character(name)
    char, status = check_character(folder)
    if char is None:
        console.print(f"[bold]{folder}[/]: [red]broken[/]: {status}")
        return 1
    v, e, u = char.video, char.encoder_contract, char.unet_contract
    rows = [
        ("name", char.name), ("folder", str(char.root)), ("fps", str(char.fps)),
        ("template", f"{char.template.name}: {v.width}x{v.height}, {v.frames} frames, {v.fps:g} fps"),
        ("boxes", f"{len(char.boxes)} boxes, sizes {int((char.boxes[:, 2] - char.boxes[:, 0]).min())}-"
                  f"{int((char.boxes[:, 2] - char.boxes[:, 0]).max())} px wide"),
        ("audio encoder", f"{e.path.name}: {e.input} -> {e.output}, batch {e.fixed_batch or 'dynamic'}"),
        ("UNet", f"{u.path.name}: {u.visual} + {u.audio} -> {u.output}, batch {u.fixed_batch or 'dynamic'}"),
        ("audio layout", f"{char.layout} ({'[N, 512]' if char.layout == 'per_frame' else '[N, 32, 16, 16]'})"),
        ("crop", f"box -> {char.crop.size}x{char.crop.size}, inner {char.crop.inner} (border {char.crop.border})"),
        ("input", f"channels {list(char.input.channels)}, {char.input.color}, mask {list(char.input.mask)}"),
        ("audio", f"pad {char.audio.pad_mode}, window end {char.audio.window_end}"),
        ("status", "[green]ok[/]"),
    ]
    table = Table(show_header=False, title=f"character {char.name}")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    return 0
