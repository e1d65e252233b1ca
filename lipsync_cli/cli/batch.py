"""`lipsync batch JOBS`: render a CSV or JSONL job list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lipsync_cli.batch.runner import DEFAULT_JOBS, BatchSettings
from lipsync_cli.batch.sources import DEFAULT_NAME, JOB_COLUMNS, read_job_file
from lipsync_cli.cli.batching import (
    DEVICE_HELP,
    DEVICE_METAVAR,
    BatchSize,
    BlendOption,
    Cluster,
    ClusterAddress,
    Codec,
    CpuWorkers,
    Crf,
    Devices,
    DryRun,
    Eviction,
    Jobs,
    KeepGoing,
    MaxMemory,
    MaxModels,
    NamePattern,
    NoCache,
    OutputDir,
    Overwrite,
    PrecisionOption,
    Preset,
    Report,
    Retries,
    SharedFs,
    SkipExisting,
    cluster_settings,
    run_batch,
    runtime_config,
)
from lipsync_cli.cli.common import Debug, run_reporting
from lipsync_cli.encoding.ffmpeg import EncodeSettings
from lipsync_cli.models.devices import parse_device
from lipsync_cli.models.precision import as_precision_request
from lipsync_cli.render import RenderOptions
from lipsync_cli.render.jobs import as_blend


def batch_command(
    jobs_file: Annotated[Path, typer.Argument(metavar="JOBS", help="A CSV file with a header row, or a JSONL file "
                                              f"(.jsonl): columns {', '.join(JOB_COLUMNS)}; relative paths are "
                                              "relative to the file.", show_default=False)],
    output_dir: OutputDir = None,
    name: NamePattern = DEFAULT_NAME,
    device: Annotated[str, typer.Option("--device", "-d", metavar=DEVICE_METAVAR,
                                        help="Default device of a job: " + DEVICE_HELP)] = "auto",
    precision: PrecisionOption = "auto",
    batch_size: BatchSize = None,
    blend: BlendOption = "match",
    crf: Crf = 18,
    preset: Preset = None,
    codec: Codec = "libx264",
    overwrite: Overwrite = False,
    skip_existing: SkipExisting = False,
    keep_going: KeepGoing = False,
    jobs: Jobs = DEFAULT_JOBS,
    devices: Devices = "auto",
    max_models: MaxModels = None,
    max_memory: MaxMemory = None,
    eviction: Eviction = "lfu",
    report: Report = None,
    dry_run: DryRun = False,
    cluster: Cluster = None,
    cluster_address: ClusterAddress = None,
    cpu_workers: CpuWorkers = None,
    retries: Retries = 1,
    shared_fs: SharedFs = False,
    no_cache: NoCache = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors and the summary.")] = False,
    debug: Debug = False,
) -> None:
    """Render every job of a job list, planned in full before any work."""

    def work() -> int:
        defaults = RenderOptions(parse_device(device), batch_size, as_blend(blend),
                                 EncodeSettings(codec=codec, preset=preset, crf=crf), overwrite,
                                 precision=as_precision_request(precision))
        entries = read_job_file(jobs_file, defaults)
        settings = BatchSettings(output_dir, name, keep_going, skip_existing, jobs)
        config = runtime_config(devices, max_models, max_memory, eviction, cache=not no_cache)
        on_cluster = cluster_settings(cluster, cluster_address, cpu_workers, retries, shared_fs)
        return run_batch(entries, settings, config, report, dry_run, quiet, on_cluster, job_file=jobs_file)

    raise typer.Exit(run_reporting(work, debug))
