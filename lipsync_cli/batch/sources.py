"""Where a batch's jobs come from: audio arguments (files, folders, globs) or a job file (CSV or JSONL)."""

from __future__ import annotations

import csv
import glob
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from lipsync_cli.encoding.ffmpeg import EncodeSettings
from lipsync_cli.errors import InputError
from lipsync_cli.models.devices import parse_device
from lipsync_cli.render.jobs import RenderJob, RenderOptions, as_blend, as_window_end

# What a folder is scanned for: audio formats (soundfile's and, through ffmpeg, the common containers); video
# files are left out, since a folder of renders would otherwise feed on itself.
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64", ".rf64",
                  ".m4a", ".aac", ".wma", ".weba"}
DEFAULT_NAME = "{stem}_{character}.mp4"
JOB_COLUMNS = ("audio", "character", "output", "device", "batch_size", "blend", "crf", "preset", "codec",
               "window_end")


@dataclass(frozen=True)
class Entry:
    """One job as listed, before planning: where it came from, and the job or why it cannot be one."""

    index: int  # 1-based, in listing order
    source: str  # e.g. "jobs.csv:4" or the audio file
    job: RenderJob | None
    error: str | None = None


def expand_audio(arguments: list[str], recursive: bool = False) -> list[Path]:
    """Files as given; folders as their audio files (sorted; with `recursive`, their subfolders' too); glob
    patterns as their matches (sorted). A name that is none of these is kept, so that planning refuses it
    with the usual one-line reason."""
    found: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found += sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        elif not path.exists() and glob.has_magic(argument):
            matches = sorted(Path(m) for m in glob.glob(argument, recursive=recursive) if Path(m).is_file())
            if not matches:
                raise InputError(f"{argument}: no file matches")
            found += matches
        else:
            found.append(path)
    return found


def drop_repeats(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(each path once, in first-listed order; the later listings of a path already listed)."""
    seen: set[str] = set()
    unique: list[Path] = []
    repeats: list[Path] = []
    for path in paths:
        key = os.path.normpath(os.path.abspath(path))
        (repeats if key in seen else unique).append(path)
        seen.add(key)
    return unique, repeats


def output_name(pattern: str, audio: Path, character: str, index: int) -> str:
    """The output file name for `pattern`, with the fields {stem}, {character} and {index}."""
    try:
        name = pattern.format(stem=audio.stem, character=character, index=index)
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(f"name pattern {pattern!r}: unknown or malformed field ({exc}); use {{stem}}, "
                         f"{{character}} and {{index}}", option="name") from None
    if not name or "/" in name or name in (".", ".."):
        raise InputError(f"name pattern {pattern!r} gives {name!r}, not a file name", option="name")
    return name


def _option(options: RenderOptions, column: str, value: str) -> RenderOptions:
    if column == "device":
        return replace(options, device=parse_device(value))
    if column == "batch_size":
        return replace(options, batch_size=int(value))
    if column == "blend":
        return replace(options, blend=as_blend(value))
    if column == "window_end":
        return replace(options, window_end=as_window_end(value))
    encode = options.encode
    if column == "crf":
        return replace(options, encode=replace(encode, crf=int(value)))
    if column == "preset":
        return replace(options, encode=replace(encode, preset=value))
    if column == "codec":
        return replace(options, encode=EncodeSettings(value, encode.preset, encode.crf, encode.audio_bitrate,
                                                      encode.threads))
    raise AssertionError(column)


def _rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """(columns, [(line number, row)]) of a CSV file with a header, or a JSONL file of objects."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        rows, columns = [], []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{number}: not a JSON object")
            columns += [k for k in row if k not in columns]
            rows.append((number, {k: "" if v is None else str(v) for k, v in row.items()}))
        return columns, rows
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in reader.fieldnames or []]
    rows = []
    for row in reader:
        values = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if any(values.values()):
            rows.append((reader.line_num, values))
    return columns, rows


def read_job_file(path: Path, defaults: RenderOptions) -> list[Entry]:
    """The jobs of a CSV (with a header row) or JSONL file. Unknown columns refuse the whole file; a bad value
    refuses its job. Relative paths are relative to the job file's folder."""
    columns, rows = _rows(path)
    unknown = [c for c in columns if c not in JOB_COLUMNS]
    if unknown:
        raise InputError(f"{path}: unknown column(s) {', '.join(unknown)}; the columns are {', '.join(JOB_COLUMNS)}")
    for required in ("audio", "character"):
        if required not in columns:
            raise InputError(f"{path}: the column {required!r} is missing")
    if not rows:
        raise InputError(f"{path}: lists no job")
    base = path.parent
    entries = []
    for index, (number, row) in enumerate(rows, 1):
        source = f"{path.name}:{number}"
        try:
            if not row.get("audio") or not row.get("character"):
                raise InputError("audio and character must both be given")
            audio = base / row["audio"]
            character = row["character"]
            if (base / character).is_dir():
                character = str(base / character)
            options = defaults
            for column in JOB_COLUMNS[3:]:
                if row.get(column):
                    options = _option(options, column, row[column])
            output = base / row["output"] if row.get("output") else None
            job = RenderJob(audio, character, output, options)
            entries.append(Entry(index, source, job))
        except (InputError, ValueError) as exc:
            entries.append(Entry(index, source, None, f"{source}: {exc}"))
    return entries
