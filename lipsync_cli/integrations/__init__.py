"""Adapters that put a live session into voice-agent frameworks (design.md section 17), each behind its own
extra. They import `live/`, the runtime and lower layers only, never `serve/`, `cli/` or each other."""
