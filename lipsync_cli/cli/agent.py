"""`lipsync agent`: a voice agent in the browser with no keys and no cloud (Pipecat over WebRTC, Silero VAD, an
echo brain and the character's face; lipsync_cli/integrations/pipecat)."""

from __future__ import annotations

from typing import Annotated

import typer

from lipsync_cli.cli.common import Debug, err_console, run_reporting
from lipsync_cli.errors import InputError
from lipsync_cli.models.devices import parse_device
from lipsync_cli.runtime import Runtime, RuntimeConfig


def agent_command(
    character: Annotated[str, typer.Option("--character", "-c", metavar="NAME", help="The character who talks "
                                           "back.")] = "alice",
    host: Annotated[str, typer.Option("--host", metavar="ADDRESS", help="Address to listen on; beyond this machine "
                                      "needs --token or --no-auth.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", metavar="PORT", help="Port (0: a free one, printed).")] = 8090,
    token: Annotated[str | None, typer.Option("--token", metavar="TOKEN", help="The page and the offer need this "
                                              "token: open /?token=TOKEN (default: $LIPSYNC_TOKEN).",
                                              show_default=False)] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Allow listening beyond this machine without a token."
                                          )] = False,
    allow_origin: Annotated[list[str] | None, typer.Option("--allow-origin", metavar="ORIGIN", help="A page origin "
                                                           "allowed besides the agent's own (repeatable; * for any).",
                                                           show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N.")] = "auto",
    latency_ms: Annotated[float | None, typer.Option("--latency-ms", metavar="MS", help="The face's latency budget "
                                                     "[default: the live session's].", show_default=False)] = None,
    max_sessions: Annotated[int, typer.Option("--max-sessions", metavar="N", help="Browser sessions at once.")] = 2,
    debug: Debug = False,
) -> None:
    """Talk to a character in the browser: when you stop, it says back what it heard, lip-synced (WebRTC)."""

    def work() -> int:
        quiet_pipecat(debug)
        try:
            from lipsync_cli.integrations.pipecat import LipsyncVideoService
            from lipsync_cli.integrations.pipecat.agent import AgentOptions
            from lipsync_cli.integrations.pipecat.server import AgentConfig, run_agent
        except ImportError as exc:
            raise InputError(f"{exc}", option="agent") from None
        from lipsync_cli.serve.config import token_from_env

        parse_device(device)  # an unknown device is one line now
        options = AgentOptions(character=character, device=device, latency_ms=latency_ms)
        config = AgentConfig(host=host, port=port, token=token_from_env(token), no_auth=no_auth,
                             allow_origin=tuple(allow_origin or ()), max_sessions=max_sessions,
                             options=options).checked()
        with Runtime(RuntimeConfig(devices="auto" if device == "auto" else device)) as runtime:
            # an unknown character or a latency it cannot keep is one line now, not at the first connection
            LipsyncVideoService(character, runtime=runtime, device=device, latency_ms=latency_ms)
            run_agent(config, runtime, lambda line: err_console.print(line, soft_wrap=True, markup=False))
        return 0

    raise typer.Exit(run_reporting(work, debug))


def quiet_pipecat(debug: bool) -> None:
    """Pipecat logs every frame processor's life at DEBUG: warnings and errors only, unless --debug."""
    import sys

    try:
        from loguru import logger
    except ImportError:  # no Pipecat either: the import after this says what to install
        return
    logger.remove()
    logger.add(sys.stderr, level="DEBUG" if debug else "WARNING")
