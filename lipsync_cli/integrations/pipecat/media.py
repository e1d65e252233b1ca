"""The conversions between Pipecat's frames and a live session's: 16-bit PCM (mono or interleaved) to the mono
float samples a session takes, a frame's float audio back to 16-bit PCM, I420 pictures to RGB, and the output
transport's video settings for a character."""

from __future__ import annotations

import cv2
import numpy as np

from lipsync_cli.audio.pcm import float_to_s16_bytes, s16_to_float
from lipsync_cli.characters.manifest import Character, load_character
from lipsync_cli.encoding.yuv import even
from lipsync_cli.runtime import Runtime


def pcm_to_mono(audio: bytes, channels: int) -> np.ndarray:
    """16-bit little-endian PCM, `channels` interleaved, as mono float32 in [-1, 1] (channels averaged)."""
    return s16_to_float(audio, channels)


def mono_to_pcm(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] as 16-bit little-endian PCM (int16 samples pushed come back unchanged)."""
    return float_to_s16_bytes(samples)


def i420_to_rgb(image: np.ndarray) -> np.ndarray:
    """A live frame's I420 picture [H * 3 / 2, W] as RGB [H, W, 3] (BT.601 limited range, as it was made)."""
    return cv2.cvtColor(image, cv2.COLOR_YUV2RGB_I420)


def frame_size(character: Character) -> tuple[int, int]:
    """Width and height of the character's live frames (an odd side is padded by one pixel, as H.264 needs)."""
    return even(character.video.width), even(character.video.height)


def video_out_params(character: str | Character, runtime: Runtime | None = None) -> dict:
    """The output transport's video settings for the character's frames, for `TransportParams(**...)`:
    the images are shown with the audio they came with (`video_out_is_live=False`), at the character's size
    and frame rate."""
    if isinstance(character, str):
        character = runtime.character(character) if runtime is not None else load_character(character)
    width, height = frame_size(character)
    return {"video_out_enabled": True, "video_out_is_live": False, "video_out_width": width,
            "video_out_height": height, "video_out_framerate": max(1, round(float(character.fps)))}
