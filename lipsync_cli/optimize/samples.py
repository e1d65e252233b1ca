"""The frames an optimised variant is made and checked on: the character's own template crops, each paired
with the audio features of a frame of speech, as the float models see them when it speaks.

In a live session any template frame can meet any audio, so the pairs spread over the whole template and
over every frame of the speech. The template frames are split in two: a fifth (every fifth frame) is held
out, and so is every other frame of speech; calibration never sees a held-out crop or window, the check
sees only those.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipsync_cli.audio.loading import probe_audio
from lipsync_cli.characters.manifest import Character
from lipsync_cli.errors import InputError
from lipsync_cli.frames.crops import fill_visual_input
from lipsync_cli.frames.template import TemplateFrame
from lipsync_cli.models.devices import CPU
from lipsync_cli.render.pipeline import audio_features
from lipsync_cli.render.renderer import FrameRenderer
from lipsync_cli.resources import bundled_dir
from lipsync_cli.runtime import Runtime

HELD_OUT_EVERY = 5  # template frames k with k % 5 == 4 are held out


@dataclass(frozen=True)
class Samples:
    """Model inputs of n frames: visual [n, 6, s, s] float32, audio features [n, ...] in the UNet's layout, and
    the template frames (for compositing)."""

    visual: np.ndarray
    features: np.ndarray
    frames: tuple[TemplateFrame, ...]

    def __len__(self) -> int:
        return len(self.visual)

    def batches(self, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(self.visual[a : a + size], self.features[a : a + size]) for a in range(0, len(self), size)]


def speech_files(given: tuple[Path, ...]) -> tuple[Path, ...]:
    """The calibration speech: the files given, else the bundled samples."""
    if given:
        for path in given:
            probe_audio(path)  # a bad file is refused before any work
        return given
    folder = bundled_dir("samples")
    found = tuple(sorted(p for p in folder.iterdir() if p.suffix in (".wav", ".flac"))) if folder else ()
    if not found:
        raise InputError("no calibration speech: the bundled samples are not installed; give audio files",
                         option="calibration")
    return found


def _spread(items: list[int], count: int) -> list[int]:
    if len(items) <= count:
        return items
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)] if count > 1 else items[:1]


def float_renderer(runtime: Runtime, character: Character) -> FrameRenderer:
    """The character's float models on the CPU, and its template: keep it open while the samples are used (their
    template frames live in the template store)."""
    return FrameRenderer(runtime, character, CPU, 16, "feather")


def collect(renderer: FrameRenderer, speech: tuple[Path, ...], calibration: int, held_out: int
            ) -> tuple[Samples, Samples]:
    """(calibration samples, held-out samples) of the renderer's character."""
    character = renderer.character
    windows: list[np.ndarray] = []
    for path in speech:
        for batch in audio_features(character, probe_audio(path), renderer.encode, 16):
            windows.extend(np.array(batch.features, np.float32, copy=True))
    if len(windows) < 4:
        raise InputError("the calibration speech is too short: give at least a second of speech",
                         option="calibration")
    n = character.video.frames
    cal_audio, out_audio = _spread(list(range(0, len(windows), 2)), calibration), \
        _spread(list(range(1, len(windows), 2)), held_out)
    kept = [k for k in range(n) if k % HELD_OUT_EVERY != HELD_OUT_EVERY - 1] or list(range(n))
    hidden = [k for k in range(n) if k % HELD_OUT_EVERY == HELD_OUT_EVERY - 1] or list(range(n))

    def samples(audio: list[int], templates: list[int]) -> Samples:
        inner = character.crop.inner
        visual = np.empty((len(audio), 6, inner, inner), np.float32)
        frames = []
        for slot in range(len(audio)):
            k = templates[(slot * 7919) % len(templates)]  # a prime stride: the pairs mix speech and face
            frame = renderer.template.frame(k)
            fill_visual_input(visual[slot], frame.crop, character.input)
            frames.append(frame)
        return Samples(visual, np.stack([windows[a] for a in audio]).astype(np.float32), tuple(frames))

    return samples(cal_audio, kept), samples(out_audio, hidden)
