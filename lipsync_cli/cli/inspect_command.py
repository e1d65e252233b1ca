"""`lipsync inspect OUT --character NAME`: how visible the box is in a render, against its template."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import cv2
import imageio_ffmpeg
import numpy as np
import typer

from lipsync_cli.cli.common import Debug, console, run_reporting
from lipsync_cli.compositing.seam import seam_scores
from lipsync_cli.encoding.yuv import pad_even
from lipsync_cli.errors import InputError
from lipsync_cli.runtime import Runtime, RuntimeConfig


def _template_frames(path: Path, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    for _ in range(count):
        ok, image = capture.read()
        if not ok:
            break
        frames.append(pad_even(image))
    capture.release()
    return frames


def _open_video(video: Path, reader: Iterator, declared: int) -> tuple[int, int]:
    """The frame size of a video that ffmpeg opens; an InputError naming the file for anything else
    (`declared`: the frames its container states, so a video cut short is told as such)."""
    try:
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as exc:
        text = str(exc)
        why = ("has no video stream" if "does not contain any stream" in text
               else "cannot be decoded (truncated or damaged)" if declared
               else "is not a video file ffmpeg can read")
        raise InputError(f"{video}: {why}") from None
    w, h = meta["size"]
    return w, h


def _declared_frames(path: Path) -> int:
    """The frame count an MP4 or MOV states (0 for other containers, where it is only an estimate, and for
    what OpenCV cannot open); InputError for an empty file."""
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    capture = cv2.VideoCapture(str(path))
    try:  # a file OpenCV cannot open is told of by _open_video, which says why
        if not capture.isOpened() or path.suffix.lower() not in (".mp4", ".mov"):
            return 0
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()


def inspect_command(
    video: Annotated[Path, typer.Argument(metavar="OUT", help="A render of this character.", show_default=False)],
    character: Annotated[str, typer.Option("--character", "-c", metavar="NAME|PATH", help="The character it was "
                                           "rendered with.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of text.")] = False,
    debug: Debug = False,
) -> None:
    """Measure the seam of a render: the ring difference from the template in the outer 20% of the box, where
    the mouth never reaches, and the step across the patch's edge beyond the template's own, in levels."""

    def work() -> int:
        if not video.is_file():
            raise InputError(f"{video}: no such file")
        with Runtime(RuntimeConfig(devices="cpu", cache=False)) as runtime:
            char = runtime.character(character)
        declared = _declared_frames(video)
        reader = imageio_ffmpeg.read_frames(str(video), pix_fmt="bgr24")
        w, h = _open_video(video, reader, declared)
        templates = _template_frames(char.template, char.video.frames)  # a render of a long template: costly
        rings, steps = [], []
        for i, raw in enumerate(reader):
            frame = np.frombuffer(raw, np.uint8).reshape(h, w, 3)
            k = char.template_index(i)
            if frame.shape != templates[k].shape:
                raise InputError(f"{video}: {w}x{h} frames, not those of {char.name} "
                                 f"({templates[k].shape[1]}x{templates[k].shape[0]})")
            ring, step = seam_scores(frame, templates[k], char.boxes[k], char.crop)
            rings.append(ring)
            steps.append(step)
        if not rings:
            raise InputError(f"{video}: has no video frame")
        if len(rings) < declared:
            raise InputError(f"{video}: truncated: {len(rings)} of its {declared} frames can be decoded")
        result = {"frames": len(rings), "ring_difference": float(np.mean(rings)),
                  "ring_difference_max": float(np.max(rings)), "boundary_step": float(np.mean(steps))}
        if as_json:
            typer.echo(json.dumps(result, indent=2))
        else:
            console.print(f"{video.name}: {len(rings)} frames against {char.name}'s template: ring difference "
                          f"{result['ring_difference']:.2f} levels (max {result['ring_difference_max']:.2f}), "
                          f"boundary step {result['boundary_step']:+.2f} levels beyond the template's own",
                          soft_wrap=True)
        return 0

    raise typer.Exit(run_reporting(work, debug))
