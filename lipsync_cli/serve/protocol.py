"""WebSocket protocol v1 (design.md section 14, README "Live protocol"): the client's messages checked, the
server's built, and the fixed 32-byte header of every binary frame message.

Header, little-endian: u8 kind (1 = frame), u8 flags (bit 0 keyframe, bit 1 speech, bit 2 JPEG), u16 0,
u32 generation, u64 frame index, u64 pts in microseconds, u32 video bytes, u32 audio bytes; then the video
(an H.264 access unit, Annex B, or a JPEG) and the audio (s16le mono at `audio_rate`).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Literal

from lipsync_cli.live.frames import MAX_RATE, MIN_RATE

VERSION = 1
HEADER = struct.Struct("<BBHIQQII")
KIND_FRAME = 1
KEYFRAME, SPEECH, JPEG = 1, 2, 4
MAX_TEXT = 4096  # bytes of one text message
MAX_DEPTH = 8  # objects and arrays within each other in one text message (the start message needs 2)
MAX_AUDIO_SECONDS = 1.0  # of one binary message
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# close codes
NORMAL, GOING_AWAY, BAD_DATA, POLICY, TOO_BIG, SERVER_ERROR, TRY_AGAIN = 1000, 1001, 1007, 1008, 1009, 1011, 1013
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[][{}]")

AudioFormat = Literal["s16le", "f32le"]
Codec = Literal["h264", "jpeg"]


class ProtocolError(Exception):
    """A message that breaks the protocol: the session ends with `code` and this message."""

    def __init__(self, message: str, code: int = POLICY, reason: str = "protocol") -> None:
        super().__init__(message)
        self.code, self.reason = code, reason


@dataclass(frozen=True)
class Start:
    character: str
    audio_format: AudioFormat
    rate: int
    codec: Codec
    latency_ms: float | None
    return_rate: int = 16_000  # of the frames' audio (the ready message's audio_rate)

    @property
    def sample_bytes(self) -> int:
        return 2 if self.audio_format == "s16le" else 4

    @property
    def max_binary(self) -> int:
        return int(self.rate * MAX_AUDIO_SECONDS) * self.sample_bytes


def parse_text(text: str) -> dict:
    """A client's text message, checked before it is parsed: valid UTF-8 (the WebSocket layer hands invalid
    bytes over as surrogates, serve/wire.py), its size, how deep it nests; then a JSON object with a type."""
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise ProtocolError("a text message must be valid UTF-8", BAD_DATA, "bad_text") from None
    if size > MAX_TEXT:
        raise ProtocolError(f"a text message is limited to {MAX_TEXT} bytes", TOO_BIG, "too_big")
    if nesting(text) > MAX_DEPTH:
        raise ProtocolError(f"a text message may nest objects and arrays at most {MAX_DEPTH} deep", reason="bad_json")
    try:
        message = json.loads(text)
    except ValueError:
        raise ProtocolError("a text message must be a JSON object", reason="bad_json") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError('a text message must be a JSON object with a "type"', reason="bad_json")
    return message


def nesting(text: str) -> int:
    """How deep the brackets of a JSON text go, strings left out (json.loads recurses once per level)."""
    depth = most = 0
    for bracket in _BRACKETS.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        most = max(most, depth)
    return most


def parse_start(message: dict) -> Start:
    """The `start` message, every field checked; a character is a name, never a path."""
    if message.get("type") != "start":
        raise ProtocolError(f'the first message must be {{"type": "start", ...}}, not {message.get("type")!r}',
                            reason="not_started")
    unknown = sorted(set(message) - {"type", "character", "audio", "video", "latency_ms", "version"})
    if unknown:
        raise ProtocolError(f"unknown field(s) in start: {', '.join(unknown)}", reason="bad_start")
    if message.get("version", VERSION) != VERSION:
        raise ProtocolError(f"protocol version {message.get('version')!r} is not served (this server speaks {VERSION})",
                            reason="bad_start")
    character = message.get("character")
    if not isinstance(character, str) or not NAME.fullmatch(character) or ".." in character:
        raise ProtocolError(f"character must be a name (letters, digits, . _ -), not {character!r}",
                            reason="bad_character")
    audio = message.get("audio", {})
    video = message.get("video", {})
    if not isinstance(audio, dict) or not isinstance(video, dict):
        raise ProtocolError("audio and video must be objects", reason="bad_start")
    fmt = audio.get("format", "s16le")
    if fmt not in ("s16le", "f32le"):
        raise ProtocolError(f"audio format must be s16le or f32le, not {fmt!r}", reason="bad_format")
    unknown = sorted(set(audio) - {"format", "rate", "channels", "return_rate"})
    if unknown:
        raise ProtocolError(f"unknown field(s) in start's audio: {', '.join(unknown)}", reason="bad_start")
    rate, return_rate = audio.get("rate", 16000), audio.get("return_rate", 16000)
    for name, value in (("rate", rate), ("return_rate", return_rate)):
        if isinstance(value, bool) or not isinstance(value, int) or not MIN_RATE <= value <= MAX_RATE:
            raise ProtocolError(f"audio {name} must be a whole number of Hz from {MIN_RATE} to {MAX_RATE}, not "
                                f"{value!r}", reason="bad_format")
    if audio.get("channels", 1) != 1:
        raise ProtocolError(f"audio must be mono (channels 1), not {audio.get('channels')!r}", reason="bad_format")
    codec = video.get("codec", "h264")
    if codec not in ("h264", "jpeg"):
        raise ProtocolError(f"video codec must be h264 or jpeg, not {codec!r}", reason="bad_format")
    latency = message.get("latency_ms")
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, int | float)
                                or not 0 < latency <= 10_000):
        raise ProtocolError(f"latency_ms must be a number of milliseconds up to 10000, not {latency!r}",
                            reason="bad_start")
    return Start(character, fmt, rate, codec, float(latency) if latency is not None else None, return_rate)


def frame_message(flags: int, generation: int, index: int, pts_us: int, video: bytes, audio: bytes) -> bytes:
    return HEADER.pack(KIND_FRAME, flags, 0, generation, index, pts_us, len(video), len(audio)) + video + audio


@dataclass(frozen=True)
class FrameHeader:
    kind: int
    flags: int
    generation: int
    index: int
    pts_us: int
    video_bytes: int
    audio_bytes: int

    @property
    def keyframe(self) -> bool:
        return bool(self.flags & KEYFRAME)

    @property
    def speech(self) -> bool:
        return bool(self.flags & SPEECH)

    @property
    def jpeg(self) -> bool:
        return bool(self.flags & JPEG)


def parse_frame(message: bytes) -> tuple[FrameHeader, bytes, bytes]:
    """A binary frame message -> its header, video and audio (what a client does)."""
    kind, flags, _, generation, index, pts, v, a = HEADER.unpack_from(message)
    if kind != KIND_FRAME or len(message) != HEADER.size + v + a:
        raise ValueError(f"not a frame message of {HEADER.size} + {v} + {a} bytes")
    body = message[HEADER.size :]
    return FrameHeader(kind, flags, generation, index, pts, v, a), body[:v], body[v:]
