"""`lipsync doctor`: what this machine can do, and what to fix."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from lipsync_cli.cli.common import Debug, console, run_reporting
from lipsync_cli.diagnostics import can_render, run_checks

_STYLE = {"ok": "green", "warning": "yellow", "problem": "red"}


def doctor_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")] = False,
    debug: Debug = False,
) -> None:
    """Check Python, onnxruntime and CUDA, OpenVINO and its devices, the bundled ffmpeg and its encoders, the
    cache and the characters (exit 0 when rendering can work here, 1 otherwise)."""

    def work() -> int:
        checks = run_checks()
        ok = can_render(checks)
        if as_json:
            typer.echo(json.dumps({"can_render": ok, "checks": [c.to_json() for c in checks]}, indent=2))
            return 0 if ok else 1
        table = Table(title="lipsync doctor")
        for column in ("check", "status", "found", "to do"):
            table.add_column(column, overflow="fold")
        for c in checks:
            table.add_row(c.name, f"[{_STYLE[c.status]}]{c.status}[/]", escape(c.found), escape(c.fix))
        console.print(table)
        console.print("rendering can work here" if ok else "[red]rendering cannot work here: see the problems above[/]")
        return 0 if ok else 1

    raise typer.Exit(run_reporting(work, debug))
