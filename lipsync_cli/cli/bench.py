"""`lipsync bench`: per-stage speed on this machine, beside the original system's targets and ours."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from lipsync_cli.bench.measure import BenchOptions, run_bench
from lipsync_cli.bench.realistic import PARAMETERS, realistic_character, realistic_variant
from lipsync_cli.bench.report import OVER_UNET_TARGET, TRANSCODE_RATIO_TARGET
from lipsync_cli.characters.manifest import load_character
from lipsync_cli.cli.batching import DEVICE_HELP, DEVICE_METAVAR, BlendOption, PrecisionOption
from lipsync_cli.cli.common import Debug, console, err_console, print_note, run_reporting, settle_heap
from lipsync_cli.encoding.folders import folder_problem, make_folders
from lipsync_cli.errors import InputError
from lipsync_cli.models.devices import DeviceRequest, parse_device
from lipsync_cli.models.precision import PrecisionRequest, as_precision_request
from lipsync_cli.render.jobs import as_blend


def bench_command(
    character: Annotated[str | None, typer.Option("--character", "-c", metavar="NAME|PATH",
                                                  help="Character name or folder "
                                                  "(default: alice).", show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", metavar="realistic",
                                              help="'realistic': full-size Wav2Lip encoder + "
                                              "SyncTalk_2D UNet with random weights, on alice's template.",
                                              show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", "-d", metavar=DEVICE_METAVAR, help=DEVICE_HELP)] = "auto",
    precision: PrecisionOption = "auto",
    backend: Annotated[str | None, typer.Option("--backend", metavar="onnxruntime|openvino", help="Short for a "
                                                "device of that backend: openvino is --device openvino; with "
                                                "--model realistic and a --precision other than auto and fp32, "
                                                "that variant is made for it first (once).", show_default=False)
                       ] = None,
    seconds: Annotated[float, typer.Option("--seconds", "-s", metavar="SECONDS",
                                           min=0.05, help="Seconds of speech to process.")
                       ] = 8.0,
    batch_size: Annotated[int | None, typer.Option("--batch-size", "-b", metavar="INT",
                                                   min=1, max=1024, help="Frames per model "
                                                   "call (default: 4 on the CPU, 32 on a GPU).", show_default=False)
                          ] = None,
    threads: Annotated[int | None, typer.Option("--threads", metavar="N",
                                                min=1, help="onnxruntime threads (default: all "
                                                "cores).", show_default=False)] = None,
    dtype: Annotated[str, typer.Option("--dtype", metavar="float32|float16",
                                       help="Number format of the realistic models: float32 or "
                                       "float16.")] = "float32",
    batch: Annotated[int | None, typer.Option("--batch", metavar="K",
                                              min=2, max=500, help="Instead: render this many 1 s "
                                              "clips as one batch and as separate processes, and compare.",
                                              show_default=False)] = None,
    blend: BlendOption = "match",
    io_binding: Annotated[str, typer.Option("--io-binding", metavar="auto|on|off",
                                            help="Model buffers allocated once on the device (auto: on a "
                                            "GPU).")] = "auto",
    device_graphs: Annotated[str, typer.Option("--device-graphs", metavar="auto|on|off",
                                               help="Crops prepared and patches composited by ONNX graphs "
                                               "on the model's device (auto: on a GPU).")] = "auto",
    in_flight: Annotated[str, typer.Option("--in-flight", metavar="LIST",
                                           help="Renders at once for the aggregate speed, e.g. 1,2,4; "
                                           "'none' skips it.")] = "1,2,4",
    live: Annotated[str | None, typer.Option("--live", metavar="CHUNKS_MS", help="Instead: live sessions' latency "
                                             "with audio in chunks of these sizes (e.g. 20,40,640) and the frame "
                                             "rate of --in-flight sessions at once, micro-batched and not.",
                                             show_default=False)] = None,
    json_path: Annotated[Path | None, typer.Option("--json", metavar="FILE",
                                                   help="Also write the figures to this JSON file.",
                                                   show_default=False)] = None,
    debug: Debug = False,
) -> None:
    """Time every stage of the pipeline (median and 10-90% spread) beside the original system's published
    targets and this project's goals for a 2-core CPU."""

    def work() -> None:
        if character and model:
            raise InputError("give --character or --model, not both")
        if model not in (None, "realistic"):
            raise InputError(f"unknown --model {model!r}: the only one is 'realistic'")
        request = _with_backend(parse_device(device), backend)
        wanted = as_precision_request(precision)
        levels = _levels(in_flight)
        binding, graphs = _switch(io_binding, "io-binding"), _switch(device_graphs, "device-graphs")
        if json_path is not None:
            _check_json(json_path)
        if batch is not None:
            _batch_bench(batch, character or "alice", request, json_path)
            return
        folder = realistic_character(dtype=dtype) if model == "realistic" else (character or "alice")
        if model == "realistic":
            realistic_variant(Path(folder), wanted, "openvino" if request.kind == "openvino" else "onnxruntime",
                              lambda s: err_console.print(f"[dim]{escape(s)}[/]", soft_wrap=True))
        if live is not None:
            _live_bench(folder, request, live, levels, seconds, blend, json_path, wanted)
            return
        char = load_character(folder)
        settle_heap()
        options = BenchOptions(seconds, batch_size, threads, blend=as_blend(blend), in_flight=levels,
                               io_binding=binding, device_processing=graphs, precision=wanted)
        report = run_bench(char, request, options, say=_say)
        if model == "realistic":
            report.parameters = dict(PARAMETERS)
        _print(report)
        if json_path is not None:
            _write_json(json_path, report.to_json())

    run_reporting(work, debug)


