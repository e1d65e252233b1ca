"""`lipsync characters`: list, inspect and check characters."""

from __future__ import annotations

import json
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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")] = False,
    debug: Debug = False,
) -> None:
    """List the characters found, or show one in detail and check it (exit 1 if it is broken)."""

    def work() -> int:
        if as_json:
            return _json(name)
        if name is None:
            return _list()
        return _show(name)

    raise typer.Exit(run_reporting(work, debug))


def _describe(folder, char, status: str) -> dict:
    if char is None:
        return {"name": folder.name, "path": str(folder), "status": status}
    v = char.video
    return {"name": char.name, "path": str(folder), "status": "ok", "fps": str(char.fps),
            "template": {"file": str(char.template), "width": v.width, "height": v.height, "frames": v.frames,
                         "fps": v.fps},
            "audio_layout": char.layout, "model": str(char.model), "audio_encoder": str(char.audio_encoder),
            "crop": {"size": char.crop.size, "border": char.crop.border},
            "input": {"channels": list(char.input.channels), "color": char.input.color, "mask": list(char.input.mask)},
            "audio": {"pad_mode": char.audio.pad_mode, "window_end": char.audio.window_end}}


def _json(name: str | None) -> int:
    folders = [find_character(name)] if name is not None else list_characters()
    described = [_describe(folder, *check_character(folder)) for folder in folders]
    if name is not None:
        typer.echo(json.dumps(described[0], indent=2))
        return 0 if described[0]["status"] == "ok" else 1
    typer.echo(json.dumps(described, indent=2))
    return 0


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


def _types(types: dict[str, str]) -> str:
    return ", ".join(f"{name} {kind}" for name, kind in types.items())


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
        ("audio encoder", f"{e.path.name}: {e.input} -> {e.output}, batch {e.fixed_batch or 'dynamic'}, "
                          f"{_types(e.types)}"),
        ("UNet", f"{u.path.name}: {u.visual} + {u.audio} -> {u.output}, batch {u.fixed_batch or 'dynamic'}, "
                 f"{_types(u.types)}"),
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
