"""The `lipsync` command: one Typer app joining one module per command."""

from __future__ import annotations

import typer

from lipsync_cli import __version__
from lipsync_cli.cli import characters, render, validate_mel

app = typer.Typer(
    name="lipsync",
    help="Render audio-driven lip-sync video: a speech recording + a character -> an H.264 MP4.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lipsync {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Render audio-driven lip-sync video: a speech recording + a character -> an H.264 MP4."""


app.command("render")(render.render_command)
app.command("characters")(characters.characters_command)
app.command("validate-mel")(validate_mel.validate_mel)


def main() -> None:
    app()