def _with_backend(request: DeviceRequest, backend: str | None) -> DeviceRequest:
    if backend is None:
        return request
    if backend not in ("onnxruntime", "openvino"):
        raise InputError(f"--backend must be onnxruntime or openvino, not {backend!r}")
    if backend == "openvino":
        if request.kind not in ("auto", "openvino"):
            raise InputError(f"--backend openvino contradicts --device {request}")
        return request if request.kind == "openvino" else DeviceRequest("openvino", 0, "CPU")
    if request.kind == "openvino":
        raise InputError(f"--backend onnxruntime contradicts --device {request}")
    return request


def _check_json(path: Path) -> None:
    """Before any timing: a file name whose folder exists or can be made (it is made when written)."""
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give a file name such as {path / 'bench.json'}")
    problem = folder_problem(path.parent if str(path.parent) else Path("."))
    if problem is not None:
        raise InputError(f"{path}: its folder cannot be used or made: {problem}")


def _write_json(path: Path, data: dict) -> None:
    make_folders(path.parent)
    path.write_text(json.dumps(data, indent=2) + "\n")
    console.print(f"figures written to {path}")


def _say(step: str) -> None:
    if step.startswith("note: "):
        print_note(step[len("note: "):])
    else:
        err_console.print(f"[dim]timing {escape(step)}...[/]", soft_wrap=True)


def _switch(value: str, option: str) -> bool | None:
    if value not in ("auto", "on", "off"):
        raise InputError(f"--{option} must be auto, on or off, not {value!r}", option=option)
    return None if value == "auto" else value == "on"


