"""lipsync in a Pipecat pipeline (extra `lipsync-cli[pipecat]`): `LipsyncVideoService` between the voice and
`transport.output()`, `video_out_params` for the output transport, and the `lipsync agent` voice agent."""

from __future__ import annotations

try:
    import pipecat  # noqa: F401
except ImportError as exc:  # one line that says what to install
    raise ImportError("lipsync's Pipecat integration needs Pipecat: pip install 'lipsync-cli[pipecat]'") from exc

from lipsync_cli.integrations.pipecat.media import video_out_params
from lipsync_cli.integrations.pipecat.service import LipsyncFrameLatencyData, LipsyncVideoService

__all__ = ["LipsyncFrameLatencyData", "LipsyncVideoService", "video_out_params"]
