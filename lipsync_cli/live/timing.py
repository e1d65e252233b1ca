"""How far past a frame its audio must have arrived (design.md section 13, look-ahead)."""

from __future__ import annotations

from lipsync_cli.audio.resample import TARGET_RATE
from lipsync_cli.characters.manifest import Character
from lipsync_cli.features.mel import HOP, N_FFT
from lipsync_cli.features.windows import WINDOW_FRAMES

SYNCTALK_FRAMES_AFTER = 6  # a SyncTalk_2D frame gathers encoder outputs up to its own + 6


def lookahead_seconds(character: Character) -> float:
    """From the start of a frame to the last audio sample its UNet input depends on. The window's last mel
    frame is centred (WINDOW_FRAMES - 1) hops after the window start and reaches half an FFT further; the
    window of frame i starts within a hop of the frame's own start."""
    reach = (WINDOW_FRAMES - 1) * HOP + N_FFT // 2
    frames_after = SYNCTALK_FRAMES_AFTER if character.layout == "synctalk" else 0
    return reach / TARGET_RATE + frames_after / float(character.fps)