def _levels(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("none", "0", ""):
        return ()
    try:
        levels = tuple(int(part) for part in text.split(","))
    except ValueError:
        levels = ()
    if not levels or not all(1 <= n <= 16 for n in levels):
        raise InputError(f"--in-flight must be a list of 1 to 16 such as 1,2,4 (or none), not {text!r}",
                         option="in-flight")
    return levels


def _verdict(met: bool | None) -> str:
    return "" if met is None else ("[green]yes[/]" if met else "[red]no[/]")


_LABELS = {"template decode + prepare": "template prepare"}
_PER = {"template frame": "frame"}


def _ms(value: float) -> str:
    """About three significant figures, so that the table fits 80 columns for times of 0.001 to 9999 ms."""
    decimals = 0 if value >= 100 else 1 if value >= 10 else 2 if value >= 1 else 3
    return f"{value:.{decimals}f}"


def _target(stage) -> str:
    seed = "" if stage.seed_target_ms is None else f"{stage.seed_target_ms:g}"
    if seed and stage.name == "UNet":
        seed += " (GPU)"
    ours = "" if stage.our_target_ms is None else f"{stage.our_target_ms:g}"
    return " / ".join(t for t in (seed, ours) if t)


def _stage_table(report) -> Table:
    table = Table(title=f"lipsync bench: {report.character} on {report.device} ({report.provider}, "
                        f"{report.precision}), in ms")
    for column in ("stage", "per", "median", "p10-p90", "target", "met"):
        table.add_column(column, justify="left" if column in ("stage", "per") else "right", no_wrap=True)
    for s in report.stages:
        p10, p90 = s.spread_ms
        table.add_row(_LABELS.get(s.name, s.name), _PER.get(s.per, s.per), _ms(s.median_ms),
                      f"{_ms(p10)}-{_ms(p90)}", _target(s), _verdict(s.met(report.device)))
    return table


def _print(report) -> None:
    console.print(_stage_table(report))
    console.print("target: the original system's published figure / this project's goal for a 2-core CPU (the "
                  "original's UNet figure is for a GPU); met: the median against our goal, else the original's. "
                  "Template prepare is per template frame, once per machine (the cache). The p10-p90 spread shows "
                  "how noisy this machine is: compare figures of one run.", soft_wrap=True)
    ratio_ok = report.transcode_ratio <= TRANSCODE_RATIO_TARGET
    over_verdict = ("not judged, the model costs less than the rest here" if report.over_unet > 2 else
                    "met" if report.over_unet <= OVER_UNET_TARGET else "not met")
    lines = [
        f"end to end: {report.frames} frames ({report.seconds:.2f} s of audio, {report.frame_size}) in "
        f"{report.render_seconds:.2f} s = {report.fps:.1f} fps, {report.realtime:.2f}x real time",
        f"UNet alone {report.median('UNet alone'):.2f} ms per frame ({1000 / report.median('UNet alone'):.1f} fps; "
        f"{report.median('UNet'):.2f} ms with the copies in and out); end to end "
        f"{report.median('end to end'):.2f} ms; end to end / UNet alone = {report.over_unet:.2f}, what the work "
        f"around the model adds (1.0: the model is all that costs; target <= {OVER_UNET_TARGET:.2f} for a model "
        f"that costs more than that work: {over_verdict})",
        f"plain ffmpeg transcode of the same frames: {report.transcode_seconds:.2f} s; render / transcode = "
        f"{report.transcode_ratio:.2f} (target <= {TRANSCODE_RATIO_TARGET}: {'met' if ratio_ok else 'not met'})",
        f"device {report.device}, provider {report.provider}, precision {report.precision}, threads {report.threads}, "
        f"batch {report.batch_size}, blend {report.blend}, IO binding {'on' if report.io_binding else 'off'}, "
        f"device graphs {'on' if report.device_processing else 'off'}, audio layout {report.layout}",
        f"first render {report.cold_render_seconds:.2f} s (template decoded), second render "
        f"{report.warm_render_seconds:.2f} s (template from the cache): {report.warm_speedup:.2f}x faster",
        f"peak memory of lipsync (ffmpeg not included): {report.peak_memory_mb:.0f} MB",
    ]
    if report.seam:
        lines.append("seam before encoding, in levels (ring difference from the template in the box's outer 20%; "
                     "step across the patch edge beyond the template's own): " + "; ".join(
                         f"{blend} {s['ring_difference']:.2f} / {s['boundary_step']:+.2f}"
                         for blend, s in report.seam.items()))
    if report.in_flight_fps:
        lines.append("renders in flight on one device, aggregate: " + "; ".join(
            f"{jobs} at once {fps:.1f} fps" for jobs, fps in report.in_flight_fps.items()))
    if report.parameters:
        lines.append("model parameters: " + ", ".join(f"{k} {v:,}" for k, v in report.parameters.items()))
    for line in lines:
        console.print(line, soft_wrap=True)


def _batch_bench(count: int, character: str, request, json_path: Path | None) -> None:
    from lipsync_cli.bench.batch import run_batch_bench

    report = run_batch_bench(count, character, request, say=lambda s: err_console.print(f"[dim]timing {s}...[/]"))
    table = Table(title=f"lipsync bench --batch {count}: {count} clips of {report.clip_seconds:g} s, "
                        f"{report.character} on {report.device}")
    for column in ("how", "seconds", "per clip", "speed-up"):
        table.add_column(column, justify="left" if column == "how" else "right")
    table.add_row(f"{count} separate lipsync render processes", f"{report.separate_seconds:.2f}",
                  f"{report.separate_seconds / count:.2f}", "1.00")
    for jobs, seconds in report.batch_seconds.items():
        table.add_row(f"one batch, {jobs} job{'s' if jobs > 1 else ''} in flight", f"{seconds:.2f}",
                      f"{seconds / count:.2f}", f"{report.speedup(jobs):.2f}")
    console.print(table)
    console.print("target: one batch at least 3x faster than separate processes", soft_wrap=True)
    if json_path is not None:
        _write_json(json_path, report.to_json())


def _live_bench(folder, request, chunks: str, levels, seconds: float, blend: str, json_path: Path | None,
                precision: PrecisionRequest = "auto") -> None:
    from lipsync_cli.bench.live import live_bench
    from lipsync_cli.live import LiveOptions
    from lipsync_cli.runtime import Runtime, RuntimeConfig

    try:
        sizes = [float(v) for v in chunks.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--live takes chunk sizes in ms such as 20,40,640, not {chunks!r}") from None
    if not sizes or min(sizes) <= 0:
        raise InputError(f"--live takes positive chunk sizes in ms, not {chunks!r}")
    with Runtime(RuntimeConfig(devices=str(request) if request.kind != "auto" else "auto")) as runtime:
        character = runtime.character(folder)
        settle_heap()
        options = LiveOptions(device=request, blend=as_blend(blend), precision=precision)
        data = live_bench(runtime, character, options, sizes,
                          levels or [1], seconds, lambda s: err_console.print(f"bench: {s}", soft_wrap=True))
    table = Table(title=f"live sessions of {character.name} on {request}: latency in ms (parts: medians)")
    for column in ("chunk", "budget", "p50/p95", "ahead", "queue", "UNet", "comp.", "underr.", "late"):
        table.add_column(column, justify="right")
    for row in data["latency"]:
        table.add_row(f"{row['chunk_ms']:g}", f"{row['latency_budget_ms']:.0f}",
                      f"{row['total_p50_ms']:.0f} / {row['total_p95_ms']:.0f}", f"{row['lookahead_ms']:.0f}",
                      f"{row['queueing_ms']:.0f}", f"{row['inference_ms']:.0f}", f"{row['composite_ms']:.0f}",
                      str(row["underrun_frames"]), str(row["late_frames"]))
    console.print(table)
    for key, values in data["aggregate_fps"].items():
        console.print(f"{key}: " + ", ".join(f"{n} sessions {fps:.1f} fps" for n, fps in values.items()))
    video = character.video
    console.print(f"encode per frame ({video.width}x{video.height}): H.264 {data['encode_ms']['h264']} ms, "
                  f"JPEG {data['encode_ms']['jpeg']} ms")
    if json_path is not None:
        _write_json(json_path, data)
