"""What every command shares: the one place where errors become a line on stderr and an exit status."""

from __future__ import annotations

import gc
import os
import sys
import traceback
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from lipsync_cli import interrupts
from lipsync_cli.cli import signals
from lipsync_cli.errors import Interrupted, LipsyncError, OutputExists

T = TypeVar("T")

def _is_tty(stream) -> bool:
    return stream is not None and stream.isatty()


def _width(stream) -> int | None:
    """The terminal's width, or COLUMNS when set (rich reads both: None); piped output is 120 columns wide."""
    return None if _is_tty(stream) or os.environ.get("COLUMNS", "").isdigit() else 120


console = Console(highlight=False, width=_width(sys.stdout))
err_console = Console(stderr=True, highlight=False, width=_width(sys.stderr))

Debug = Annotated[bool, typer.Option("--debug", help="Show the full traceback of an error.", envvar="LIPSYNC_DEBUG")]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# job option -> (how the library names it at the start of a message, the flag)
_FLAGS = {
    "batch_size": ("batch size", "--batch-size"), "blend": ("blend", "--blend"), "device": ("device", "--device"),
    "gpu": ("GPU", "--gpu"), "devices": ("device list", "--devices"),
    "max_models": ("the model budget", "--max-models"),
    "max_memory": ("the memory budget", "--max-memory"), "eviction": ("eviction policy", "--eviction"),
    "dtype": ("dtype", "--dtype"), "jobs": ("jobs per device", "--jobs"), "name": ("name pattern", "--name"),
    "report": ("report", "--report"), "window_end": ("window end", "--window-end"),
    "precision": ("precision", "--precision"), "backend": ("backend", "--backend"),
    "min_psnr": ("the PSNR bar", "--min-psnr"), "calibration": ("calibration", "--calibration"),
    "output": ("output", "--output"),
    "codec": ("codec", "--codec"), "preset": ("preset", "--preset"), "crf": ("crf", "--crf"),
}


def cli_message(exc: LipsyncError) -> str:
    """The library's message in the CLI's terms: the flag that sets the option at fault."""
    message = str(exc)
    if isinstance(exc, OutputExists):
        return f"{message}; pass --overwrite to replace it"
    if exc.option in _FLAGS:
        name, flag = _FLAGS[exc.option]
        if message.startswith(name + " "):
            return flag + message[len(name):]
        if flag not in message:
            return f"{message} ({flag})"
    return message


def fail(message: str, exit_code: int, debug: bool = False) -> typer.Exit:
    if debug:
        traceback.print_exc()
    sys.stderr.write(f"lipsync: error: {_one_line(message)}\n")
    sys.stderr.flush()
    return typer.Exit(exit_code)


def run_reporting(work: Callable[[], T], debug: bool) -> T:
    """Run a command body; turn library errors into one line on stderr and their exit status."""
    try:
        signals.start_work()
        with interrupts.handled():
            return work()
    except typer.Exit:
        raise
    except Interrupted as exc:
        reason = str(exc)
        raise fail("interrupted" if reason == "interrupted" else f"interrupted ({reason})", exc.exit_code,
                   debug) from None
    except KeyboardInterrupt:
        raise fail("interrupted", Interrupted.exit_code, debug) from None
    except LipsyncError as exc:
        raise fail(cli_message(exc), exc.exit_code, debug) from None
    except Exception as exc:  # a bug, not bad input: still one line unless --debug
        hint = "" if debug else " (run with --debug for the traceback)"
        raise fail(f"internal error: {type(exc).__name__}: {exc}{hint}", 1, debug) from None


def print_note(message: str) -> None:
    """A note on stderr, printed as written: an install command's [extras] are not markup."""
    err_console.print(f"[yellow]note:[/] {escape(message)}", soft_wrap=True)


def is_interactive() -> bool:
    return _is_tty(sys.stderr) and os.environ.get("CI", "").lower() not in ("1", "true")


def settle_heap() -> None:
    """Move everything loaded so far out of the garbage collector's sight before long work.

    The libraries leave hundreds of thousands of long-lived objects; without this, the collections that
    per-frame allocations trigger keep rescanning them (a fifth of a render's CPU time, measured).
    """
    gc.collect()
    gc.freeze()
