"""Where a batch's jobs come from: audio arguments (files, folders, globs) or a job file (CSV or JSONL)."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import re
import string
from dataclasses import dataclass, replace
from pathlib import Path

from lipsync_cli.encoding.ffmpeg import EncodeSettings
from lipsync_cli.errors import InputError
from lipsync_cli.models.devices import parse_device
from lipsync_cli.models.precision import as_precision_request
from lipsync_cli.render.jobs import RenderJob, RenderOptions, as_blend, as_window_end

# What a folder is scanned for: audio formats (soundfile's and, through ffmpeg, the common containers); video
# files are left out, since a folder of renders would otherwise feed on itself.
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64", ".rf64",
                  ".m4a", ".aac", ".wma", ".weba"}
DEFAULT_NAME = "{stem}_{character}.mp4"
JOB_COLUMNS = ("audio", "character", "output", "device", "batch_size", "blend", "crf", "preset", "codec",
               "window_end", "precision")
NAME_FIELDS = ("stem", "character", "index")
MAX_NAME_BYTES = 255  # a file name's limit on Linux, macOS and Windows file systems
MAX_PATH_BYTES = 4096  # a path's limit on Linux (PATH_MAX)
PATH_COLUMNS = ("audio", "character", "output")
Row = tuple[int, dict[str, str], str | None]  # line number, values, why the row cannot be a job


@dataclass(frozen=True)
class Entry:
    """One job as listed, before planning: where it came from, and the job or why it cannot be one."""

    index: int  # 1-based, in listing order
    source: str  # e.g. "jobs.csv:4" or the audio file
    job: RenderJob | None
    error: str | None = None
    audio_name: str | None = None  # how the report names the audio, when not by its path ("-")


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


def _shown(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _check_pattern(pattern: str) -> None:
    """Only the documented fields, with a plain format spec: no attribute or index access, no nesting."""
    try:
        fields = [(f, c, spec) for _, f, spec, c in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        raise InputError(f"name pattern {_shown(pattern)}: malformed ({exc})", option="name") from None
    for field, conversion, spec in fields:
        if field not in NAME_FIELDS or conversion is not None or "{" in (spec or ""):
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise InputError(f"name pattern {_shown(pattern)}: unknown or malformed field {shown}; use {{stem}}, "
                             "{character} and {index}, e.g. {index:03d}", option="name")
        if re.search(r"\d{4,}", spec or ""):
            raise InputError(f"name pattern {_shown(pattern)}: the width in {{{field}:{spec}}} is too large",
                             option="name")


def output_name(pattern: str, audio: Path, character: str, index: int) -> str:
    """The output file name for `pattern`, with the fields {stem}, {character} and {index}."""
    _check_pattern(pattern)
    try:
        name = pattern.format(stem=audio.stem, character=character, index=index)
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(f"name pattern {_shown(pattern)}: unknown or malformed field ({exc}); use {{stem}}, "
                         f"{{character}} and {{index}}", option="name") from None
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise InputError(f"name pattern {_shown(pattern)} gives {_shown(name)}, not a file name", option="name")
    if len(os.fsencode(name)) > MAX_NAME_BYTES:
        raise InputError(f"name pattern {_shown(pattern)} gives a name of {len(os.fsencode(name))} bytes; a file "
                         f"name has at most {MAX_NAME_BYTES}", option="name")
    return name


def _whole(column: str, value: str) -> int:
    if not re.fullmatch(r"\s*[+-]?\d{1,9}\s*", value, re.ASCII):
        raise InputError(f"{column} must be a whole number, not {value!r}")
    return int(value)


def _option(options: RenderOptions, column: str, value: str) -> RenderOptions:
    if column == "device":
        return replace(options, device=parse_device(value))
    if column == "batch_size":
        return replace(options, batch_size=_whole(column, value))
    if column == "blend":
        return replace(options, blend=as_blend(value))
    if column == "window_end":
        return replace(options, window_end=as_window_end(value))
    if column == "precision":
        return replace(options, precision=as_precision_request(value))
    encode = options.encode
    if column == "crf":
        return replace(options, encode=replace(encode, crf=_whole(column, value)))
    if column == "preset":
        return replace(options, encode=replace(encode, preset=value))
    if column == "codec":
        return replace(options, encode=EncodeSettings(value, encode.preset, encode.crf, encode.audio_bitrate,
                                                      encode.threads))
    raise AssertionError(column)


def _json_value(value: object) -> str:
    """A JSON value as the text a CSV cell would hold."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(f"a JSON {type(value).__name__}, not a string or a number")


