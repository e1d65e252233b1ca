"""`lipsync loadtest`: N live sessions against a server, every figure of a live server under load."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lipsync_cli.cli.common import Debug, console, err_console, run_reporting
from lipsync_cli.errors import InputError
from lipsync_cli.models.precision import as_precision_request


def loadtest_command(
    url: Annotated[str | None, typer.Option("--url", metavar="ws://HOST:PORT", help="A running server (default: "
                                            "one started in this process on a free port).", show_default=False)
                   ] = None,
    sessions: Annotated[int, typer.Option("--sessions", "-n", metavar="N", min=1, max=256,
                                          help="Sessions at once.")] = 2,
    seconds: Annotated[float, typer.Option("--seconds", "-s", metavar="S", min=1, help="How long each streams."
                                           )] = 20.0,
    character: Annotated[str, typer.Option("--character", "-c", metavar="NAME", help="Character (by name).")
                         ] = "alice",
    audio: Annotated[Path | None, typer.Option("--audio", metavar="FILE", help="Speech to stream (looped); "
                                               "default: synthetic speech.", show_default=False)] = None,
    chunk_ms: Annotated[float, typer.Option("--chunk-ms", metavar="MS", help="Audio per message.")] = 40.0,
    gap_every: Annotated[float, typer.Option("--gap-every", metavar="S", help="A pause after every S seconds of "
                                             "speech (0: none).")] = 0.0,
    gap_seconds: Annotated[float, typer.Option("--gap-seconds", metavar="S", help="Length of each pause.")] = 1.0,
    interrupt_every: Annotated[float, typer.Option("--interrupt-every", metavar="S", help="An interrupt every S "
                                                   "seconds (0: none).")] = 0.0,
    idle: Annotated[bool, typer.Option("--idle", help="Sessions that send no audio (idle frames only).")] = False,
    latency_ms: Annotated[float | None, typer.Option("--latency-ms", metavar="MS", help="Latency budget asked for.",
                                                     show_default=False)] = None,
    codec: Annotated[str, typer.Option("--codec", metavar="h264|jpeg", help="Video codec asked for.")] = "h264",
    find_capacity: Annotated[bool, typer.Option("--find-capacity", help="Raise the sessions from 1 until frames "
                                                "come late or go missing, and print the capacity.")] = False,
    most: Annotated[int, typer.Option("--most", metavar="N", min=1, help="With --find-capacity: the most sessions "
                                      "to try.")] = 12,
    hostile: Annotated[int, typer.Option("--hostile", metavar="K", min=0, max=32, help="Instead: the sessions "
                                         "alone for --seconds, then beside K slow readers, K bursts and K "
                                         "vanishing clients for --seconds, then alone again; the server's memory "
                                         "before, at worst and 10 s after, and the lateness alone and under that "
                                         "load.")] = 0,
    devices: Annotated[str, typer.Option("--devices", metavar="LIST", help="In-process server: devices.")] = "auto",
    characters: Annotated[list[str] | None, typer.Option("--characters", metavar="DIR", help="In-process server: "
                                                         "a folder of characters (repeatable).", show_default=False)
                          ] = None,
    precision: Annotated[str, typer.Option("--precision", metavar="auto|fp32|int8|bf16|fp16", help="In-process "
                                           "server: its sessions' models (as lipsync serve --precision).")
                         ] = "auto",
    model: Annotated[str | None, typer.Option("--model", metavar="realistic", help="In-process server: serve the "
                                              "full-size pair of lipsync bench --model realistic as character "
                                              "'realistic' (its --precision variant is made first, once).",
                                              show_default=False)] = None,
    window: Annotated[float, typer.Option("--window", metavar="S", help="Seconds per row of lateness over time.")
                      ] = 60.0,
    token: Annotated[str | None, typer.Option("--token", metavar="TOKEN", help="The server's token.",
                                              show_default=False)] = None,
    json_path: Annotated[Path | None, typer.Option("--json", metavar="FILE", help="Also write every figure here.",
                                                   show_default=False)] = None,
    debug: Debug = False,
) -> None:
    """Open live sessions against a server, stream speech at real-time pace, and measure frames, fps, lateness
    against each frame's due time, glass-to-glass latency and its parts, underruns, refusals and memory."""

    def work() -> int:
        import numpy as np

        from lipsync_cli.audio.loading import read_audio
        from lipsync_cli.audio.synthetic import speech_like
        from lipsync_cli.loadtest.client import Scenario
        from lipsync_cli.loadtest.run import find_capacity as capacity_search
        from lipsync_cli.loadtest.run import run_load
        from lipsync_cli.runtime import Runtime, RuntimeConfig
        from lipsync_cli.serve.config import ServeConfig
        from lipsync_cli.serve.run import RunningServer

        if codec not in ("h264", "jpeg"):
            raise InputError(f"--codec must be h264 or jpeg, not {codec!r}")
        if url is not None and not url.startswith(("ws://", "wss://")):
            raise InputError(f"--url must be ws://HOST:PORT or wss://..., not {url!r}")
        if hostile and find_capacity:
            raise InputError("give --hostile or --find-capacity, not both")
        if json_path is not None and json_path.is_dir():
            raise InputError(f"{json_path}: is a directory")
        if url is not None and (precision != "auto" or model is not None):
            raise InputError("--precision and --model are for the in-process server: a server at --url has its own")
        wanted = as_precision_request(precision)
        x = read_audio(audio) if audio is not None else speech_like(30.0, seed=7)
        speech = (np.clip(x, -1, 1) * 32767).astype(np.int16)
        say = lambda text: err_console.print(f"loadtest: {text}", soft_wrap=True, markup=False)  # noqa: E731
        runtime = server = None
        shown = _realistic(devices, wanted, say) if model is not None else None
        try:
            if url is None:
                runtime = Runtime(RuntimeConfig(devices=devices))
                limit = most if find_capacity else sessions + 6 * hostile  # a place being given back, and a new one
                config = ServeConfig(port=0, devices=devices, max_sessions=max(limit, 1), precision=wanted,
                                     characters=(shown.name,) if shown is not None else tuple(characters or ()))
                server = RunningServer(config.checked(), runtime)
                base = server.url.replace("http://", "ws://")
                say(f"a server in this process at {server.url}")
            else:
                base = url.rstrip("/").removesuffix("/v1/live")
            metrics = base.replace("ws://", "http://").replace("wss://", "https://") + "/metrics"
            name = "realistic" if shown is not None else character
            scenario = Scenario(base + "/v1/live", name, seconds, chunk_ms, gap_every, gap_seconds,
                                interrupt_every, latency_ms, codec, token, idle)
            if hostile:
                from lipsync_cli.loadtest.hostile import run_hostile

                data = run_hostile(scenario, sessions, speech, hostile, metrics, say)
                _hostile_lines(data)
            elif find_capacity:
                capacity, runs = capacity_search(scenario, speech, most, metrics, say)
                data = {"capacity": capacity, "character": name, "seconds": seconds, "chunk_ms": chunk_ms,
                        "runs": runs, "devices": devices, "precision": precision}
                tried = ", ".join(f"{r['sessions']}: p99 {r['lateness_p99_ms']} ms" for r in runs)
                console.print(f"capacity: {capacity} sessions of {name} at real time ({tried})")
            else:
                data = run_load(scenario, sessions, speech, metrics, say, window).to_json()
                _table(data)
        finally:
            if server is not None:
                server.stop()
            if runtime is not None:
                runtime.close()
            if shown is not None:
                shown.cleanup()
        if json_path is not None:
            json_path.write_text(json.dumps(data, indent=2))
        return 0

    raise typer.Exit(run_reporting(work, debug))


