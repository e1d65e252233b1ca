"""What `lipsync render` (several inputs) and `lipsync batch` share: the options, planning every job before
work, the bad-job lines, the dry run, the summary table and the report."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.table import Table

from lipsync_cli.batch.report import JobRecord, check_report_target, now, report_clash, write_report
from lipsync_cli.batch.runner import Batch, BatchSettings
from lipsync_cli.batch.sources import Entry
from lipsync_cli.cli.common import cli_message, console, err_console, is_interactive, print_note
from lipsync_cli.cli.progress import BatchProgress
from lipsync_cli.cluster.driver import ClusterBatch, ClusterSettings, for_cluster, import_ray
from lipsync_cli.encoding.folders import folder_problem
from lipsync_cli.errors import InputError, Interrupted
from lipsync_cli.models.registry import Eviction as EvictionPolicy
from lipsync_cli.runtime import Runtime, RuntimeConfig

MAX_BAD_LINES = 20
LONG_LIST = 100  # jobs: from this many, a line says they are being checked

BatchSize = Annotated[int | None, typer.Option("--batch-size", "-b", metavar="INT", help="Frames per model call "
                                               "(default: 4 on the CPU, 32 on a GPU).", show_default=False)]
BlendOption = Annotated[str, typer.Option("--blend", metavar="match|feather|hard",
                                          help="match (feather after matching the patch's colours to the template: "
                                               "no visible box even when a model's colours drift), feather (soft "
                                               "edge), or hard (paste).")]
PrecisionOption = Annotated[str, typer.Option("--precision", metavar="auto|fp32|int8|bf16|fp16",
                                              help="Models to render with: auto (the fastest variant that passed "
                                              "its check and runs on this device, else the float models), fp32 "
                                              "(the float models), or a variant made by lipsync characters "
                                              "optimize.")]
DEVICE_HELP = "auto, cpu, cuda, cuda:N, openvino or openvino:TARGET (GPU, NPU; needs lipsync-cli[openvino])."
DEVICE_METAVAR = "auto|cpu|cuda|cuda:N|openvino"
Crf = Annotated[int, typer.Option("--crf", metavar="0-51", help="Quality: 0 lossless .. 51 worst (cq for h264_nvenc).")]
Preset = Annotated[str | None, typer.Option("--preset", metavar="NAME", help="Encoder preset (default veryfast for "
                                            "libx264, p4 for h264_nvenc).", show_default=False)]
Codec = Annotated[str, typer.Option("--codec", metavar="libx264|h264_nvenc", help="libx264 or h264_nvenc.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the template cache "
                                       "(see `lipsync cache`).")]
OutputDir = Annotated[Path | None, typer.Option("--output-dir", metavar="DIR",
                                                help="Folder for the outputs (default: the current "
                                                "directory).", show_default=False)]
NamePattern = Annotated[str, typer.Option("--name", metavar="PATTERN",
                                          help="Output file name; fields {stem}, {character}, {index}.")]
KeepGoing = Annotated[bool, typer.Option("--keep-going", help="Render the good jobs even if some are bad or fail "
                                         "(exit 1 at the end if any was refused or failed).")]
SkipExisting = Annotated[bool, typer.Option("--skip-existing", help="Skip jobs whose output exists (resume a "
                                            "batch).")]
Jobs = Annotated[int, typer.Option("--jobs", "-j", metavar="N",
                                   help="Jobs in flight per device. 2 lets one job encode while "
                                   "the next one's models run; more only helps with cores or GPU time to spare.")]
Devices = Annotated[str, typer.Option("--devices", metavar="auto|cpu|cuda:0,cuda:1|cuda:all",
                                      help="Devices to spread the jobs over: auto, cpu, "
                                      "cuda:0,cuda:1, cuda:all.")]
MaxModels = Annotated[int | None, typer.Option("--max-models", metavar="N",
                                               help="Characters kept loaded per device (default: "
                                               "no limit).", show_default=False)]
MaxMemory = Annotated[str | None, typer.Option("--max-memory", metavar="SIZE",
                                               help="Memory for loaded models per device, e.g. "
                                               "8G or 512M (default: no limit).", show_default=False)]
Eviction = Annotated[str, typer.Option("--eviction", metavar="lfu|lru",
                                       help="Which loaded character makes room: lfu (least often "
                                       "used) or lru (least recently used).")]
Report = Annotated[Path | None, typer.Option("--report", metavar="FILE",
                                             help="Write a JSON report of every job here (also after "
                                             "a failure or an interrupt).", show_default=False)]
Cluster = Annotated[str | None, typer.Option("--cluster", metavar="ray", help="Render on a cluster: ray (needs "
                                            "pip install 'lipsync-cli[ray]').", show_default=False)]
ClusterAddress = Annotated[str | None, typer.Option("--cluster-address", metavar="ADDRESS",
                                                    help="The Ray cluster to join (default: "
                                                    "RAY_ADDRESS, else a local Ray instance on this machine).",
                                                    show_default=False)]
CpuWorkers = Annotated[int | None, typer.Option("--cpu-workers", metavar="N",
                                                min=1, help="CPU workers where the cluster has no "
                                                "GPU (default: its CPUs, at most 4).", show_default=False)]
Retries = Annotated[int, typer.Option("--retries", metavar="N",
                                      min=0, max=10, help="Extra attempts for a job whose worker "
                                      "died (a job that fails by itself is not retried).")]
SharedFs = Annotated[bool, typer.Option("--shared-fs", help="Every node sees these paths: send paths, not bytes.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Check every job and show what would be rendered; render "
                                      "nothing.")]


def parse_size(text: str | None) -> int | None:
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not match:
        raise InputError(f"memory size {text!r} is not a size such as 8G or 512M", option="max_memory")
    return int(float(match.group(1)) * 1024 ** "_kmgt".index(match.group(2) or "_"))


def runtime_config(devices: str, max_models: int | None, max_memory: str | None, eviction: str,
                   cache: bool = True) -> RuntimeConfig:
    if eviction not in ("lfu", "lru"):
        raise InputError(f"eviction policy must be lfu or lru, not {eviction!r}", option="eviction")
    return RuntimeConfig(devices=devices, max_models=max_models, max_memory=parse_size(max_memory),
                         eviction=cast(EvictionPolicy, eviction), cache=cache)


def _error_lines(batch: Batch, records: list[JobRecord], status: str) -> None:
    """One line on stderr per job refused (or failed by itself), at most MAX_BAD_LINES."""
    bad = [r for r in records if r.status == status and (status == "refused" or r.index in batch.errors)]
    for record in bad[:MAX_BAD_LINES]:
        exc = batch.errors.get(record.index)
        message = cli_message(exc) if exc is not None else record.error
        prefix = "" if message and message.startswith(record.source) else f"{record.source}: "
        err_console.print(f"lipsync: error: {prefix}{message}", soft_wrap=True, highlight=False, markup=False)
    if len(bad) > MAX_BAD_LINES:
        err_console.print(f"lipsync: error: ... and {len(bad) - MAX_BAD_LINES} more {status} jobs", soft_wrap=True)


def _plan_table(records: list[JobRecord]) -> Table:
    table = Table(title="lipsync: what would be rendered")
    for column in ("job", "status", "character", "frames", "audio s", "device", "output"):
        table.add_column(column, overflow="fold")
    for r in records:
        status = "would render" if r.status == "not started" else r.status
        table.add_row(r.source, status, r.character, "" if r.frames is None else str(r.frames),
                      "" if r.audio_seconds is None else f"{r.audio_seconds:.2f}", r.device or "",
                      r.output or (r.error or ""))
    return table


def _summary(records: list[JobRecord]) -> Table:
    table = Table(title="lipsync: batch summary")
    for column in ("job", "status", "frames", "seconds", "fps", "device", "output or error"):
        table.add_column(column, overflow="fold")
    colour = {"ok": "green", "skipped": "cyan", "failed": "red", "interrupted": "yellow", "refused": "red",
              "not started": "yellow"}
    for r in records:
        table.add_row(r.source, f"[{colour[r.status]}]{r.status}[/]", "" if r.frames is None else str(r.frames),
                      "" if r.wall_seconds is None else f"{r.wall_seconds:.1f}",
                      "" if r.fps is None else f"{r.fps:.1f}", r.device or "",
                      r.output if r.status in ("ok", "skipped") else (r.error or r.output or ""))
    return table


def run_batch(entries: list[Entry], settings: BatchSettings, config: RuntimeConfig, report: Path | None,
              dry_run: bool, quiet: bool, cluster: ClusterSettings | None = None, job_file: Path | None = None) -> int:
    """Plan, then render, a list of jobs; return the exit status (raise Interrupted on Ctrl-C / SIGTERM)."""
    if report is not None:
        check_report_target(report)
    if settings.output_dir is not None:
        problem = folder_problem(settings.output_dir)
        if problem is not None:
            raise InputError(f"{settings.output_dir}: the output folder cannot be used or made: {problem}")
    if not quiet and len(entries) >= LONG_LIST:  # checking them takes a while: say what is going on
        err_console.print(f"checking {len(entries)} jobs before rendering...", soft_wrap=True, markup=False)
    return _run(entries, settings, config, Reporting(report, job_file, now()), dry_run, quiet, cluster)


def cluster_settings(cluster: str | None, address: str | None, cpu_workers: int | None, retries: int,
                     shared_fs: bool) -> ClusterSettings | None:
    if cluster is None:
        if address or cpu_workers or shared_fs:
            raise InputError("the cluster options need --cluster ray")
        return None
    if cluster != "ray":
        raise InputError(f"cluster {cluster!r} is unknown: the one supported is ray", option="cluster")
    import_ray()
    return ClusterSettings(address, cpu_workers, retries, shared_fs)


class Reporting:
    """The report of a run: written only where it destroys nothing the batch reads or writes."""

    def __init__(self, path: Path | None, job_file: Path | None, started: str) -> None:
        self.path, self.started = path, started
        self.job_file = {job_file: "the job file"} if job_file is not None else {}

    def check(self, batch: Batch) -> None:
        clash = report_clash(self.path, {**self.job_file, **batch.files()}) if self.path is not None else None
        if clash is not None:
            raise clash

    def write(self, batch: Batch, outcome: str, code: int) -> int:
        if self.path is not None:
            write_report(self.path, batch.records, batch.runtime.registry.stats(), outcome, code, self.started)
        return code

    def interrupted(self, batch: Batch) -> None:
        if self.path is None or report_clash(self.path, {**self.job_file, **batch.files()}) is None:
            self.write(batch, "interrupted", Interrupted.exit_code)


def _run(entries: list[Entry], settings: BatchSettings, config: RuntimeConfig, reporting: Reporting,
         dry_run: bool, quiet: bool, cluster: ClusterSettings | None) -> int:
    if cluster is not None:
        entries = [replace(e, job=for_cluster(e.job)) if e.job is not None else e for e in entries]
    notify = None if quiet else print_note
    with Runtime(config, notify=notify) as runtime:
        batch = Batch(entries, runtime, settings)
        try:
            reporting.check(batch)
            records = batch.plan()
        except (Interrupted, KeyboardInterrupt):
            reporting.interrupted(batch)
            raise
        reporting.check(batch)
        refused = any(r.status == "refused" for r in records)
        if refused:
            _error_lines(batch, records, "refused")
        if dry_run:
            console.print(_plan_table(records))
            return reporting.write(batch, "dry run", 2 if refused else 0)
        if refused and not settings.keep_going:
            err_console.print("lipsync: nothing rendered: fix the jobs above, or pass --keep-going to render "
                              "the good ones", soft_wrap=True)
            return reporting.write(batch, "refused", 2)
        todo = [r for r in records if r.status == "not started"]
        progress = BatchProgress(len(todo), sum(r.frames or 0 for r in todo), is_interactive(), not quiet)
        batch.on_update = progress.update
        try:
            if cluster is None:
                batch.run()
            else:
                ClusterBatch(batch, cluster, config, progress.update).run()
        except (Interrupted, KeyboardInterrupt):
            progress.close()
            reporting.interrupted(batch)
            raise
        finally:
            progress.close()
        if not quiet:
            console.print(_summary(records))
        _error_lines(batch, records, "failed")
        failed = any(r.status in ("failed", "refused") for r in records)
        if batch.stopped_by is not None and not quiet:
            err_console.print(f"lipsync: error: stopped after {batch.stopped_by} failed "
                              "(--keep-going renders the others)", soft_wrap=True)
        return reporting.write(batch, "failed" if failed else "ok", 1 if failed else 0)