def _twice(names: list[str]) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    twice = _twice([k for k, _ in pairs])
    if twice is not None:
        raise ValueError(f"the key {_shown(twice)} appears twice")
    return dict(pairs)


def _jsonl_rows(path: Path, text: str) -> tuple[list[str], list[Row]]:
    rows: list[Row] = []
    columns: list[str] = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        except (ValueError, RecursionError) as exc:  # numbers too long to convert, nesting too deep, keys twice
            raise InputError(f"{path}:{number}: not a usable JSON object ({exc})") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{number}: not a JSON object")
        columns += [k for k in row if k not in columns]
        values, problem = {}, None
        for key, value in row.items():
            try:
                values[key] = _json_value(value)
            except ValueError as exc:
                problem = problem or f"{key}: {exc}"
        rows.append((number, values, problem))
    return columns, rows


def _csv_rows(path: Path, text: str) -> tuple[list[str], list[Row]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[Row] = []
    columns: list[str] | None = None
    try:
        while True:
            first = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            if columns is None:
                columns = [c.strip() for c in cells]
                twice = _twice(columns)
                if twice is not None:
                    raise InputError(f"{path}: the column {_shown(twice)} appears twice")
                continue
            if not any(c.strip() for c in cells):
                continue
            extra = len(cells) > len(columns)
            rows.append((first, dict(zip(columns, (c.strip() for c in cells), strict=False)),
                         f"{len(cells)} fields, and the header names {len(columns)}" if extra else None))
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None
    return columns or [], rows


def _rows(path: Path) -> tuple[list[str], list[Row]]:
    """The columns and rows of a CSV file with a header, or of a JSONL file of objects."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return _jsonl_rows(path, text)
    return _csv_rows(path, text)


def _check_values(values: dict[str, str], problem: str | None) -> None:
    if problem is not None:
        raise InputError(problem)
    for column, value in values.items():
        if "\0" in value:
            raise InputError(f"{column}: contains a NUL character")
        try:
            size = len(os.fsencode(value))
        except UnicodeEncodeError:
            raise InputError(f"{column}: contains a character that no file name can hold") from None
        if size > MAX_PATH_BYTES:
            raise InputError(f"{column}: {size} bytes long, longer than any path or value")
        if column in PATH_COLUMNS and any(len(os.fsencode(p)) > MAX_NAME_BYTES for p in Path(value).parts):
            raise InputError(f"{column}: a file or folder name in it is longer than {MAX_NAME_BYTES} bytes")


def read_job_file(path: Path, defaults: RenderOptions) -> list[Entry]:
    """The jobs of a CSV (with a header row) or JSONL file. Unknown columns refuse the whole file; a bad value
    refuses its job. Relative paths are relative to the job file's folder."""
    columns, rows = _rows(path)
    unknown = [c for c in columns if c not in JOB_COLUMNS]
    if unknown:
        shown = ", ".join(c if len(c) <= 40 else c[:40] + "..." for c in unknown[:5])
        raise InputError(f"{path}: unknown column(s) {shown}; the columns are {', '.join(JOB_COLUMNS)}")
    for required in ("audio", "character"):
        if required not in columns:
            raise InputError(f"{path}: the column {required!r} is missing")
    if not rows:
        raise InputError(f"{path}: lists no job")
    base = path.parent
    entries = []
    for index, (number, row, problem) in enumerate(rows, 1):
        source = f"{path.name}:{number}"
        try:
            _check_values(row, problem)
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