def _realistic(devices: str, precision: str, say) -> tempfile.TemporaryDirectory:
    """A folder of characters holding the realistic pair as 'realistic' (a link to its cache folder), with its
    `precision` variant for the backend of `devices` made first."""
    from lipsync_cli.bench.realistic import realistic_character, realistic_variant

    folder = realistic_character()
    realistic_variant(folder, precision, "openvino" if devices.startswith("openvino") else "onnxruntime", say)
    shown = tempfile.TemporaryDirectory(prefix="lipsync-loadtest-")
    (Path(shown.name) / "realistic").symlink_to(folder, target_is_directory=True)
    return shown


def _table(data: dict) -> None:
    table = Table(title=f"{data['sessions']} sessions for {data['seconds']:g} s: lateness and latency in ms")
    for column in ("session", "frames", "fps", "late p50/p99/max", "g2g p50/p95", "underr.", "refused"):
        table.add_column(column, justify="right")
    for i, row in enumerate(data["per_session"], 1):
        late, glass = row["lateness_ms"], row["glass_to_glass_ms"]
        table.add_row(str(i), str(row["frames"]), f"{row['fps'] or 0:.1f}",
                      f"{late['p50']} / {late['p99']} / {late['max']}" if late["p50"] is not None else "-",
                      f"{glass['p50']} / {glass['p95']}" if glass["p50"] is not None else "-",
                      str(row["underruns"]), row["refused"] or "")
    console.print(table)
    late, glass = data["lateness_ms"], data["glass_to_glass_ms"]
    console.print(f"all: {data['frames']} frames, {data['fps']} fps; lateness p50 {late['p50']}, p95 {late['p95']}, "
                  f"p99 {late['p99']}, max {late['max']} ms (below 0: before the frame was due); glass to glass "
                  f"p50 {glass['p50']}, p95 {glass['p95']} ms; underruns {data['underruns']}; refused "
                  f"{data['refused']}; reconnects {data['reconnects']}; errors {data['errors']}")
    if data["memory_mb"]:
        mb = [m for _, m in data["memory_mb"]]
        console.print(f"server memory: {mb[0]:.0f} MB at first, {max(mb):.0f} MB at most, {mb[-1]:.0f} MB at the end")
    if data["server_cpu_cores"] is not None:
        console.print(f"server CPU: {data['server_cpu_cores']:.2f} cores busy")


def _hostile_lines(data: dict) -> None:
    late, memory = data["lateness_ms"], data["memory_mb"]
    for kind, seen in data["hostile"].items():
        outcomes = ", ".join(f"{n} {outcome}" for outcome, n in sorted(seen["outcomes"].items()))
        console.print(f"{kind}: {seen['started']} sessions begun; {outcomes or 'none ended'}", soft_wrap=True)
    frames = ", ".join(f"{h['frames']} frames ({h['missed']} missed)" for h in data["healthy"])
    console.print(f"healthy sessions: {frames}; lateness p99 {late['alone']['p99']} ms alone, "
                  f"{late['hostile']['p99']} ms under the hostile load", soft_wrap=True)
    if memory["after_minus_before"] is not None:
        console.print(f"server memory: {memory['before']:.0f} MB before, {memory['worst']:.0f} MB at worst, "
                      f"{memory['after']:.0f} MB 10 s after the hostile clients were gone "
                      f"({memory['after_minus_before']:+.0f} MB)", soft_wrap=True)
