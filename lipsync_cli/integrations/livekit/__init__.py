"""lipsync in LiveKit Agents (extra `lipsync-cli[livekit]`): a `VideoGenerator` for `AvatarRunner`, and an
avatar session that gives an `AgentSession` a lipsync face in two lines (docs/voice-agents.md)."""

from lipsync_cli.integrations.livekit.avatar import LipsyncAvatarSession
from lipsync_cli.integrations.livekit.generator import LipsyncVideoGenerator

__all__ = ["LipsyncAvatarSession", "LipsyncVideoGenerator"]
