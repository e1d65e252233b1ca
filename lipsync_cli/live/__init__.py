"""Live sessions (design.md section 13): one continuous output video of a character, produced while its
audio is still arriving. Transports (the WebSocket and gRPC servers, `lipsync live`) only move bytes."""

from lipsync_cli.live.frames import Interruption, LatencyParts, LiveFrame, LiveOptions, LiveStats
from lipsync_cli.live.session import LiveSession

__all__ = ["Interruption", "LatencyParts", "LiveFrame", "LiveOptions", "LiveSession", "LiveStats"]
