"""The `lipsync` command: one Typer app joining one module per command."""

from __future__ import annotations

import sys

import typer

from lipsync_cli import __version__
from lipsync_cli.cli import (
    agent,
    batch,
    bench,
    characters,
    doctor,
    inspect_command,
    live,
    loadtest,
    render,
    serve,
    validate_mel,
)
from lipsync_cli.cli.cache import cache_app
from lipsync_cli.cli.help import PlainHelp, example

app = typer.Typer(
    name="lipsync",
    help="Lip-sync video: speech + a character -> an H.264 MP4 (render, batch) or live (serve, live).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    epilog=example("lipsync render speech.wav -c alice -o speech_alice.mp4", "lipsync COMMAND --help"),
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
    """Lip-sync video: speech + a character -> an H.264 MP4 (render, batch) or live (serve, live)."""


app.command("render", cls=PlainHelp, epilog=example(
    "lipsync render speech.wav -c alice -o speech_alice.mp4",
    "lipsync render lessons/ 'dub/*.flac' -c alice --output-dir out"))(render.render_command)
app.command("batch", cls=PlainHelp, epilog=example(
    "lipsync batch jobs.csv --output-dir out --keep-going --report report.json"))(batch.batch_command)
app.command("live", cls=PlainHelp, epilog=example(
    "lipsync live speech.wav -c alice --to rtmp://localhost/live/alice",
    "tts --pcm | lipsync live - -c alice --rate 24000 --to out.ts"))(live.live_command)
app.command("serve", cls=PlainHelp, epilog=example(
    "lipsync serve --characters ./characters --max-sessions 8",
    "LIPSYNC_TOKEN=... lipsync serve --host 0.0.0.0",
    "lipsync serve --cluster ray --address HEAD:6379 --replicas 4 --capacity capacity.json"))(serve.serve_command)
app.command("agent", cls=PlainHelp, epilog=example(
    "lipsync agent --character alice",
    "lipsync agent --host 0.0.0.0 --token $(openssl rand -hex 16)"))(agent.agent_command)
app.command("loadtest", cls=PlainHelp, epilog=example(
    "lipsync loadtest --sessions 4 --seconds 30 --json load.json",
    "lipsync loadtest --find-capacity --url ws://127.0.0.1:8080"))(loadtest.loadtest_command)
app.add_typer(characters.characters_app, name="characters")
app.command("inspect", cls=PlainHelp, epilog=example("lipsync inspect speech_alice.mp4 -c alice"))(
    inspect_command.inspect_command)
app.command("doctor", cls=PlainHelp, epilog=example("lipsync doctor --json"))(doctor.doctor_command)
app.command("validate-mel", cls=PlainHelp, epilog=example(
    "lipsync validate-mel speech.wav --reference speech_mel.npy"))(validate_mel.validate_mel)
app.command("bench", cls=PlainHelp, epilog=example(
    "lipsync bench --model realistic --device cuda:0 --json bench.json"))(bench.bench_command)
app.add_typer(cache_app, name="cache")


def main() -> None:
    """Entry point: usage errors become one line too (Click's are a box of several lines)."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(4)  # fatal only: errors reach the user as our own one-line messages
    try:
        code = app(standalone_mode=False, prog_name="lipsync")
    except Exception as exc:
        # click's UsageError (vendored by newer Typer, imported by older) is matched by its interface
        if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)):
            raise
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare `lipsync`: the help, as --help prints it
            sys.stdout.write(str(exc.format_message()).rstrip("\n") + "\n")
            sys.exit(0)
        where = ctx.command_path if ctx is not None else "lipsync"
        message = " ".join(str(exc.format_message()).split())
        if message:  # empty when the help was shown for a bare command
            sys.stderr.write(f"lipsync: error: {message} (see '{where} --help')\n")
        sys.exit(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        sys.stderr.write("lipsync: error: interrupted\n")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
