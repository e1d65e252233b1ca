"""lipsync: render audio-driven lip-sync video from a speech recording and a character."""

__version__ = "0.1.0"
